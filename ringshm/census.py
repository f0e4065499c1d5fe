"""What is in /dev/shm and in System V shared memory, for `ringshm ls` and
`ringshm gc`: each ``ringshm.*`` entry classified without ever blocking on
it or reading another user's segment, and whether some live process maps it
(a write lease and /proc/*/maps, see Mappers); each System V ring (a
segment of this user with a lock file /dev/shm/ringshm-sysv.0xKEY, or a
ring's magic) from /proc/sysvipc/shm, whose attach count says who maps it.

A ring is *stale* when it was made with persist=False, its creator is dead
and no live process maps it: what a crash left before the watcher could
remove the name (a watcher killed too, a machine that lost power with a
persistent /dev/shm).  A persistent ring that no live process maps is
*idle*.  See docs/DESIGN.md, "No name outlives its creator".

A topic (ringshm.topic) is a row too, its states starting with "topic"
(then shutdown, idle or stale by the same rules), with its stats and one
entry per subscriber (``subscriber_list``), all read without a lock, when
census() is given Topic.open (`ringshm ls` and `gc` do: gc removes a
stale topic, and with --persistent an idle one, as it does a ring).
"""

import contextlib
import errno
import fcntl
import functools
import os
import signal
import stat
import struct
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

from ringshm._backing import companion_path
from ringshm._ring import HEADER_SIZE, LAYOUT_VERSION, sysv_peek, sysv_remove
from ringshm.errors import (
    RingCorrupted,
    RingError,
    RingNotFound,
    RingPermissionError,
    RingWrongKind,
)
from ringshm.ring import SHM_DIR, SHM_PREFIX, Ring, shm_path
from ringshm.watcher import open_same_file, sysv_segments

__all__ = ["Mappers", "census", "escape_name", "human_size", "remove", "remove_companion",
           "still_the_same", "subscriber_row", "unescape_name"]

_MAGIC = b"RINGSHM\0"

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


#: Topic.open (ringshm.topic is above this module: census() is given it).
OpenTopic = Callable[..., Any]


def _classify(name: str, mappers: Mappers,
              open_topic: Optional[OpenTopic]) -> Optional[Dict[str, Any]]:
    """One row: name, path, states, and the ring's stats when it is ours."""
    path = shm_path(name)
    row: Dict[str, Any] = {"kind": "shm", "name": name, "path": path, "states": []}
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None   # removed while we were listing
    row.update(uid=st.st_uid, dev=st.st_dev, ino=st.st_ino)
    if not stat.S_ISREG(st.st_mode):
        row["states"] = ["not a ring"]
        return row
    if st.st_uid != os.geteuid():
        # Never read another user's segment (docs/DESIGN.md, "The owner rule").
        row["states"] = ["other user"]
        return row
    states = _states(lambda: Ring.open(name), row,
                     lambda: mappers.maybe_mapped(path, st),
                     None if open_topic is None else functools.partial(open_topic, name))
    if states is None:
        return None
    row["states"] = states
    return row


def subscriber_row(info: Any) -> Dict[str, Any]:
    """One subscriber of a topic (a SubscriberInfo) as `ringshm ls` and
    `ringshm info` show it; ``link``: tethered, untethered, or stalled (a
    tethered one its stall_timeout untethered)."""
    link = "stalled" if info.stalled else "tethered" if info.tethered else "untethered"
    return {"entry": info.entry, "pid": info.pid, "alive": info.alive, "link": link,
            "lag_messages": info.lag_messages, "lag_bytes": info.lag_bytes,
            "received": info.messages, "received_bytes": info.bytes, "missed": info.missed,
            "lags": info.lags, "stall_timeout": info.stall_timeout}


def _topic_states(attach: Callable[[], Any], row: Dict[str, Any],
                  maybe_mapped: Callable[[], bool]) -> Optional[List[str]]:
    """A topic: its stats and subscribers (read without any lock) into
    ``row``; its states, "topic" first."""
    try:
        topic = attach()
    except RingNotFound:
        return None
    except RingPermissionError:
        return ["topic", "no access"]
    except (RingError, OSError, ValueError) as exc:
        row["error"] = str(exc)
        return ["topic", "error"]
    try:
        stats = topic.stats()
        subscribers = [subscriber_row(info) for info in topic.subscribers()]
        row["identity"] = topic.identity
    except (RingError, ValueError) as exc:
        row["error"] = str(exc)
        return ["topic", "corrupt"]
    finally:
        topic._detach_quietly()   # close() would wake (write) its wait queues
    row.update(stats)
    row["segment"] = "topic"
    # What ls shows in MESSAGES for a topic: the messages ever published.
    row["messages"] = stats["published"]
    row["subscriber_list"] = subscribers
    return ["topic"] + _lifecycle(stats, maybe_mapped)


def _lifecycle(stats: Dict[str, Any], maybe_mapped: Callable[[], bool]) -> List[str]:
    states = []
    if stats["shutdown"]:
        states.append("shutdown")
    if not maybe_mapped():
        if not stats["ephemeral"]:
            states.append("idle")
        elif not stats["creator_alive"]:
            states.append("stale")
    return states


def _states(attach: Callable[[], Ring], row: Dict[str, Any],
            maybe_mapped: Callable[[], bool],
            attach_topic: Optional[Callable[[], Any]] = None) -> Optional[List[str]]:
    """Open the ring with ``attach``, put its stats into ``row`` and return
    its states (None: it went away meanwhile).  A topic is opened with
    ``attach_topic`` instead: its states start with "topic"."""
    try:
        ring = attach()
    except RingNotFound:
        return None
    except RingWrongKind:
        # A topic (ringshm.topic): sound, only not a ring.
        if attach_topic is None:
            return ["topic"]
        return _topic_states(attach_topic, row, maybe_mapped)
    except RingCorrupted as exc:
        version = _other_layout_version(row)
        row["error"] = str(exc)
        if version is not None:
            # A ring, of a ringshm that lays segments out otherwise (0.1
            # wrote version 1): not to be mistaken for garbage.
            row["layout"] = version
            return [f"layout {version}"]
        return ["corrupt"]
    except RingPermissionError:
        return ["no access"]
    except (RingError, OSError, ValueError) as exc:
        row["error"] = str(exc)
        return ["error"]
    try:
        stats = ring.stats()
        # Which ring this is, whatever its name: its Queue side files carry it.
        row["identity"] = ring.identity
    except RingCorrupted as exc:
        row["error"] = str(exc)
        return ["corrupt"]
    finally:
        ring._detach_quietly()   # close() would wake (write) its wait queues
    row.update(stats)
    row["segment"] = "ring"
    return _lifecycle(stats, maybe_mapped) or ["ok"]


def _other_layout_version(row: Dict[str, Any]) -> Optional[int]:
    """The layout version in the header of the ring file of ``row`` (a
    /dev/shm entry) when it has ringshm's magic and a version this ringshm
    does not read; else None."""
    if row["kind"] != "shm":
        return None
    fd = open_same_file(row["path"], row["dev"], row["ino"])
    if fd is None:
        return None
    try:
        head = os.pread(fd, _IDENTITY.size, 0)
    finally:
        os.close(fd)
    if len(head) < _IDENTITY.size:
        return None
    magic, version = _IDENTITY.unpack(head)
    if magic != _MAGIC or version == LAYOUT_VERSION:
        return None
    return int(version)


#: The first bytes of every layout version's header: magic, version
#: (docs/FORMAT.md; 0.1's layout 1 starts the same way).
_IDENTITY = struct.Struct("<8sI")


def _sysv_rows(all_users: bool,
               open_topic: Optional[OpenTopic]) -> Iterator[Dict[str, Any]]:
    """The System V rings: this user's (every user's with ``all_users``,
    never read), as /proc/sysvipc/shm lists them before we attach."""
    euid = os.geteuid()
    for seg in sorted(sysv_segments(), key=lambda seg: seg["key"]):
        key = seg["key"]
        if key == 0:
            continue   # removed (IPC_RMID) and still attached: gone by name
        companion = companion_path(key)
        row: Dict[str, Any] = {"kind": "sysv", "name": f"0x{key:08x}", "key": key,
                               "shmid": seg["shmid"], "uid": seg["uid"],
                               "nattch": seg["nattch"], "creator": seg["cpid"],
                               "path": companion, "states": []}
        if seg["uid"] != euid or seg["cuid"] != euid:
            if all_users and os.path.lexists(companion):
                row["states"] = ["other user"]
                yield row
            continue
        if not os.path.lexists(companion):
            # A segment of some other program, unless it holds our magic.
            if seg["size"] < HEADER_SIZE or not _holds_magic(seg["shmid"]):
                continue
        attached = seg["nattch"] != 0
        states = _states(functools.partial(Ring.open, sysv_key=key), row,
                         functools.partial(bool, attached),
                         None if open_topic is None else
                         functools.partial(open_topic, sysv_key=key))
        if states is not None:
            row["states"] = states
            yield row


def _holds_magic(shmid: int) -> bool:
    try:
        return bool(sysv_peek(shmid, len(_MAGIC)) == _MAGIC)
    except OSError:
        return False


def census(all_users: bool = False,
           open_topic: Optional[OpenTopic] = None) -> List[Dict[str, Any]]:
    """Every ``ringshm.*`` entry of /dev/shm, classified, sorted by name,
    then the System V rings of this user (of all users with
    ``all_users``), by key.  The mappings are read before any ring is
    opened (opening maps it).  A topic is opened with ``open_topic``
    (Topic.open) for its stats and subscribers; without it, its states are
    just ["topic"]."""
    mappers = Mappers()
    rows = (_classify(name, mappers, open_topic) for name in _entries())
    return [row for row in rows if row is not None] + list(_sysv_rows(all_users, open_topic))


def still_the_same(row: Dict[str, Any]) -> bool:
    """True if the entry of ``row`` is still the file (or System V segment,
    by key, shmid and creator pid) it was classified as (not removed and
    made again meanwhile)."""
    if row["kind"] == "sysv":
        return any((seg["key"], seg["shmid"], seg["cpid"]) ==
                   (row["key"], row["shmid"], row["creator"]) for seg in sysv_segments())
    try:
        st = os.lstat(row["path"])
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (row["dev"], row["ino"])


def remove(row: Dict[str, Any]) -> None:
    """Remove the ring of ``row``: unlink its file; a System V ring's
    segment (IPC_RMID) and its lock file.

    Raises:
        FileNotFoundError: already gone.
        OSError: the system refused.
    """
    if row["kind"] != "sysv":
        os.unlink(row["path"])
        return
    try:
        sysv_remove(row["shmid"])
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.EIDRM):
            raise FileNotFoundError(errno.ENOENT, "already removed", row["name"]) from None
        raise
    remove_companion(row["key"])


def remove_companion(key: int) -> None:
    """Unlink the lock file of the System V ring of ``key`` if it is this
    user's regular file (never another user's, never a link's target)."""
    path = companion_path(key)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def human_size(n: int) -> str:
    """``1536`` -> ``"1.5K"``; bytes below 1 KiB stay exact."""
    if n < 1024:
        return str(n)
    scaled = float(n)
    for unit in ("K", "M", "G", "T"):
        scaled /= 1024
        if scaled < 1024 or unit == "T":
            break
    text = f"{scaled:.1f}"
    return (text[:-2] if text.endswith(".0") else text) + unit
