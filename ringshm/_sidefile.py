"""Side files: where a Queue item larger than one ring message lives.

The item's record (a plain, custom or framed record of _items.py) goes into
/dev/shm/ringshm-item.IDENTITY.PID.START.SEQ, made by the producer
(IDENTITY: the ring's 16 random bytes in hex, never its name, so a new ring
that takes the name never claims the file; PID and START: the producer's
pid and start time; SEQ counts its items); the ring carries one small
reference message naming it. The consumer copies the record out inside
view(), consumes the message, then removes the file.

The file's header holds ``end``: the ring counter just past the 'B' message,
written while the producer holds the put lock (head is then known) and
before the message is published. That makes every file's fate decidable
from the ring's counters, whoever died where (docs/DESIGN.md, "Items of
any size"). A file is garbage, and any process of the queue removes it
(``sweep``), when

* ``end`` is set and ``tail >= end``: its message was consumed (the
  consumer died before removing it), or it was never published and the
  ring has moved past where it would have been; or
* its creator is dead and ``end`` is unset (it died writing the file) or
  ``head < end`` (it died before publishing).

A file of a live creator is otherwise left alone: it is being written, or
its message waits in the ring.

The files of items still queued go with the ring itself, not with its name:
a process attached to the ring may still read them after the creator closed
(the name is gone, the mapping lives). So they go when the ring's last user
does: ``release`` when a Queue closes and nobody else maps the ring; the
creator's watcher when the creator dies, or when it closed while others
still mapped the ring (``custody``), once nobody holds the ring any more;
``orphans`` (a new Queue, ``ringshm gc``) for rings whose name is gone and
which no live process maps, when both the creator and its watcher were
killed.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
import struct
import time
from typing import TYPE_CHECKING, Any, Optional

from . import watcher
from ._backing import SHM_DIR, SHM_PREFIX, shm_path
from ._records import Frame, RecordReader, RecordSource, Taken, ViewSource
from ._ring import process_alive, process_start_time
from ._typing import Buffer
from .census import Mappers
from .errors import Full, RingCorrupted

if TYPE_CHECKING:
    from .ring import Ring

__all__ = ["put", "take", "consumed", "discard", "sweep", "hold", "release", "orphans",
           "sweep_orphans", "file_groups", "attribute", "remove_group", "SHM_DIR", "PREFIX",
           "Group"]

PREFIX = watcher.SIDE_PREFIX
MAGIC = watcher.SIDE_MAGIC          # 0.3: named by the ring's identity
LEGACY_MAGIC = b"RSITEM\x00\x01"   # 0.2: named by the ring's name
HEADER_SIZE = 64
# magic, end (0: not placed yet), record length; 0.3 adds the ring's file
# (st_dev, st_ino), to tell whether a live process still maps it.
_HEADER = struct.Struct("<8sQQ")
_HEADER_V2 = struct.Struct("<8sQQQQ")
_END_AT = 8
_U64 = struct.Struct("<Q")
# The ring message: magic, record length, pid, start time, seq.
REFERENCE = struct.Struct("<8sQQQQ")
REFERENCE_MAGIC = b"\x00RSREF\x00\x01"
TAG_REFERENCE = REFERENCE_MAGIC[0]
PID_LIMIT = 1 << 22   # the kernel's pid_max ceiling
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC

_sequence = itertools.count()


def _file_name(identity: str, pid: int, start: int, seq: int) -> str:
    """identity: the ring's, in hex (Ring.identity)."""
    return f"{PREFIX}{identity}.{pid}.{start}.{seq}"


def _legacy_name(ring_name: Optional[str], pid: int, start: int, seq: int) -> str:
    """Where 0.2 put it: under the ring's name."""
    return f"{PREFIX}{ring_name}.{pid}.{start}.{seq}"


def _is_identity(text: str) -> bool:
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


def _no_space(path: str, size: int, exc: OSError) -> OSError:
    try:
        free = os.statvfs(SHM_DIR)
        free_bytes = free.f_bavail * free.f_frsize
    except OSError:
        free_bytes = -1
    return OSError(errno.ENOSPC, f"no room in {SHM_DIR} for a queue item of {size} bytes "
                   f"({free_bytes} bytes free): {exc.strerror}", path)


def _pwrite_all(fd: int, piece: Buffer, offset: int) -> None:
    view = memoryview(piece).cast("B")
    while view.nbytes:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def put(ring: Ring, record: Frame, wait: Optional[float]) -> None:
    """Write `record` (a _records.Frame) into a new side file and put the
    message naming it, waiting at most `wait` seconds for room (None:
    forever).

    Raises:
        ringshm.Full, ringshm.ShutDown: from reserve(); the file is removed.
        OSError: ENOSPC when /dev/shm cannot hold the item.
    """
    if wait is not None:
        # Room for the reference first: a put retried with a short timeout
        # while the ring is full writes no file per try (issue item 3).
        started = time.monotonic()
        if not ring._wait_room(REFERENCE.size, wait):
            raise Full(f"no room for a queue item's reference within {wait} s")
        wait = max(0.0, wait - (time.monotonic() - started))
    sweep(ring)
    pid = os.getpid()
    start = process_start_time(pid)
    seq = next(_sequence)
    path = os.path.join(SHM_DIR, _file_name(ring.identity, pid, start, seq))
    dev, ino = ring._inode
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, 0o600)
    published = False
    try:
        os.fchmod(fd, 0o600)   # the umask cannot widen it, but be exact
        try:
            # The header first: a file that is not empty proves it is ours
            # (`ringshm gc` removes nothing else).
            os.pwrite(fd, _HEADER_V2.pack(MAGIC, 0, record.size, dev, ino), 0)
            # Allocated now: a later write cannot die of SIGBUS or ENOSPC
            # halfway, and the gaps between pieces read as zeros.
            os.posix_fallocate(fd, 0, HEADER_SIZE + record.size)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EFBIG):
                raise _no_space(path, record.size, exc) from None
            raise
        for offset, piece in record.pieces:
            _pwrite_all(fd, piece, HEADER_SIZE + offset)
        reference = REFERENCE.pack(REFERENCE_MAGIC, record.size, pid, start, seq)
        with ring.reserve(REFERENCE.size, timeout=wait) as space:
            # The put lock is ours: where the message ends is settled.
            os.pwrite(fd, _U64.pack(ring._reserved_end()), _END_AT)
            space[:] = reference
        published = True
    finally:
        os.close(fd)
        if not published:
            _unlink(path)


class FileSource:
    """A record inside a side file, read with pread (a file that a peer
    truncates gives a short read, never a SIGBUS)."""

    __slots__ = ("fd", "size")

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size

    def _short(self) -> RingCorrupted:
        return RingCorrupted("a queue item's side file is shorter than its record")

    def read_bytes(self, offset: int, length: int) -> bytes:
        data = os.pread(self.fd, length, HEADER_SIZE + offset)
        if len(data) == length:
            return data
        # One pread returns at most about 2 GiB.
        out = bytearray(data)
        while len(out) < length:
            chunk = os.pread(self.fd, length - len(out), HEADER_SIZE + offset + len(out))
            if not chunk:
                raise self._short()
            out += chunk
        return bytes(out)

    def read_owned(self, offset: int, length: int) -> bytearray:
        out = bytearray(length)
        self.read_into(offset, out)
        return out

    def read_into(self, offset: int, buffer: Any) -> None:
        # buffer: writable and C-contiguous, filled exactly.
        view = memoryview(buffer).cast("B")
        offset += HEADER_SIZE
        while view.nbytes:
            got = os.preadv(self.fd, [view], offset)
            if got == 0:
                raise self._short()
            view = view[got:]
            offset += got


def is_reference(source: RecordSource) -> bool:
    """True if the message in `source` is a side file's reference."""
    return (source.size == REFERENCE.size
            and source.read_bytes(0, len(REFERENCE_MAGIC)) == REFERENCE_MAGIC)


def take(codec: RecordReader, source: ViewSource) -> Taken:
    """Copy out the item that the reference in `source` names (a
    _records.ViewSource with its ring), read by `codec` (an
    _items.Codec). Returns a _records.Taken whose
    ``side`` is the file to remove once the message is consumed.

    Raises:
        RingCorrupted: a side file that is missing, not this user's, or
            does not match its reference.
    """
    _, length, pid, start, seq = REFERENCE.unpack(source.read_bytes(0, REFERENCE.size))
    if not 0 < pid < PID_LIMIT:
        raise RingCorrupted(f"big-item queue record names pid {pid}")
    path = os.path.join(SHM_DIR, _file_name(source.ring.identity, pid, start, seq))
    magic = MAGIC
    try:
        fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS)
    except FileNotFoundError:
        # A 0.2 producer named it after the ring.
        path = os.path.join(SHM_DIR, _legacy_name(source.ring.name, pid, start, seq))
        magic = LEGACY_MAGIC
        try:
            fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS)
        except FileNotFoundError:
            raise RingCorrupted("the side file of a big queue item is missing: "
                                + os.path.join(SHM_DIR, _file_name(source.ring.identity, pid,
                                                                   start, seq))) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            raise RingCorrupted(f"the side file {path} is not a regular file of this user")
        header = os.pread(fd, _HEADER.size, 0)
        if (info.st_size != HEADER_SIZE + length or len(header) != _HEADER.size
                or _HEADER.unpack(header)[0] != magic or _HEADER.unpack(header)[2] != length):
            raise RingCorrupted(f"the side file {path} does not match its queue record")
        taken = codec.take(FileSource(fd, length), allow_big=False)
    finally:
        os.close(fd)
    taken.side = path
    return taken


def discard(ring: Ring, message: bytes) -> None:
    """A raw message thrown away without being read (shutdown(immediate=True)):
    if it is a side file's reference, remove that file now."""
    if len(message) != REFERENCE.size or not message.startswith(REFERENCE_MAGIC):
        return
    _, _, pid, start, seq = REFERENCE.unpack(message)
    if 0 < pid < PID_LIMIT:
        _unlink(os.path.join(SHM_DIR, _file_name(ring.identity, pid, start, seq)))
        _unlink(os.path.join(SHM_DIR, _legacy_name(ring.name, pid, start, seq)))


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def consumed(ring: Ring, path: str) -> None:
    """Remove the side file of a consumed message, and any garbage."""
    _unlink(path)
    sweep(ring)


def _parse(rest: str) -> Optional[tuple[int, int]]:
    """(pid, start) from 'PID.START.SEQ', or None."""
    parts = rest.split(".")
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        return None
    return int(parts[0]), int(parts[1])


def _own_files(prefix: str) -> dict[str, Optional[tuple[int, int]]]:
    """{name: (pid, start)} of the side files under `prefix` that are
    regular files of this user."""
    try:
        names = [name for name in os.listdir(SHM_DIR) if name.startswith(prefix)]
    except OSError:
        return {}
    found: dict[str, Optional[tuple[int, int]]] = {}
    for name in names:
        try:
            info = os.lstat(os.path.join(SHM_DIR, name))
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid():
            found[name] = _parse(name[len(prefix):])
    return found


def _name_is(ring_name: Optional[str], dev: int, ino: int) -> bool:
    """True while the ring's name still names the segment (dev, ino)."""
    if ring_name is None:
        return False
    try:
        info = os.lstat(shm_path(ring_name))
    except OSError:
        return False
    return (info.st_dev, info.st_ino) == (dev, ino)


def hold(ring: Ring) -> Optional[int]:
    """A read-only descriptor of ``ring``'s file, taken while its name
    still names it, if it has side files now (for ``release``'s
    ``held``); else None."""
    if not watcher.side_file_names(ring.identity, SHM_DIR) or ring.name is None:
        return None
    return watcher.open_same_file(shm_path(ring.name), *ring._inode)


def release(ring_name: Optional[str], identity: str, dev: int, ino: int,
            held: Optional[int] = None) -> None:
    """A Queue of the ring (dev, ino) has closed, or was collected: remove
    the ring's side files if nobody can read them any more, that is when its
    name no longer names it (a process attaching later could not find it)
    and no live process maps it; this process's other Ring objects of it
    count (its own mapping is gone by now). ``held``, a read-only
    descriptor of the ring that only this caller holds (``hold``), lets the
    kernel answer (a write lease, ringshm/watcher.py); and when others
    still map it, the watcher takes the files over: it removes them once
    the last of those is gone."""
    files = watcher.side_file_names(identity, SHM_DIR)
    if not files or _name_is(ring_name, dev, ino):
        return
    if held is not None:
        # The kernel's count of writers: mappings in any PID namespace.
        busy = watcher.in_use_elsewhere(held)
    else:
        busy = Mappers().maps_inode(dev, ino)
    if busy:
        if held is not None:
            watcher.custody(held, identity)
        return   # an attached process may still get these items
    for name in files:
        watcher.remove_side_file(os.path.join(SHM_DIR, name))


class Group:
    """The side files of one ring (by identity; a 0.2 ring's by name) and
    what became of that ring."""

    def __init__(self, key: str, legacy: bool) -> None:
        self.key = key          # the identity, or (0.2) the ring's name
        self.legacy = legacy
        self.names: list[str] = []
        self.bytes = 0
        self.inode: Optional[tuple[int, int]] = None   # of the ring, from a header
        self.producers: set[tuple[int, int]] = set()
        self.provable = 0       # files with our magic, or empty ones

    @property
    def files(self) -> int:
        return len(self.names)

    def producers_alive(self) -> bool:
        return any(0 < pid < PID_LIMIT and process_alive(pid, start)
                   for pid, start in self.producers)


def _split_name(rest: str) -> Optional[tuple[str, int, int]]:
    """(ring key, pid, start) from 'KEY.PID.START.SEQ' (KEY may hold dots)."""
    parts = rest.rsplit(".", 3)
    if len(parts) != 4 or not parts[0] or not all(p.isdigit() for p in parts[1:]):
        return None
    return parts[0], int(parts[1]), int(parts[2])


def file_groups() -> dict[tuple[bool, str], Group]:
    """This user's side files in /dev/shm by ring: {(legacy, key): Group}.
    Only regular files of this user whose name has the side files' form."""
    groups: dict[tuple[bool, str], Group] = {}
    for name in _own_files(PREFIX):
        parsed = _split_name(name[len(PREFIX):])
        if parsed is None:
            continue
        key, pid, start = parsed
        path = os.path.join(SHM_DIR, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | _OPEN_FLAGS)
        except OSError:
            continue
        try:
            info = os.fstat(fd)
            header = os.pread(fd, _HEADER_V2.size, 0)
        finally:
            os.close(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            continue
        magic = header[:len(MAGIC)]
        if magic == LEGACY_MAGIC:
            legacy = True
        elif _is_identity(key) and (magic == MAGIC or info.st_size == 0):
            legacy = False
        else:
            continue   # not provably ours: never counted, never removed
        group = groups.setdefault((legacy, key), Group(key, legacy))
        group.names.append(name)
        group.bytes += info.st_size
        group.producers.add((pid, start))
        if not legacy and len(header) == _HEADER_V2.size:
            group.inode = _HEADER_V2.unpack(header)[3:5]
    return groups


def _named_inodes() -> dict[tuple[int, int], str]:
    """{(st_dev, st_ino): name} of the ringshm.* entries of /dev/shm."""
    found: dict[tuple[int, int], str] = {}
    try:
        entries = os.listdir(SHM_DIR)
    except OSError:
        return found
    for entry in entries:
        if entry.startswith(SHM_PREFIX):
            try:
                info = os.lstat(os.path.join(SHM_DIR, entry))
            except OSError:
                continue
            found[(info.st_dev, info.st_ino)] = entry[len(SHM_PREFIX):]
    return found


def orphans(groups: Optional[dict[tuple[bool, str], Group]] = None,
            gone: frozenset[str] = frozenset(),
            mappers: Optional[Mappers] = None) -> list[Group]:
    """The groups of ``groups`` (default: file_groups()) whose ring is gone
    for good, so that nobody can ever read their items: its name no longer
    names it (a 0.3 ring: no /dev/shm entry is its file; a 0.2 ring: its
    name is gone), no live process maps it, and none of their producers
    lives. ``gone``: identities of rings to count as gone although named
    (what `ringshm gc --dry-run` would remove)."""
    if groups is None:
        groups = file_groups()
    candidates = [group for group in groups.values() if not group.producers_alive()]
    if not candidates:
        return []
    # Named rings first (a look at /dev/shm), then /proc/*/maps, read once
    # and only when a ring whose name is gone is left to judge.
    named = _named_inodes()
    unnamed = []
    for group in candidates:
        if group.key in gone:
            unnamed.append(group)
        elif group.legacy:
            if not os.path.exists(shm_path(group.key)):
                unnamed.append(group)
        elif group.inode is None or group.inode not in named:
            unnamed.append(group)
    if not unnamed:
        return []
    if mappers is None:
        mappers = Mappers()
    found = []
    for group in unnamed:
        if group.legacy:
            if mappers.maps_removed(shm_path(group.key)):
                continue
        elif group.inode is not None and mappers.maps_inode(*group.inode):
            continue
        # group.inode None: only empty files, whose producers died before
        # writing a header, so before publishing: nothing can read them.
        found.append(group)
    return found


def attribute(rows: list[dict[str, Any]],
              groups: dict[tuple[bool, str], Group]) -> list[Group]:
    """Give each ring row of `ringshm ls`/`top` (a dict with "identity",
    and "name" for a named ring) the count and bytes of its side files
    ("side_files", "side_bytes"); return the groups no row claimed (their
    ring's name is gone)."""
    left = dict(groups)
    for row in rows:
        files = nbytes = 0
        keys = [(False, str(row.get("identity") or ""))]
        if row.get("kind") == "shm":
            keys.append((True, str(row.get("name"))))   # a 0.2 producer's files
        for key in keys:
            group = left.pop(key, None) if key[1] else None
            if group is not None:
                files += group.files
                nbytes += group.bytes
        row["side_files"], row["side_bytes"] = files, nbytes
    return list(left.values())


def remove_group(group: Group) -> int:
    """Remove the files of ``group`` that are provably side files of this
    user; returns the bytes freed."""
    freed = 0
    for name in group.names:
        path = os.path.join(SHM_DIR, name)
        if group.legacy:
            freed += _remove_legacy(path)
        else:
            freed += max(watcher.remove_side_file(path), 0)
    return freed


def _remove_legacy(path: str) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | _OPEN_FLAGS)
    except OSError:
        return 0
    try:
        info = os.fstat(fd)
        if (not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid()
                or os.pread(fd, len(LEGACY_MAGIC), 0) != LEGACY_MAGIC):
            return 0
        _unlink(path)
        return int(info.st_size)
    finally:
        os.close(fd)


def sweep_orphans() -> int:
    """Remove this user's side files whose ring is gone for good (see
    orphans). Returns how many it removed."""
    removed = 0
    for group in orphans():
        remove_group(group)
        removed += group.files
    return removed


# Side files this process has seen published (head >= end), by path: their
# end. Such a file is garbage exactly when tail >= end, so a sweep judges it
# by one comparison instead of opening it and asking whether its creator
# lives: a sweep runs at every big put and get, and with many big items
# queued the full checks made each one cost O(files queued), about 25 us a
# file (issue item 3). Names are never reused; bounded by clearing.
_published: dict[str, int] = {}
_PUBLISHED_MAX = 1 << 14


def sweep(ring: Ring) -> int:
    """Remove the side files of `ring` that are garbage (see the module
    docstring); never a file of another user. Returns how many it removed."""
    prefix = f"{PREFIX}{ring.identity}."
    removed = 0
    tail = None
    try:
        names = [name for name in os.listdir(SHM_DIR) if name.startswith(prefix)]
    except OSError:
        return 0
    for name in names:
        path = os.path.join(SHM_DIR, name)
        end = _published.get(path)
        if end is not None:
            if tail is None:
                tail = ring.stats()["tail"]
            if tail >= end:
                _published.pop(path, None)
                _unlink(path)
                removed += 1
            continue
        parsed = _own_file(name, prefix)
        if parsed is not None and _is_garbage(ring, path, *parsed):
            _unlink(path)
            removed += 1
    return removed


def _own_file(name: str, prefix: str) -> Optional[tuple[int, int]]:
    """(pid, start) of the side file `name` (under `prefix`) if it is a
    regular file of this user, as _own_files tells; else None."""
    try:
        info = os.lstat(os.path.join(SHM_DIR, name))
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
        return None
    return _parse(name[len(prefix):])


def _is_garbage(ring: Ring, path: str, pid: int, start: int) -> bool:
    # Order matters: liveness first (a dead creator writes nothing more),
    # then the file's end, then the ring's counters (which only grow).
    alive = 0 < pid < PID_LIMIT and process_alive(pid, start)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | _OPEN_FLAGS)
    except OSError:
        return False
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            return False
        header = os.pread(fd, _HEADER.size, 0)
    finally:
        os.close(fd)
    end = 0
    if len(header) == _HEADER.size and header[:8] == MAGIC:
        end = _HEADER.unpack(header)[1]
    elif info.st_size:
        return False   # not our magic: not ours to judge
    counters = ring.stats()
    if end and counters["tail"] >= end:
        return True
    if end and counters["head"] >= end:
        # Published: from now on only the tail decides (sweep).
        if len(_published) >= _PUBLISHED_MAX:
            _published.clear()
        _published[path] = end
        return False
    return not alive and (not end or counters["head"] < end)
