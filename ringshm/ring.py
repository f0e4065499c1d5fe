"""Ring: creation and attachment, lifecycle, pickling, argument checks.

The hot methods (put, get, put_many, get_many, ...) are inherited from the
compiled RingCore; this module adds what runs once per ring, in plain Python.
What a topic (ringshm/topic.py) shares with a ring, making and attaching its
segment through a backing, closing and pickling, is the Segment mixin here.
Where the bytes live (a POSIX shared-memory name, a file, an anonymous memfd,
a System V segment) is a Backing's business (ringshm/_backing.py): nothing
here asks which one a ring has.
"""

from __future__ import annotations

import errno
import multiprocessing.context
import multiprocessing.reduction
import multiprocessing.util
import os
import time
import warnings
import weakref
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, TypeVar

from ringshm._backing import (
    SHM_DIR,
    SHM_PREFIX,
    Backing,
    check_name,
    check_path,
    check_sysv_key,
    open_file,
    shm_path,
)
from ringshm._file_backing import FileBacking, MemfdBacking, ShmBacking
from ringshm._ring import HEADER_SIZE, MAX_CAPACITY, MIN_CAPACITY, RingCore
from ringshm._sysv_backing import SysvBacking
from ringshm._typing import Self
from ringshm.errors import RingCorrupted, RingExists, RingWrongKind, ShutDown

if TYPE_CHECKING:
    from ringshm._ring import SegmentCore as _Core
else:
    # At run time Segment is a plain mixin: the compiled base comes with
    # RingCore or TopicCore, after it in the subclass's bases.
    _Core = object

__all__ = ["Ring", "SHM_DIR", "SHM_PREFIX", "shm_path"]

DEFAULT_CAPACITY = 1 << 20
DEFAULT_RECOVERY_INTERVAL = 0.1   # seconds
# Spinning only helps when the peer can run at the same time.
DEFAULT_SPIN = 50.0 if (os.cpu_count() or 1) > 1 else 0.0   # microseconds
T = TypeVar("T")
# How long open() waits for a creator that is still writing the header.
CREATOR_GRACE = 1.0


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


def check_settings(capacity: object, recovery_interval: object,
                   spin: object) -> tuple[int, float, float]:
    """The capacity (rounded), recovery_interval and spin of a create call,
    checked: what a ring's and a topic's headers both record.

    Raises:
        TypeError, ValueError: a bad one (the message names it).
    """
    return (_round_capacity(capacity),
            _check_number(recovery_interval, "recovery_interval", 0.001, 60.0),
            _check_number(spin, "spin", 0.0, 1e6))


def until_shut_down(get: Callable[[], T]) -> Iterator[T]:
    """get() until it raises ShutDown: the iteration of a ring, a queue's
    or a topic's subscription."""
    while True:
        try:
            yield get()
        except ShutDown:
            return


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


def backing_for(name: Optional[str], path: Optional[str], sysv_key: Optional[int]) -> Backing:
    """The backing of ``Ring.create``/``open``'s arguments (name None too:
    a fresh unique name).

    Raises:
        ValueError, TypeError: more than one given, or a bad one.
    """
    if sum(x is not None for x in (name, path, sysv_key)) > 1:
        raise ValueError("give one of name, path or sysv_key, not several")
    if path is not None:
        return FileBacking(check_path(path))
    if sysv_key is not None:
        return SysvBacking(check_sysv_key(sysv_key))
    if name is not None:
        check_name(name)
    return ShmBacking(name)


def _remove(backing: Backing, creator_pid: int) -> None:
    """Remove what the creating object made; run by its finalizer.  A forked
    child inherits the finalizer: only the creating process acts."""
    if os.getpid() == creator_pid:
        backing.remove()


class Segment(_Core):
    """What Ring and Topic (ringshm/topic.py) share: making and attaching a
    segment through a Backing, its attributes, closing, pickling by name.
    A mixin of a SegmentCore subclass: Ring(Segment, RingCore),
    Topic(Segment, TopicCore).  A subclass names its kind and writes its
    header with ``_initialize(capacity, recovery_interval, spin, extra,
    ephemeral=)`` (extra: a ring's max_messages, a topic's history)."""

    # Class-level defaults, so close() and __del__ work even after a
    # constructor that failed half-way.
    _backing: Backing = MemfdBacking()
    _finalizer: Optional[weakref.finalize[Any, Any]] = None
    #: "ring" or "topic"; the other kind and how to open it.
    _KIND = "ring"
    _OTHER_KIND = ("topic", "Topic.open()")

    @classmethod
    def _make(cls, backing: Backing, size: int, settings: tuple[int, float, float, int], *,
              mode: int, exist_ok: bool, persist: bool, reserve: bool,
              any_owner: bool) -> Self:
        """create()'s work once the arguments are checked: make the storage
        of `size` bytes and write the header of `settings`, or (exist_ok)
        attach what exists."""
        self = cls.__new__(cls)
        self._backing = backing
        if backing.make(mode, size, reserve):
            if self._initialize_in(backing, settings, persist, size, reserve, made=True):
                return self
        elif not exist_ok:
            raise RingExists(errno.EEXIST, f"{cls._KIND} exists", backing.label)
        else:
            backing.find(any_owner)
            if backing.adopts_blank and backing.size() >= size and \
                    self._initialize_in(backing, settings, persist, size, reserve, made=False):
                return self
        # Another process initialises it (or did): attach as any opener.
        try:
            self._attach_existing(backing)
        except RingWrongKind:
            raise
        except RingCorrupted as exc:
            if backing.adopts_blank and backing.size() < size:
                raise RingCorrupted(
                    f"{backing.label}: {exc}; and it is too small to be made a {cls._KIND} "
                    f"of capacity {settings[0]}: {backing.size()} bytes, {size} "
                    "needed") from None
            raise
        return self

    def _initialize_in(self, backing: Backing, settings: tuple[int, float, float, int],
                       persist: bool, size: int, reserve: bool, made: bool) -> bool:
        """Write the header into fresh storage (``made``: this process made
        it) or into a blank segment it found; False when another process
        claimed the blank segment first (nothing was changed then)."""
        creator = os.getpid()
        try:
            if made:
                if not persist:
                    backing.watch()
                backing.allocate(size, reserve)
            self._use(backing.map(size if made else backing.size()))
            if not self._claim_blank(not made):
                # A racing create(exist_ok=True) adopted what we made: it is
                # that process's segment now, to initialise and to remove.
                self._detach()
                backing.disown()
                return False
            if not made and not persist:
                backing.watch()
            backing.bind_liveness(self, creating=True)
            self._initialize(*settings, ephemeral=not persist)
            if not made:
                backing.adopt()
        except BaseException:
            self._detach()
            _remove(backing, creator)
            raise
        finally:
            backing.release()
        if not persist:
            self._finalizer = weakref.finalize(self, _remove, backing, creator)
        return True

    @classmethod
    def _open(cls, name: Optional[str], path: Optional[str], sysv_key: Optional[int],
              any_owner: bool) -> Self:
        if sum(x is not None for x in (name, path, sysv_key)) != 1:
            raise TypeError(f"{cls.__name__}.open() needs exactly one of name, path or "
                            "sysv_key")
        backing = backing_for(name, path, sysv_key)
        backing.find(any_owner)
        self = cls.__new__(cls)
        self._backing = backing
        self._attach_existing(backing)
        return self

    def _attach_existing(self, backing: Backing) -> None:
        # A creator that won the race of create(exist_ok=True) may still be
        # sizing the segment or writing its header: give it a moment.
        give_up = time.monotonic() + CREATOR_GRACE
        try:
            while True:
                size = backing.size()
                if size >= HEADER_SIZE:
                    self._use(backing.map(size))
                    if self._magic_present() or time.monotonic() > give_up:
                        break
                    self._detach()
                elif time.monotonic() > give_up:
                    raise RingCorrupted(f"segment is truncated: {size} bytes, "
                                        f"less than one header ({HEADER_SIZE})")
                time.sleep(0.005)
            try:
                backing.bind_liveness(self, creating=False)
                self._validate(size, backing.exact_size)
            except RingWrongKind:
                self._detach()
                other, how = self._OTHER_KIND
                raise RingWrongKind(f"{backing.label!r} is a {other}, not a {self._KIND}: "
                                    f"use {how}") from None
            except BaseException:
                self._detach()
                raise
        finally:
            backing.release()

    @classmethod
    def _anonymous(cls, size: int, settings: tuple[int, float, float, int]) -> Self:
        self = cls.__new__(cls)
        backing = self._backing = MemfdBacking()
        backing.make(0o600, size, False)
        try:
            backing.allocate(size, False)
            self._use(backing.map(size))
        finally:
            backing.release()
        self._initialize(*settings)
        return self

    # -- attributes ----------------------------------------------------------

    @property
    def name(self) -> Optional[str]:
        """The name (None for anonymous, file-backed and System V segments)."""
        name: Optional[str] = getattr(self._backing, "name", None)
        return name

    @property
    def path(self) -> Optional[str]:
        """The backing file of a file-backed ring, else None."""
        backing = self._backing
        if isinstance(backing, FileBacking) and not isinstance(backing, ShmBacking):
            return backing.where
        return None

    @property
    def sysv_key(self) -> Optional[int]:
        """The System V key of a ring in a System V segment, else None."""
        key: Optional[int] = getattr(self._backing, "key", None)
        return key

    @property
    def _inode(self) -> tuple[int, int]:
        """(st_dev, st_ino) of the segment's file: which file it is, whatever
        its name; (0, 0) for a ring in no file of /dev/shm or a path."""
        return self._backing.inode

    @property
    def backing(self) -> str:
        """Where the ring lives: "shm", "file", "anonymous" or "sysv"."""
        return self._backing.kind

    @property
    def identity(self) -> str:
        """128 random bits written by the creator, as 32 hex digits: which
        ring this is, whatever its name (the NATS bridges' message ids).
        All zeros for a ring made before ringshm wrote one.

        Raises:
            ValueError: the ring is closed.
        """
        return self._identity().hex()

    # -- lifecycle -----------------------------------------------------------

    def close(self) -> None:
        """Detach this process (idempotent).  The creating object also
        removes the name (the segment of a System V ring), unless it was
        created with persist=True."""
        if not self.closed:
            self._detach()
        if self._finalizer is not None:
            self._finalizer()

    def unlink(self) -> None:
        """Remove the name, file or System V key (IPC_RMID, and its lock
        file); processes already attached keep working.

        Raises:
            RingNotFound: the name is already gone.
            TypeError: an anonymous ring has no name.
        """
        if self._finalizer is not None:
            self._finalizer.detach()
        self._backing.unlink()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not self.closed and self._finalizer is None and \
                not isinstance(self._backing, MemfdBacking):
            # Attached with open() and dropped without close(): harmless (the
            # mapping goes with the object), but worth a hint.
            warnings.warn(f"unclosed {self!r}", ResourceWarning, source=self, stacklevel=2)

    # -- pickling ------------------------------------------------------------

    def __reduce__(self) -> tuple[Any, ...]:
        backing = self._backing
        where = backing.pickle_as()   # TypeError: shared only by fork
        if backing.hands_descriptor and multiprocessing.context.get_spawning_popen() is not None:
            assert isinstance(backing, FileBacking)
            return reduce_for_spawned_child(backing, type(self))
        return open_segment, (type(self), where)


class Ring(Segment, RingCore):
    """Bytes messages between processes through a shared-memory ring.

    Make one with Ring.create(), Ring.open() or Ring.anonymous(); see the
    README for a tour and docs/RELIABILITY.md for what survives a crash.
    """

    def __init__(self) -> None:
        raise TypeError("use Ring.create(), Ring.open() or Ring.anonymous()")

    # -- making and attaching ------------------------------------------------

    @classmethod
    def create(cls, name: Optional[str] = None, capacity: int = DEFAULT_CAPACITY, *,
               path: Optional[str] = None, sysv_key: Optional[int] = None, mode: int = 0o600,
               exist_ok: bool = False, persist: bool = False,
               recovery_interval: float = DEFAULT_RECOVERY_INTERVAL,
               spin: float = DEFAULT_SPIN, max_messages: int = 0, reserve: bool = True,
               any_owner: bool = False) -> "Ring":
        """Create and initialise a new ring.

        Args:
            name: POSIX shared-memory name (no '/', no control characters);
                None (and no path or sysv_key) picks a unique one.
            capacity: bytes of the data area, rounded up to a power of two
                (at least 4096); `r.capacity` tells the real size.
            path: create a file-backed ring at this path instead of a name.
            sysv_key: create the ring in a System V shared-memory segment
                of this key (shmget; `ftok()` makes one from a path).  With
                exist_ok, a segment of that key that is all zero and large
                enough (a C program's shmget) is initialised as a ring.
            mode: permission bits of the segment (0o600: this user only).
            exist_ok: open the ring if it already exists instead of failing.
            persist: keep the name when this object is closed or collected.
                Without it the name (a System V segment: the key and the
                segment, IPC_RMID) goes with this process too, however it
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
            RingExists: the name, path or key exists (and exist_ok is false).
            RingNoSpace: reserve=True and too little room for the segment.
            RingPermissionError: the system refused, or (exist_ok) as open().
            RingCorrupted: (exist_ok) what exists is not a ring, nor blank.
            RingWrongKind: (exist_ok) what exists is a topic.
            TypeError, ValueError: a bad argument (the message names it).
        """
        cap, recovery_interval, spin = check_settings(capacity, recovery_interval, spin)
        mode = _check_mode(mode)
        max_messages = _check_max_messages(max_messages)
        backing = backing_for(name, path, sysv_key)
        return cls._make(backing, HEADER_SIZE + cap, (cap, recovery_interval, spin, max_messages),
                         mode=mode, exist_ok=exist_ok, persist=persist, reserve=reserve,
                         any_owner=any_owner)

    @classmethod
    def open(cls, name: Optional[str] = None, *, path: Optional[str] = None,
             sysv_key: Optional[int] = None, any_owner: bool = False) -> "Ring":
        """Attach to an existing ring by name, path or System V key;
        validates it first.  Never removes anything.

        A segment that belongs to another user is refused before one byte
        of it is read, unless `any_owner` is true: whoever owns it can read
        every message and write any bytes into it.  `path` never follows a
        symbolic link at its last component.  A System V segment's owner and
        creator (shm_perm.uid and cuid) must both be this user, and its lock
        file, /dev/shm/ringshm-sysv.0xKEY, must be the one its creator made.

        Raises:
            RingNotFound: no such ring.
            RingWrongKind: a topic (use Topic.open()); nothing is changed.
            RingCorrupted: not a regular file or segment, or not a valid
                ring of this version.
            RingPermissionError: another user's segment (without any_owner),
                a symbolic link, or the segment's mode forbids this user.
        """
        return cls._open(name, path, sysv_key, any_owner)

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
        cap, recovery_interval, spin = check_settings(capacity, recovery_interval, spin)
        max_messages = _check_max_messages(max_messages)
        return cls._anonymous(HEADER_SIZE + cap, (cap, recovery_interval, spin, max_messages))

    def __repr__(self) -> str:
        where = self._backing.describe()
        if self.closed:
            return f"<Ring {where} closed>"
        return f"<Ring {where} capacity={self.capacity} messages={len(self)}>"

    # -- iteration -----------------------------------------------------------

    def __iter__(self) -> Iterator[bytes]:
        """get() until the ring is shut down and drained."""
        return until_shut_down(self.get)


# -- a child being spawned gets the segment itself, not only its name --------
# Process.start() pickles its arguments, and a spawned (or forkserver) child
# unpickles them later: by then the parent may have closed the creating ring
# and its name may be gone.  As multiprocessing does for its own resources,
# the child is handed a duplicate of a descriptor of the segment (DupFd).

def reduce_for_spawned_child(backing: FileBacking, cls: type[Segment]) -> tuple[Any, ...]:
    """Pickle a file-backed or named ring or topic (of class `cls`) for a
    child being spawned now."""
    fd = open_file(backing.where, backing.label, False)
    popen = multiprocessing.context.get_spawning_popen()
    # The child receives its copy when the process is launched; ours is
    # closed once that Popen object goes away.
    multiprocessing.util.Finalize(popen, os.close, (fd,))
    where = backing.pickle_as()
    return (_open_inherited, (multiprocessing.reduction.DupFd(fd), where.get("name"),
                              where.get("path"), cls))


def _open_inherited(dup: Any, name: Optional[str], path: Optional[str],
                    cls: type[Segment] = Ring) -> Segment:
    backing = backing_for(name, path, None)
    assert isinstance(backing, FileBacking)
    fd = dup.detach()
    try:
        # The owner rule, as for every unpickled ring: no opt-out.
        backing.adopt_descriptor(fd)
    except BaseException:
        os.close(fd)
        raise
    self = cls.__new__(cls)
    self._backing = backing
    self._attach_existing(backing)
    return self


def open_segment(cls: type[Segment], where: dict[str, Any]) -> Segment:
    """cls.open(**where): how a pickled ring or topic is reopened (the
    owner rule applies, no opt-out)."""
    return cls._open(where.get("name"), where.get("path"), where.get("sysv_key"), False)
