"""What is in /dev/shm, for `ringshm ls` and `ringshm gc`: each ``ringshm.*``
entry classified without ever blocking on it or reading another user's
segment, and whether some live process maps it (a write lease and
/proc/*/maps, see Mappers).

A ring is *stale* when it was made with persist=False, its creator is dead
and no live process maps it: what a crash left before the watcher could
remove the name (a watcher killed too, a machine that lost power with a
persistent /dev/shm).  A persistent ring that no live process maps is
*idle*.  See docs/DESIGN.md, "No name outlives its creator".
"""

import fcntl
import os
import signal
import stat
import struct
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

from ringshm._ring import LAYOUT_VERSION
from ringshm.errors import RingCorrupted, RingError, RingNotFound, RingPermissionError
from ringshm.ring import SHM_DIR, SHM_PREFIX, Ring, shm_path
from ringshm.watcher import open_same_file

__all__ = ["Mappers", "census", "escape_name", "still_the_same", "unescape_name"]

# fcntl.F_SETSIG is missing from some Pythons' fcntl; Linux's value.
F_SETSIG = getattr(fcntl, "F_SETSIG", 10)


def escape_name(name: str) -> str:
    """``name`` printable on one line: backslash, control characters and
    bytes that are not UTF-8 (os.listdir's surrogates) as ``\\xNN``."""
    out = []
    for c in name:
        code = ord(c)
        if c == "\\":
            out.append("\\\\")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif 0xDC80 <= code <= 0xDCFF:   # a byte that was not UTF-8
            out.append(f"\\x{code - 0xDC00:02x}")
        else:
            out.append(c)
    return "".join(out)


def unescape_name(printed: str) -> str:
    """The name that ``escape_name`` printed as ``printed``.

    Raises:
        ValueError: ``printed`` is not something escape_name prints (a lone
            backslash, or ``\\x`` without two hex digits).
    """
    out = []
    i = 0
    while i < len(printed):
        c = printed[i]
        if c != "\\":
            out.append(c)
            i += 1
        elif printed[i + 1:i + 2] == "\\":
            out.append("\\")
            i += 2
        elif printed[i + 1:i + 2] == "x" and _is_hex(printed[i + 2:i + 4]):
            code = int(printed[i + 2:i + 4], 16)
            # escape_name printed a control character, or a byte that was
            # not UTF-8 (a surrogate, as os.listdir gives it).
            out.append(chr(code) if code < 0x80 else chr(0xDC00 + code))
            i += 4
        else:
            raise ValueError(f"not an escaped name as `ringshm ls` prints it: {printed!r}")
    return "".join(out)


def _is_hex(text: str) -> bool:
    return len(text) == 2 and all(c in "0123456789abcdefABCDEF" for c in text)


class Mappers:
    """Whether a live process has a segment mapped (or open for writing).

    Two looks, since neither sees everything: the kernel's own count of
    writers, through a write lease (F_SETLEASE), which is refused while any
    process of any PID namespace holds the file open for writing, and every
    ringshm attachment does (its mapping keeps the O_RDWR file); and
    /proc/*/maps, read once, for read-only mappings of the processes we may
    inspect.  When neither look can be made, the file counts as mapped."""

    def __init__(self, proc: str = "/proc", exclude_pid: int = 0) -> None:
        self.mapped: Set[Tuple[int, int]] = set()
        self.removed: Set[bytes] = set()   # paths of mapped files since unlinked
        for entry in os.listdir(proc):
            if entry.isdigit() and int(entry) != exclude_pid:
                self._read(os.path.join(proc, entry, "maps"))

    def _read(self, maps_path: str) -> None:
        try:
            with open(maps_path, "rb") as maps:
                lines = maps.read().splitlines()
        except OSError:
            return   # it ended meanwhile, or it is not ours to inspect
        for line in lines:
            fields = line.split(None, 5)
            if len(fields) < 6 or fields[4] == b"0":
                continue
            major, _, minor = fields[3].partition(b":")
            try:
                self.mapped.add((os.makedev(int(major, 16), int(minor, 16)), int(fields[4])))
            except ValueError:
                continue
            if fields[5].endswith(_DELETED):
                self.removed.add(fields[5][:-len(_DELETED)])

    def maybe_mapped(self, path: str, st: os.stat_result) -> bool:
        """True unless no live process maps the file ``st`` of ``path``."""
        return self.maps_inode(st.st_dev, st.st_ino) or _open_for_writing(path, st)

    def maps_inode(self, dev: int, ino: int) -> bool:
        """True if a process maps the file (dev, ino): /proc only, for a
        file whose name is gone (no lease can be taken on it)."""
        return (dev, ino) in self.mapped

    def maps_removed(self, path: str) -> bool:
        """True if a process maps a file that was called ``path`` and has
        been unlinked since."""
        return os.fsencode(path) in self.removed


_DELETED = b" (deleted)"


def _open_for_writing(path: str, st: os.stat_result) -> bool:
    fd = open_same_file(path, st.st_dev, st.st_ino)
    if fd is None:
        return True   # replaced or gone meanwhile: look again another time
    try:
        # An opener that breaks our lease signals us: SIGURG, whose default
        # is to be ignored (SIGIO's would end this process).
        fcntl.fcntl(fd, F_SETSIG, signal.SIGURG)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    except OSError:
        return True   # EAGAIN: a writer has it open; anything else: unknown
    finally:
        os.close(fd)


def _entries() -> Iterator[str]:
    try:
        names = sorted(os.listdir(SHM_DIR))
    except FileNotFoundError:
        return
    for entry in names:
        if entry.startswith(SHM_PREFIX) and len(entry) > len(SHM_PREFIX):
            yield entry[len(SHM_PREFIX):]


def _classify(name: str, mappers: Mappers) -> Optional[Dict[str, Any]]:
    """One row: name, path, states, and the ring's stats when it is ours."""
    path = shm_path(name)
    row: Dict[str, Any] = {"name": name, "path": path, "states": []}
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None   # removed while we were listing
    row.update(uid=st.st_uid, dev=st.st_dev, ino=st.st_ino)
    if not stat.S_ISREG(st.st_mode):
        row["states"] = ["not a ring"]
        return row
    if st.st_uid != os.geteuid():
        # Never read another user's segment (SPEC: safe to attach).
        row["states"] = ["other user"]
        return row
    try:
        ring = Ring.open(name)
    except RingNotFound:
        return None
    except RingCorrupted as exc:
        version = _other_layout_version(path, st)
        if version is not None:
            # A ring, of a ringshm that lays segments out otherwise (0.1
            # wrote version 1): not to be mistaken for garbage.
            row.update(states=[f"layout {version}"], error=str(exc), layout=version)
        else:
            row.update(states=["corrupt"], error=str(exc))
        return row
    except RingPermissionError:
        row["states"] = ["no access"]
        return row
    except (RingError, OSError, ValueError) as exc:
        row.update(states=["error"], error=str(exc))
        return row
    try:
        stats = ring.stats()
    except RingCorrupted as exc:
        row.update(states=["corrupt"], error=str(exc))
        return row
    finally:
        ring.close()
    row.update(stats)
    states = []
    if stats["shutdown"]:
        states.append("shutdown")
    if not mappers.maybe_mapped(path, st):
        if not stats["ephemeral"]:
            states.append("idle")
        elif not stats["creator_alive"]:
            states.append("stale")
    row["states"] = states or ["ok"]
    return row


def _other_layout_version(path: str, st: os.stat_result) -> Optional[int]:
    """The layout version in the header of the ring file ``st`` of
    ``path`` when it has ringshm's magic and a version this ringshm does not
    read; else None."""
    fd = open_same_file(path, st.st_dev, st.st_ino)
    if fd is None:
        return None
    try:
        head = os.pread(fd, _IDENTITY.size, 0)
    finally:
        os.close(fd)
    if len(head) < _IDENTITY.size:
        return None
    magic, version = _IDENTITY.unpack(head)
    if magic != LAYOUT_MAGIC or version == LAYOUT_VERSION:
        return None
    return int(version)


#: The first bytes of every layout version's header: magic, version
#: (docs/FORMAT.md; 0.1's layout 1 starts the same way).
_IDENTITY = struct.Struct("<8sI")
LAYOUT_MAGIC = b"RINGSHM\x00"


def census() -> List[Dict[str, Any]]:
    """Every ``ringshm.*`` entry of /dev/shm, classified, sorted by name.
    The mappings are read before any ring is opened (opening maps it)."""
    mappers = Mappers()
    rows = (_classify(name, mappers) for name in _entries())
    return [row for row in rows if row is not None]


def still_the_same(row: Dict[str, Any]) -> bool:
    """True if the entry of ``row`` is still the file it was classified as
    (not removed and made again meanwhile)."""
    try:
        st = os.lstat(row["path"])
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (row["dev"], row["ino"])
