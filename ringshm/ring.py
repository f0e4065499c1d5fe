"""Ring: naming, creation and attachment, lifecycle, pickling, argument checks.

The hot methods (put, get, put_many, get_many, ...) are inherited from the
compiled RingCore; this module adds what runs once per ring, in plain Python.

A named ring is the file /dev/shm/ringshm.NAME, opened here with os.open
as glibc's shm_open would, so that we choose the flags (never follow a
symbolic link, never block on a FIFO) and look at the file (fstat) before
one byte of it is mapped: see "The owner rule" in docs/DESIGN.md.
"""

from __future__ import annotations

import contextlib
import errno
import multiprocessing.context
import multiprocessing.reduction
import multiprocessing.util
import os
import secrets
import stat
import time
import warnings
import weakref
from typing import Any, Iterator, Optional

from ringshm import watcher
from ringshm._ring import HEADER_SIZE, MAX_CAPACITY, MIN_CAPACITY, RingCore
from ringshm.errors import (
    RingCorrupted,
    RingExists,
    RingNoSpace,
    RingNotFound,
    RingPermissionError,
    ShutDown,
)

__all__ = ["Ring", "SHM_PREFIX", "shm_path"]

#: Every named ring is the POSIX shared-memory object "/" + SHM_PREFIX + name
#: (on Linux the file /dev/shm/ringshm.NAME), so `ringshm ls` can find them.
SHM_PREFIX = "ringshm."
SHM_DIR = "/dev/shm"
# NAME_MAX of the shm file system, less our prefix.
MAX_NAME_LENGTH = 255 - len(SHM_PREFIX)

DEFAULT_CAPACITY = 1 << 20
DEFAULT_RECOVERY_INTERVAL = 0.1   # seconds
# Spinning only helps when the peer can run at the same time.
DEFAULT_SPIN = 50.0 if (os.cpu_count() or 1) > 1 else 0.0   # microseconds
# How long open() waits for a creator that is still writing the header.
CREATOR_GRACE = 1.0
# Attaching never follows a final symbolic link, never blocks (a FIFO, a
# device), never makes a terminal ours.
_ATTACH_FLAGS = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_CREATE_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def shm_path(name: str) -> str:
    """The file of the named ring: /dev/shm/ringshm.NAME."""
    return os.path.join(SHM_DIR, SHM_PREFIX + name)


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, not {type(name).__name__}")
    if not name:
        raise ValueError("name must not be empty")
    if "/" in name:
        raise ValueError(f"name must not contain '/': {name!r}")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        # They would forge rows in `ringshm ls` and in a terminal.
        raise ValueError(f"name must not contain control characters: {name!r}")
    if name in (".", ".."):
        raise ValueError(f"name must not be {name!r}")
    if len(os.fsencode(name)) > MAX_NAME_LENGTH:
        raise ValueError(f"name is longer than {MAX_NAME_LENGTH} bytes")
    return name


def _check_path(path: object) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
    path = os.fspath(path)
    if "\0" in path:
        raise ValueError("path must not contain NUL")
    return path


def _round_capacity(capacity: object) -> int:
    if isinstance(capacity, bool) or not isinstance(capacity, int):
        raise TypeError(f"capacity must be an int, not {type(capacity).__name__}")
    if capacity <= 0:
        raise ValueError(f"capacity must be positive, not {capacity}")
    if capacity > MAX_CAPACITY:
        raise ValueError(f"capacity must be at most {MAX_CAPACITY} bytes")
    # A power of two (positions are counters masked by capacity - 1) and at
    # least a page (the data area stays page-aligned).
    return max(MIN_CAPACITY, 1 << (capacity - 1).bit_length())


def _check_number(value: object, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if not (low <= value <= high):
        raise ValueError(f"{name} must be between {low} and {high}, not {value!r}")
    return float(value)


def _check_max_messages(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_messages must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"max_messages must be 0 (no limit) or positive, not {value}")
    return value


def _check_mode(mode: object) -> int:
    if isinstance(mode, bool) or not isinstance(mode, int):
        raise TypeError(f"mode must be an int such as 0o600, not {type(mode).__name__}")
    if not 0 <= mode <= 0o777:
        raise ValueError(f"mode must be between 0 and 0o777, not {oct(mode)}")
    return mode


def _kind_of(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "not a regular file"


def _refuse(st: os.stat_result, label: str, any_owner: bool) -> None:
    """Raise unless ``st`` is a regular file that this process may attach.

    Raises:
        RingCorrupted: not a regular file.
        RingPermissionError: a symbolic link, or owned by another user and
            not ``any_owner``.
    """
    if stat.S_ISLNK(st.st_mode):
        raise RingPermissionError(errno.ELOOP, "refusing to follow a symbolic link", label)
    if not stat.S_ISREG(st.st_mode):
        raise RingCorrupted(f"{label!r} is not a ring: {_kind_of(st.st_mode)}")
    euid = os.geteuid()
    if not any_owner and st.st_uid != euid:
        raise RingPermissionError(
            errno.EPERM, f"the segment belongs to uid {st.st_uid}, not to this user "
            f"(uid {euid}); another user could read or forge its messages "
            f"(any_owner=True attaches anyway)", label)


def _open_segment(where: str, label: str, any_owner: bool) -> int:
    """Open an existing segment or ring file to attach it; returns the fd.
    Looked at before (lstat: devices and FIFOs are never opened) and after
    opening (fstat of what was opened: no race with a rename).

    Raises:
        RingNotFound: no such file.
        RingCorrupted: not a regular file.
        RingPermissionError: a symbolic link, another user's file (see
            _refuse), or the file's mode forbids this user.
    """
    try:
        _refuse(os.lstat(where), label, True)
        fd = os.open(where, _ATTACH_FLAGS)
    except FileNotFoundError:
        raise RingNotFound(errno.ENOENT, "no such ring", label) from None
    except PermissionError as e:
        raise RingPermissionError(e.errno, e.strerror, label) from None
    except OSError as e:
        if e.errno == errno.ELOOP:   # a symbolic link appeared after the lstat
            raise RingPermissionError(errno.ELOOP, "refusing to follow a symbolic link",
                                      label) from None
        if e.errno in (errno.EISDIR, errno.ENXIO):
            raise RingCorrupted(f"{label!r} is not a ring: {e.strerror}") from None
        raise
    try:
        _refuse(os.fstat(fd), label, any_owner)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _reserve(fd: int, size: int, label: str) -> None:
    """Allocate ``size`` bytes of the file behind ``fd`` now, so that a page
    is never missing later (a SIGBUS on a full /dev/shm).

    Raises:
        RingNoSpace: the file system has too little room.
    """
    vfs = os.fstatvfs(fd)
    # tmpfs without a size limit reports no blocks at all: no figure to check.
    free = vfs.f_bavail * vfs.f_frsize if vfs.f_blocks else None
    if free is not None and free < size:
        raise RingNoSpace(size, free, label)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise RingNoSpace(size, free, label) from None
        raise


def _remove(where: str, creator_pid: int) -> None:
    """Unlink a ring's name; run by the creating object's finalizer.  A
    forked child inherits the finalizer: only the creating process acts."""
    if os.getpid() != creator_pid:
        return
    with contextlib.suppress(OSError):
        os.unlink(where)
    watcher.unregister(where)


class Ring(RingCore):
    """Bytes messages between processes through a shared-memory ring.

    Make one with Ring.create(), Ring.open() or Ring.anonymous(); see the
    README for a tour and SPEC.md for the contract.
    """

    # Class-level defaults, so close() and __del__ work even after a
    # constructor that failed half-way.
    _name: Optional[str] = None
    #: (st_dev, st_ino) of the segment: which file it is, whatever its name.
    _inode: tuple[int, int] = (0, 0)
    _path: Optional[str] = None
    _finalizer: Optional[weakref.finalize[Any, Any]] = None
    _anonymous = False

    def __init__(self) -> None:
        raise TypeError("use Ring.create(), Ring.open() or Ring.anonymous()")

    # -- making and attaching ------------------------------------------------

    @classmethod
    def create(cls, name: Optional[str] = None, capacity: int = DEFAULT_CAPACITY, *,
               path: Optional[str] = None, mode: int = 0o600, exist_ok: bool = False,
               persist: bool = False, recovery_interval: float = DEFAULT_RECOVERY_INTERVAL,
               spin: float = DEFAULT_SPIN, max_messages: int = 0, reserve: bool = True,
               any_owner: bool = False) -> "Ring":
        """Create and initialise a new ring.

        Args:
            name: POSIX shared-memory name (no '/', no control characters);
                None picks a unique one.
            capacity: bytes of the data area, rounded up to a power of two
                (at least 4096); `r.capacity` tells the real size.
            path: create a file-backed ring at this path instead of a name.
            mode: permission bits of the segment (0o600: this user only).
            exist_ok: open the ring if it already exists instead of failing.
            persist: keep the name when this object is closed or collected.
                Without it the name goes with this process too, however it
                dies (a watcher process removes it, see docs/DESIGN.md).
            recovery_interval: seconds a dead lock holder may block the
                others before they take the lock over.
            spin: microseconds to busy-wait before sleeping (0: never).
            max_messages: at most this many messages in the ring (0: no limit).
            reserve: allocate the whole segment now, so that a full
                /dev/shm is an error here and never a SIGBUS later; False
                makes a sparse segment whose pages are taken when written.
            any_owner: with exist_ok, attach an existing ring of another
                user too (see open()).

        Raises:
            RingExists: the name or path exists (and exist_ok is false).
            RingNoSpace: reserve=True and too little room for the segment.
            RingPermissionError: the system refused, or (exist_ok) as open().
            TypeError, ValueError: a bad argument (the message names it).
        """
        if name is not None and path is not None:
            raise ValueError("give either name or path, not both")
        cap = _round_capacity(capacity)
        mode = _check_mode(mode)
        recovery_interval = _check_number(recovery_interval, "recovery_interval", 0.001, 60.0)
        spin = _check_number(spin, "spin", 0.0, 1e6)
        max_messages = _check_max_messages(max_messages)
        if path is not None:
            path = _check_path(path)
        elif name is not None:
            _check_name(name)
        size = HEADER_SIZE + cap

        self = cls.__new__(cls)
        while True:
            if path is not None:
                where, label = path, path
            else:
                label = name if name is not None else _unique_name()
                where = shm_path(label)
            try:
                fd = os.open(where, _CREATE_FLAGS, mode)
                break
            except FileExistsError:
                if path is None and name is None:
                    continue   # a unique name that was not: draw again
                if exist_ok:
                    return cls.open(name, path=path, any_owner=any_owner)
                raise RingExists(errno.EEXIST, "ring exists", label) from None
            except PermissionError as e:
                raise RingPermissionError(e.errno, e.strerror, label) from None
        if path is not None:
            self._path = path
        else:
            self._name = label
        creator = os.getpid()
        try:
            st = os.fstat(fd)
            self._inode = (st.st_dev, st.st_ino)
            if not persist:
                watcher.register(os.path.abspath(where), st.st_dev, st.st_ino)
            # open()'s mode is filtered by the umask: set exactly what was asked.
            os.fchmod(fd, mode)
            os.ftruncate(fd, size)
            if reserve:
                _reserve(fd, size, label)
            self._map(fd, size)
            self._initialize(cap, recovery_interval, spin, max_messages, ephemeral=not persist)
        except BaseException:
            self._detach()
            _remove(os.path.abspath(where), creator)
            raise
        finally:
            os.close(fd)
        if not persist:
            self._finalizer = weakref.finalize(self, _remove, os.path.abspath(where), creator)
        return self

    @classmethod
    def open(cls, name: Optional[str] = None, *, path: Optional[str] = None,
             any_owner: bool = False) -> "Ring":
        """Attach to an existing ring by name or path; validates it first.
        Never unlinks anything.

        A segment that belongs to another user is refused before one byte
        of it is read, unless `any_owner` is true: whoever owns it can read
        every message and write any bytes into it.  `path` never follows a
        symbolic link at its last component.

        Raises:
            RingNotFound: no such ring.
            RingCorrupted: not a regular file, or not a valid ring of this
                version.
            RingPermissionError: another user's segment (without any_owner),
                a symbolic link, or the segment's mode forbids this user.
        """
        if (name is None) == (path is None):
            raise TypeError("Ring.open() needs exactly one of name or path")
        self = cls.__new__(cls)
        if path is not None:
            path = _check_path(path)
            fd = _open_segment(path, path, any_owner)
            self._path = path
        else:
            _check_name(name)
            fd = _open_segment(shm_path(name), name, any_owner)  # type: ignore[arg-type]
            self._name = name
        try:
            self._attach_existing(fd)
        finally:
            os.close(fd)
        return self

    def _attach_existing(self, fd: int) -> None:
        # A creator that won the race of create(exist_ok=True) may still be
        # sizing the segment or writing its header: give it a moment.
        give_up = time.monotonic() + CREATOR_GRACE
        st = os.fstat(fd)
        self._inode = (st.st_dev, st.st_ino)
        while True:
            size = os.fstat(fd).st_size
            if size >= HEADER_SIZE:
                self._map(fd, size)
                if self._magic_present() or time.monotonic() > give_up:
                    break
                self._detach()
            elif time.monotonic() > give_up:
                raise RingCorrupted(f"segment is truncated: {size} bytes, "
                                    f"less than one header ({HEADER_SIZE})")
            time.sleep(0.005)
        try:
            self._validate(size)
        except BaseException:
            self._detach()
            raise

    @classmethod
    def anonymous(cls, capacity: int = DEFAULT_CAPACITY, *,
                  recovery_interval: float = DEFAULT_RECOVERY_INTERVAL,
                  spin: float = DEFAULT_SPIN, max_messages: int = 0) -> "Ring":
        """A ring with no name, shared with the children forked after it.
        It cannot be pickled.

        Raises:
            TypeError, ValueError: a bad argument.
            OSError: the system refused the memory.
        """
        cap = _round_capacity(capacity)
        recovery_interval = _check_number(recovery_interval, "recovery_interval", 0.001, 60.0)
        spin = _check_number(spin, "spin", 0.0, 1e6)
        max_messages = _check_max_messages(max_messages)
        self = cls.__new__(cls)
        self._anonymous = True
        # A memfd, not MAP_ANONYMOUS: lock-holder liveness needs a file to
        # hold OFD locks on (DESIGN.md, "Liveness").  It has no name, and
        # the mapping keeps what it needs: the descriptor is closed here.
        fd = os.memfd_create("ringshm-anonymous", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, HEADER_SIZE + cap)
            self._map(fd, HEADER_SIZE + cap)
        finally:
            os.close(fd)
        self._initialize(cap, recovery_interval, spin, max_messages)
        return self

    # -- attributes ----------------------------------------------------------

    @property
    def name(self) -> Optional[str]:
        """The ring's name (None for anonymous and file-backed rings)."""
        return self._name

    @property
    def path(self) -> Optional[str]:
        """The backing file of a file-backed ring, else None."""
        return self._path

    @property
    def identity(self) -> str:
        """128 random bits written by the creator, as 32 hex digits: which
        ring this is, whatever its name (the NATS bridges' message ids).
        All zeros for a ring made before ringshm wrote one.

        Raises:
            ValueError: the ring is closed.
        """
        return self._identity().hex()

    def __repr__(self) -> str:
        where = (f"name={self._name!r}" if self._name else
                 f"path={self._path!r}" if self._path else "anonymous")
        if self.closed:
            return f"<Ring {where} closed>"
        return f"<Ring {where} capacity={self.capacity} messages={len(self)}>"

    # -- iteration -----------------------------------------------------------

    def __iter__(self) -> Iterator[bytes]:
        """get() until the ring is shut down and drained."""
        while True:
            try:
                yield self.get()
            except ShutDown:
                return

    # -- lifecycle -----------------------------------------------------------

    def close(self) -> None:
        """Detach this process (idempotent).  The creating object also
        unlinks the name, unless it was created with persist=True."""
        if not self.closed:
            self._detach()
        if self._finalizer is not None:
            self._finalizer()

    def unlink(self) -> None:
        """Remove the name or file; processes already attached keep working.

        Raises:
            RingNotFound: the name is already gone.
            TypeError: an anonymous ring has no name.
        """
        if self._name is None and self._path is None:
            raise TypeError("an anonymous ring has no name to unlink")
        where = shm_path(self._name) if self._name is not None else str(self._path)
        if self._finalizer is not None:
            self._finalizer.detach()
            watcher.unregister(os.path.abspath(where))
        try:
            os.unlink(where)
        except FileNotFoundError:
            raise RingNotFound(errno.ENOENT, "no such ring",
                               self._name or self._path) from None

    def __enter__(self) -> "Ring":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not self.closed and self._finalizer is None and not self._anonymous:
            # Attached with open() and dropped without close(): harmless (the
            # mapping goes with the object), but worth a hint.
            warnings.warn(f"unclosed {self!r}", ResourceWarning, source=self, stacklevel=2)

    # -- pickling ------------------------------------------------------------

    def __reduce__(self) -> tuple[Any, ...]:
        if (self._name is not None or self._path is not None) and \
                multiprocessing.context.get_spawning_popen() is not None:
            return _reduce_for_spawned_child(self._name, self._path)
        if self._name is not None:
            return (_open_named, (self._name,))
        if self._path is not None:
            return (_open_file, (self._path,))
        raise TypeError("an anonymous ring cannot be pickled: it is shared only with "
                        "children made by fork; use Ring.create() for a named ring "
                        "to pass it to other processes")


# -- a child being spawned gets the segment itself, not only its name --------
# Process.start() pickles its arguments, and a spawned (or forkserver) child
# unpickles them later: by then the parent may have closed the creating ring
# and its name may be gone.  As multiprocessing does for its own resources,
# the child is handed a duplicate of a descriptor of the segment (DupFd).

def _reduce_for_spawned_child(name: Optional[str], path: Optional[str]) -> tuple[Any, ...]:
    where = shm_path(name) if name is not None else path
    fd = _open_segment(where, name or path, False)  # type: ignore[arg-type]
    popen = multiprocessing.context.get_spawning_popen()
    # The child receives its copy when the process is launched; ours is
    # closed once that Popen object goes away.
    multiprocessing.util.Finalize(popen, os.close, (fd,))
    return (_open_inherited, (multiprocessing.reduction.DupFd(fd), name, path))


def _open_inherited(dup: Any, name: Optional[str], path: Optional[str]) -> Ring:
    fd = dup.detach()
    try:
        # The owner rule, as for every unpickled ring: no opt-out.
        _refuse(os.fstat(fd), name or path or "ring", False)
        self = Ring.__new__(Ring)
        self._name, self._path = name, path
        self._attach_existing(fd)
    finally:
        os.close(fd)
    return self


def _open_named(name: str) -> Ring:
    return Ring.open(name)


def _open_file(path: str) -> Ring:
    return Ring.open(path=path)


def _unique_name() -> str:
    return f"{os.getpid()}-{secrets.token_hex(6)}"
