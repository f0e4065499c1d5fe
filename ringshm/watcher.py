"""No name outlives its creator: the watcher process.

A process that creates a ring with persist=False starts, at its first such
create, one small watcher process (as multiprocessing's resource_tracker
does), connected to it by a Unix socket pair.  The creator registers each such name (its
file, device and inode) and unregisters it when the ring's name is removed
the ordinary way.  When its end of the socket reads end of file, the creator is gone,
however it died (SIGKILL included): the watcher removes what is still
registered and exits.  Before removing a file it checks that the file is
still the one registered (device, inode, and the creator pid in its header),
so a name that somebody re-created after ours was removed is never touched.
A removed ring's Queue side files (/dev/shm/ringshm-item.IDENTITY.*) go with
it: the watcher keeps a read-only descriptor of the ring, and removes the
files of its identity once no other process holds the ring open for
writing (every attachment's mapping does), which it asks the kernel with a
write lease, every POLL seconds.  The creator hands it such a ring in the
same way (``custody``) when it closes a Queue whose big items another
process may still read.
A System V segment is registered by key, shmid and creator pid (shm_cpid),
and removed (IPC_RMID) only while /proc/sysvipc/shm still lists that very
segment under that key.

The watcher runs this file as a script (``python -I -S watcher.py``): the
top level imports only the standard library, so it starts in milliseconds
and needs no ringshm installation on its path.  See docs/DESIGN.md.
"""

import errno
import fcntl
import os
import select
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
import warnings
from typing import Dict, List, Optional, Tuple

__all__ = ["register", "unregister", "register_sysv", "unregister_sysv", "custody",
           "open_same_file", "sysv_segments", "side_file_names", "remove_side_file",
           "in_use_elsewhere", "SIDE_PREFIX", "SIDE_MAGIC"]

# The creator pid is the int64 at byte 32 of the header (docs/FORMAT.md).
_CREATOR_PID_OFFSET = 32
# The ring's 16 random bytes of identity (docs/FORMAT.md).
_IDENTITY_OFFSET = 1024
_IDENTITY_SIZE = 16
# Queue side files (ringshm/_sidefile.py): /dev/shm/ringshm-item.IDENTITY.PID.START.SEQ
# with IDENTITY the ring's identity in 32 hex digits, this magic first.
SIDE_DIR = "/dev/shm"
SIDE_PREFIX = "ringshm-item."
SIDE_MAGIC = b"RSITEM\x00\x02"
# Seconds between two looks at a ring whose side files wait for its last user.
POLL = 0.05
# fcntl.F_SETSIG is missing from some Pythons' fcntl; Linux's value.
_F_SETSIG = getattr(fcntl, "F_SETSIG", 10)
SYSV_LIST = "/proc/sysvipc/shm"
_IPC_RMID = 0


def _line(op: str, dev: int, ino: int, path: str) -> bytes:
    # The path in hex: a file name may hold any byte but "/" and NUL.
    return f"{op} {dev} {ino} {os.fsencode(path).hex()}\n".encode()


def _sysv_line(op: str, key: int, shmid: int, creator_pid: int) -> bytes:
    return f"{op}sysv {key} {shmid} {creator_pid}\n".encode()


def _sysv_entry(shmid: int) -> str:
    return f"sysv:{shmid}"


class _Client:
    """The creating process's end: one watcher per process, started on first
    use, restarted (with every registration re-sent) if it was killed."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._pid: Optional[int] = None    # the process that started the watcher
        self._sock: Optional[socket.socket] = None   # our end of the socket pair
        self._process: Optional[subprocess.Popen[bytes]] = None  # its first process
        # What is registered: a path or "sysv:SHMID" -> its "+" and "-" lines.
        self._names: Dict[str, Tuple[bytes, bytes]] = {}

    def register(self, entry: str, add: bytes, drop: bytes) -> None:
        with self._lock:
            self._forget_if_forked()
            self._reap()
            self._names[entry] = (add, drop)
            self._send(add)

    def unregister(self, entry: str) -> None:
        with self._lock:
            self._forget_if_forked()
            lines = self._names.pop(entry, None)
            if lines is not None and self._sock is not None:
                self._send(lines[1])

    def after_fork_in_child(self) -> None:
        # The child's copies of the parent's rings are not its own (their
        # finalizers do nothing in a child), and the inherited socket must
        # go, or the parent's watcher would wait for the child's exit too.
        if self._sock is not None:
            self._sock.close()
        self._reset()

    def _forget_if_forked(self) -> None:
        # A fork that bypassed os.register_at_fork (a C extension's fork).
        if self._pid is not None and self._pid != os.getpid():
            self.after_fork_in_child()

    def custody(self, fd: int, identity: str) -> bool:
        """Hand the watcher a descriptor of a ring whose side files it must
        remove once nobody else holds the ring; False if it could not."""
        line = f"+side {identity}\n".encode()
        with self._lock:
            self._forget_if_forked()
            self._reap()
            for _attempt in range(2):
                if self._sock is None:
                    try:
                        sock = self._start()
                        for add, _ in self._names.values():
                            sock.sendall(add, socket.MSG_NOSIGNAL)
                    except OSError:
                        self._close()
                        return False
                assert self._sock is not None
                try:
                    sent = socket.send_fds(self._sock, [line], [fd], socket.MSG_NOSIGNAL)
                    if sent == len(line):
                        return True
                    self._sock.sendall(line[sent:], socket.MSG_NOSIGNAL)
                    return True
                except OSError:
                    self._close()   # dead or stuck: another one, once
            return False

    def _send(self, data: bytes) -> None:
        # A socket, not a pipe: MSG_NOSIGNAL, so a dead watcher is an error
        # here, never a SIGPIPE in a program that restored its default.
        if self._sock is not None:
            try:
                self._sock.sendall(data, socket.MSG_NOSIGNAL)
                return
            except OSError:
                pass   # the watcher died (killed?), or hangs: start another
        try:
            sock = self._start()
            for add, _ in self._names.values():
                sock.sendall(add, socket.MSG_NOSIGNAL)
        except OSError as exc:
            self._close()
            warnings.warn(f"ringshm: no watcher for persist=False names ({exc}); a crash "
                          "of this process would leave them for `ringshm gc`",
                          RuntimeWarning, stacklevel=4)

    def _start(self) -> socket.socket:
        self._close()
        ours, theirs = socket.socketpair()
        try:
            # A session of its own: Ctrl-C or a signal to our process group
            # must not end the watcher before it cleaned up after us.
            self._process = subprocess.Popen(
                [sys.executable, "-I", "-S", os.path.abspath(__file__), str(os.getpid())],
                stdin=theirs.fileno(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                close_fds=True, cwd="/", start_new_session=True)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        # A stopped watcher must not stop us for long (a registration is a
        # few dozen bytes: only thousands of them fill the buffer).
        ours.settimeout(1.0)
        self._sock = ours
        self._pid = os.getpid()
        return ours

    def _reap(self) -> None:
        # The watcher's first process exits as soon as it forked the watcher.
        if self._process is not None and self._process.poll() is not None:
            self._process = None

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._reap()


_client = _Client()
os.register_at_fork(after_in_child=_client.after_fork_in_child)


def register(path: str, dev: int, ino: int) -> None:
    """Have the watcher remove file ``path`` (device ``dev``, inode ``ino``)
    if this process dies before unregister(path)."""
    _client.register(path, _line("+", dev, ino, path), _line("-", dev, ino, path))


def unregister(path: str) -> None:
    """The name was removed (or persists by choice): forget it."""
    _client.unregister(path)


def register_sysv(key: int, shmid: int, creator_pid: int) -> None:
    """Have the watcher remove (IPC_RMID) System V segment ``shmid`` of
    ``key``, created by ``creator_pid``, if this process dies before
    unregister_sysv(shmid)."""
    _client.register(_sysv_entry(shmid), _sysv_line("+", key, shmid, creator_pid),
                     _sysv_line("-", key, shmid, creator_pid))


def unregister_sysv(shmid: int) -> None:
    """The segment was removed (or persists by choice): forget it."""
    _client.unregister(_sysv_entry(shmid))


def custody(fd: int, identity: str) -> bool:
    """Have this process's watcher (started if need be) remove the side
    files of the ring of identity ``identity`` (32 hex digits) once no
    other process holds the ring open for writing; ``fd``, a read-only
    descriptor of the ring, is duplicated into the watcher (the caller
    still closes its own).  False if no watcher could take it."""
    return _client.custody(fd, identity)


# ---------------------------------------------------------------- the watcher


def open_same_file(path: "str | bytes", dev: int, ino: int) -> Optional[int]:
    """A read-only descriptor of ``path`` if it is still the regular file
    of device ``dev`` and inode ``ino``, else None.  Never follows a
    symbolic link, never blocks (a FIFO put in its place)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != (dev, ino) or not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None
    return fd


def _still_ours(fd: int, creator_pid: int) -> bool:
    """True if the header of the registered file ``fd`` names our creator."""
    header = os.pread(fd, 8, _CREATOR_PID_OFFSET)
    # A creator that died before writing its header: the inode decides.
    return len(header) < 8 or int(struct.unpack("<q", header)[0]) in (creator_pid, 0)


def _identity_of(fd: int) -> str:
    """The ring's identity in hex, "" when it has none (a lock file, a
    header never written)."""
    data = os.pread(fd, _IDENTITY_SIZE, _IDENTITY_OFFSET)
    if len(data) != _IDENTITY_SIZE or data == bytes(_IDENTITY_SIZE):
        return ""
    return data.hex()


def in_use_elsewhere(fd: int) -> bool:
    """True while a process other than the holder of ``fd`` (read-only) has
    the file open for writing, a mapping included: the kernel refuses a
    write lease then, whatever PID namespace that process is in.  Where a
    lease cannot be taken at all, /proc/*/maps decides."""
    try:
        # An opener that breaks our lease signals us: SIGURG, ignored by
        # default (SIGIO's default would end this process).
        fcntl.fcntl(fd, _F_SETSIG, signal.SIGURG)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EBUSY):
            return True
    st = os.fstat(fd)
    return _mapped_in_proc(st.st_dev, st.st_ino)


def _mapped_in_proc(dev: int, ino: int) -> bool:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():   # our own too: a caller's other Ring objects count
            continue
        try:
            with open(f"/proc/{entry}/maps", "rb") as maps:
                lines = maps.read().splitlines()
        except OSError:
            continue
        for line in lines:
            fields = line.split(None, 5)
            if len(fields) >= 5 and fields[4] == str(ino).encode():
                major, _, minor = fields[3].partition(b":")
                try:
                    if os.makedev(int(major, 16), int(minor, 16)) == dev:
                        return True
                except ValueError:
                    continue
    return False


def side_file_names(identity: str, directory: str = SIDE_DIR) -> List[str]:
    """The names of the side files of the ring of ``identity`` there."""
    prefix = f"{SIDE_PREFIX}{identity}."
    try:
        return [name for name in os.listdir(directory) if name.startswith(prefix)]
    except OSError:
        return []


def remove_side_file(path: str) -> int:
    """Unlink ``path`` if it is provably a side file of this user: a
    regular file of our uid holding the side-file magic, or empty (its
    producer died before writing the header). Returns its size, -1 if
    it was left (or gone)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return -1
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            return -1
        if st.st_size and os.pread(fd, len(SIDE_MAGIC), 0) != SIDE_MAGIC:
            return -1
        try:
            after = os.lstat(path)
        except OSError:
            return -1
        if (after.st_dev, after.st_ino) != (st.st_dev, st.st_ino):
            return -1   # replaced meanwhile
        try:
            os.unlink(path)
        except OSError:
            return -1
        return int(st.st_size)
    finally:
        os.close(fd)


class _Custody:
    """Rings whose side files wait for the ring's last user: a read-only
    descriptor of each, and its identity."""

    def __init__(self) -> None:
        self.rings: List[Tuple[int, str]] = []

    def take(self, fd: int, identity: str) -> None:
        if identity:
            self.rings.append((fd, identity))
        else:
            os.close(fd)

    def settle(self) -> None:
        """Remove the side files of every ring nobody else holds; forget those."""
        kept = []
        for fd, identity in self.rings:
            try:
                busy = in_use_elsewhere(fd)
            except OSError:
                busy = False
            if busy:
                kept.append((fd, identity))
                continue
            for name in side_file_names(identity):
                remove_side_file(os.path.join(SIDE_DIR, name))
            os.close(fd)
        self.rings = kept


def sysv_segments(listing: str = SYSV_LIST) -> List[Dict[str, int]]:
    """Every System V segment /proc/sysvipc/shm lists (as ``ipcs -m``):
    key (unsigned), shmid, perms, size, cpid, nattch, uid, cuid.  Empty
    where the kernel has no System V IPC."""
    try:
        with open(listing) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    if not lines:
        return []
    names = lines[0].split()
    rows = []
    for line in lines[1:]:
        values = line.split()
        if len(values) < len(names):
            continue
        try:
            row = {name: int(value) for name, value in zip(names, values)
                   if name in ("key", "shmid", "perms", "size", "cpid", "nattch", "uid",
                               "cuid")}
        except ValueError:
            continue
        row["key"] &= 0xFFFFFFFF
        rows.append(row)
    return rows


def _remove_segment(key: int, shmid: int, creator_pid: int) -> None:
    """IPC_RMID of ``shmid`` if it is still the segment of ``key`` that
    ``creator_pid`` made.  Through ctypes: the watcher imports nothing of
    ringshm (see the top of this file)."""
    if not any((row["key"], row["shmid"], row["cpid"]) == (key, shmid, creator_pid)
               for row in sysv_segments()):
        return
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmctl(ctypes.c_int(shmid), ctypes.c_int(_IPC_RMID), None)


def watch(sock: socket.socket, creator_pid: int) -> None:
    """Read registrations from ``sock`` until end of file, then remove
    every file still registered that is still the one registered, and
    every System V segment likewise; meanwhile and afterwards, remove the
    side files of the rings in custody once nobody else holds them."""
    names: Dict[bytes, Tuple[int, int]] = {}
    segments: Dict[int, Tuple[int, int]] = {}   # shmid -> (key, creator pid)
    custody = _Custody()
    pending = b""
    fds: List[int] = []   # received with "+side" lines, in order
    while True:
        ready, _, _ = select.select([sock], [], [], POLL if custody.rings else None)
        if not ready:
            custody.settle()
            continue
        try:
            data, received, _, _ = socket.recv_fds(sock, 1 << 16, 64)
        except InterruptedError:
            continue
        except OSError:
            data, received = b"", []
        fds.extend(received)
        if not data:
            break
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            _apply(line.split(), names, segments, custody, fds)
        custody.settle()
    for unclaimed in fds:
        os.close(unclaimed)
    for shmid, (key, segment_creator) in segments.items():
        _remove_segment(key, shmid, segment_creator)
    for path, (dev, ino) in names.items():
        held = open_same_file(path, dev, ino)
        if held is None:
            continue
        if not _still_ours(held, creator_pid):
            os.close(held)
            continue
        try:
            os.unlink(path)
        except OSError:
            pass
        custody.take(held, _identity_of(held))
    # Our creator is gone; its rings' side files go with their last user.
    custody.settle()
    while custody.rings:
        time.sleep(POLL)
        custody.settle()


def _apply(parts: List[bytes], names: Dict[bytes, Tuple[int, int]],
           segments: Dict[int, Tuple[int, int]], custody: _Custody, fds: List[int]) -> None:
    """One registration line."""
    if len(parts) == 2 and parts[0] == b"+side":
        if fds:
            identity = parts[1].decode(errors="replace")
            valid = len(identity) == 32 and all(c in "0123456789abcdef" for c in identity)
            custody.take(fds.pop(0), identity if valid else "")
        return
    if len(parts) != 4:
        return
    try:
        op, first, second = parts[0], int(parts[1]), int(parts[2])
        if op in (b"+sysv", b"-sysv"):
            if op == b"+sysv":
                segments[second] = (first, int(parts[3]))
            else:
                segments.pop(second, None)
            return
        path = bytes.fromhex(parts[3].decode())
    except ValueError:
        return
    if op == b"+":
        names[path] = (first, second)
    elif op == b"-":
        names.pop(path, None)


if __name__ == "__main__":
    # Only the end of the socket ends the watcher.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # The creator's child ends at once and the watcher goes on as its own
    # child, which nobody waits for: a creator that waits for all of its
    # children (os.wait() until ECHILD) never waits for its watcher.
    if os.fork() != 0:
        os._exit(0)
    watch(socket.socket(fileno=0), int(sys.argv[1]))
