"""Ring: naming, creation and attachment, lifecycle, pickling, argument checks.

The hot methods (put, get, put_many, get_many, ...) are inherited from the
compiled RingCore; this module adds what runs once per ring, in plain Python.
posix_ipc lives here and nowhere else.
"""

from __future__ import annotations

import contextlib
import errno
import multiprocessing.context
import multiprocessing.reduction
import multiprocessing.util
import os
import secrets
import time
import warnings
import weakref
from typing import Any, Iterator, Optional

import posix_ipc

from ringshm._ring import HEADER_SIZE, MAX_CAPACITY, MIN_CAPACITY, RingCore
from ringshm.errors import RingCorrupted, RingExists, RingNotFound, ShutDown

__all__ = ["Ring", "SHM_PREFIX"]

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


def _shm_name(name: str) -> str:
    return "/" + SHM_PREFIX + name


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, not {type(name).__name__}")
    if not name:
        raise ValueError("name must not be empty")
    if "/" in name or "\0" in name:
        raise ValueError(f"name must not contain '/' or NUL: {name!r}")
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


def _remove(kind: str, where: str, creator_pid: int) -> None:
    """Unlink a ring's name; run by the creating object's finalizer.  A
    forked child inherits the finalizer: only the creating process acts."""
    if os.getpid() != creator_pid:
        return
    with contextlib.suppress(OSError, posix_ipc.Error):
        if kind == "shm":
            posix_ipc.unlink_shared_memory(where)
        else:
            os.unlink(where)


class Ring(RingCore):
    """Bytes messages between processes through a shared-memory ring.

    Make one with Ring.create(), Ring.open() or Ring.anonymous(); see the
    README for a tour and SPEC.md for the contract.
    """

    # Class-level defaults, so close() and __del__ work even after a
    # constructor that failed half-way.
    _name: Optional[str] = None
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
               spin: float = DEFAULT_SPIN, max_messages: int = 0) -> "Ring":
        """Create and initialise a new ring.

        Args:
            name: POSIX shared-memory name (no '/'); None picks a unique one.
            capacity: bytes of the data area, rounded up to a power of two
                (at least 4096); `r.capacity` tells the real size.
            path: create a file-backed ring at this path instead of a name.
            mode: permission bits of the segment (0o600: this user only).
            exist_ok: open the ring if it already exists instead of failing.
            persist: keep the name when this object is closed or collected.
            recovery_interval: seconds a dead lock holder may block the
                others before they take the lock over.
            spin: microseconds to busy-wait before sleeping (0: never).
            max_messages: at most this many messages in the ring (0: no limit).

        Raises:
            RingExists: the name or path exists (and exist_ok is false).
            PermissionError: the system refused.
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
        if path is not None:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
            except FileExistsError:
                if exist_ok:
                    return cls.open(path=path)
                raise RingExists(errno.EEXIST, "ring file exists", path) from None
            self._path = path
            kind, where = "file", path
        else:
            shm = None
            while shm is None:
                shm_name = _shm_name(name if name is not None else _unique_name())
                try:
                    shm = posix_ipc.SharedMemory(shm_name, posix_ipc.O_CREX, mode=mode)
                except posix_ipc.ExistentialError:
                    if name is None:
                        continue   # a unique name that was not: draw again
                    if exist_ok:
                        return cls.open(name)
                    raise RingExists(errno.EEXIST, "ring exists", name) from None
                except posix_ipc.PermissionsError as e:
                    raise PermissionError(errno.EACCES, str(e), name) from None
            fd = shm.fd
            self._name = shm_name[1 + len(SHM_PREFIX):]
            kind, where = "shm", shm_name
        try:
            # shm_open's mode is filtered by the umask: set exactly what was asked.
            os.fchmod(fd, mode)
            os.ftruncate(fd, size)
            self._map(fd, size)
            self._initialize(cap, recovery_interval, spin, max_messages)
        except BaseException:
            self._detach()
            _remove(kind, where, os.getpid())
            raise
        finally:
            os.close(fd)
        if not persist:
            self._finalizer = weakref.finalize(self, _remove, kind, where, os.getpid())
        return self

    @classmethod
    def open(cls, name: Optional[str] = None, *, path: Optional[str] = None) -> "Ring":
        """Attach to an existing ring by name or path; validates it first.
        Never unlinks anything.

        Raises:
            RingNotFound: no such ring.
            RingCorrupted: the segment is not a valid ring of this version.
            PermissionError: the segment's mode forbids this user.
        """
        if (name is None) == (path is None):
            raise TypeError("Ring.open() needs exactly one of name or path")
        self = cls.__new__(cls)
        if path is not None:
            path = _check_path(path)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                raise RingNotFound(errno.ENOENT, "no such ring file", path) from None
            self._path = path
        else:
            _check_name(name)
            try:
                fd = posix_ipc.SharedMemory(_shm_name(name)).fd  # type: ignore[arg-type]
            except posix_ipc.ExistentialError:
                raise RingNotFound(errno.ENOENT, "no such ring", name) from None
            except posix_ipc.PermissionsError as e:
                raise PermissionError(errno.EACCES, str(e), name) from None
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
        """A ring with no name, shared with the children forked after it
        (MAP_SHARED | MAP_ANONYMOUS).  It cannot be pickled.

        Raises:
            TypeError, ValueError: a bad argument.
        """
        cap = _round_capacity(capacity)
        recovery_interval = _check_number(recovery_interval, "recovery_interval", 0.001, 60.0)
        spin = _check_number(spin, "spin", 0.0, 1e6)
        max_messages = _check_max_messages(max_messages)
        self = cls.__new__(cls)
        self._anonymous = True
        self._map(-1, HEADER_SIZE + cap)
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
        if self._finalizer is not None:
            self._finalizer.detach()
        try:
            if self._name is not None:
                posix_ipc.unlink_shared_memory(_shm_name(self._name))
            elif self._path is not None:
                os.unlink(self._path)
            else:
                raise TypeError("an anonymous ring has no name to unlink")
        except (posix_ipc.ExistentialError, FileNotFoundError):
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
    if name is not None:
        try:
            fd = posix_ipc.SharedMemory(_shm_name(name)).fd
        except posix_ipc.ExistentialError:
            raise RingNotFound(errno.ENOENT, "the ring's name is gone: a child "
                               "cannot be handed it", name) from None
    else:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)  # type: ignore[arg-type]
    popen = multiprocessing.context.get_spawning_popen()
    # The child receives its copy when the process is launched; ours is
    # closed once that Popen object goes away.
    multiprocessing.util.Finalize(popen, os.close, (fd,))
    return (_open_inherited, (multiprocessing.reduction.DupFd(fd), name, path))


def _open_inherited(dup: Any, name: Optional[str], path: Optional[str]) -> Ring:
    fd = dup.detach()
    try:
        if os.fstat(fd).st_uid != os.geteuid():
            raise PermissionError(errno.EPERM, "a ring handed over by another user "
                                  "is not attached", name or path)
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
