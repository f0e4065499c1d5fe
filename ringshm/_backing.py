"""Where a ring's bytes live: the interface of the four backings, and the
file handling they share.

Ring (ring.py) makes and attaches every ring through a Backing and never
asks which one it holds: a POSIX shared-memory name (the file
/dev/shm/ringshm.NAME), a file at a path, an anonymous memfd, or a System V
segment found by key.  A backing makes or finds the storage (the owner rule
before one byte is read), sizes it, maps it into a core Mapping, gives the
mapping the file its lock slots live on, and removes it.  The backings
are in _file_backing.py (name, path, memfd) and _sysv_backing.py (System
V).  See docs/DESIGN.md, "Backings".

Files are opened with os.open as glibc's shm_open would, so that we choose
the flags (never follow a symbolic link, never block on a FIFO) and look at
the file (fstat) before one byte of it is mapped.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from typing import Any, Optional, Tuple

from ringshm import watcher
from ringshm._ring import Mapping, SegmentCore
from ringshm.errors import RingCorrupted, RingNoSpace, RingNotFound, RingPermissionError

__all__ = ["Backing", "SHM_DIR", "SHM_PREFIX", "SYSV_COMPANION_PREFIX", "allocate_file",
           "check_name", "check_path", "check_sysv_key", "companion_path",
           "create_file", "open_file", "refuse", "refuse_owner", "shm_path", "signed_key",
           "unlink_same"]

#: Every named ring is the POSIX shared-memory object "/" + SHM_PREFIX + name
#: (on Linux the file /dev/shm/ringshm.NAME), so `ringshm ls` can find them.
SHM_PREFIX = "ringshm."
SHM_DIR = "/dev/shm"
#: A System V ring's lock slots live on /dev/shm/ringshm-sysv.0xKEY (not a
#: "ringshm." name: `ringshm ls` does not take it for a ring).
SYSV_COMPANION_PREFIX = "ringshm-sysv."
# NAME_MAX of the shm file system, less our prefix.
MAX_NAME_LENGTH = 255 - len(SHM_PREFIX)

# Attaching never follows a final symbolic link, never blocks (a FIFO, a
# device), never makes a terminal ours.
_ATTACH_FLAGS = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_CREATE_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def shm_path(name: str) -> str:
    """The file of the named ring: /dev/shm/ringshm.NAME."""
    return os.path.join(SHM_DIR, SHM_PREFIX + name)


def companion_path(key: int) -> str:
    """The lock file of the System V ring of ``key`` (an unsigned 32-bit
    key): /dev/shm/ringshm-sysv.0xKEY, the key as ``ipcs -m`` prints it."""
    return os.path.join(SHM_DIR, f"{SYSV_COMPANION_PREFIX}0x{key:08x}")


def check_name(name: object) -> str:
    """``name`` if it can name a ring.

    Raises:
        TypeError: not a str.
        ValueError: empty, with '/' or control characters, '.' or '..',
            or too long.
    """
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


def check_path(path: object) -> str:
    """``path`` as a str.

    Raises:
        TypeError: not a str or os.PathLike.
        ValueError: holds NUL.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
    path = os.fspath(path)
    if "\0" in path:
        raise ValueError("path must not contain NUL")
    return path


def check_sysv_key(key: object) -> int:
    """``key`` as the unsigned 32-bit value ``ipcs -m`` shows; a negative
    int (ftok's key_t from C) is taken as its two's complement.

    Raises:
        TypeError: not an int.
        ValueError: 0 (IPC_PRIVATE, which no other process can find) or out
            of the 32 bits of a key_t.
    """
    if isinstance(key, bool) or not isinstance(key, int):
        raise TypeError(f"sysv_key must be an int, not {type(key).__name__}")
    if not -(1 << 31) <= key < (1 << 32):
        raise ValueError(f"sysv_key must fit in 32 bits, not {key:#x}")
    if key == 0:
        raise ValueError("sysv_key must not be 0 (IPC_PRIVATE: no other process could open it)")
    return key & 0xFFFFFFFF


def signed_key(key: int) -> int:
    """An unsigned 32-bit key as the C ``key_t`` shmget takes."""
    return key - (1 << 32) if key >= 1 << 31 else key


def _kind_of(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "not a regular file"


def refuse_owner(uid: int, label: str, any_owner: bool) -> None:
    """Raise unless ``uid`` is this process's effective uid or ``any_owner``.

    Raises:
        RingPermissionError: another user's.
    """
    euid = os.geteuid()
    if not any_owner and uid != euid:
        raise RingPermissionError(
            errno.EPERM, f"the segment belongs to uid {uid}, not to this user "
            f"(uid {euid}); another user could read or forge its messages "
            f"(any_owner=True attaches anyway)", label)


def refuse(st: os.stat_result, label: str, any_owner: bool) -> None:
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
    refuse_owner(st.st_uid, label, any_owner)


def open_file(where: str, label: str, any_owner: bool) -> int:
    """Open an existing segment, ring file or companion to attach it;
    returns the fd.  Looked at before (lstat: devices and FIFOs are never
    opened) and after opening (fstat of what was opened: no race with a
    rename).

    Raises:
        RingNotFound: no such file.
        RingCorrupted: not a regular file.
        RingPermissionError: a symbolic link, another user's file (see
            refuse), or the file's mode forbids this user.
    """
    try:
        refuse(os.lstat(where), label, True)
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
        refuse(os.fstat(fd), label, any_owner)
    except BaseException:
        os.close(fd)
        raise
    return fd


def create_file(where: str, label: str, mode: int) -> Optional[int]:
    """A new file at ``where`` with exactly ``mode`` (open()'s mode passes
    through the umask); None when the name exists.

    Raises:
        RingPermissionError: the system refused.
    """
    try:
        fd = os.open(where, _CREATE_FLAGS, mode)
    except FileExistsError:
        return None
    except PermissionError as e:
        raise RingPermissionError(e.errno, e.strerror, label) from None
    try:
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def allocate_file(fd: int, size: int, label: str) -> None:
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


def unlink_same(path: str, identity: Optional[Tuple[int, int]]) -> None:
    """Unlink ``path`` if it is still the file of ``identity`` (device,
    inode): a name somebody made again since is left alone."""
    if identity is None:
        return
    fd = watcher.open_same_file(path, *identity)
    if fd is None:
        return
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(path)


class Backing:
    """The interface (the base class does what every backing shares).

    The order of calls: to create, make() (False: it exists), watch()
    (persist=False), allocate(), map(), bind_liveness(creating=True),
    release(); to attach, find(), then size() and map() until the magic is
    there, bind_liveness(creating=False), release().  remove() undoes
    make() for the creator's finalizer."""

    kind = ""
    #: The storage is exactly one header and the capacity (a file); False:
    #: at least that (a System V segment, whose size a C program chose).
    exact_size = True
    #: create(exist_ok=True) may adopt existing storage that is all zero (a
    #: segment a C program made with shmget) and initialise it.
    adopts_blank = False
    label = "ring"
    #: A child being spawned gets a duplicate of a descriptor of the
    #: storage (open_file(where)) with the pickle, not only pickle_as()'s
    #: keywords: the creator may have removed the name by the time it
    #: unpickles (ring.py, reduce_for_spawned_child).
    hands_descriptor = False
    #: (st_dev, st_ino) of the mapped file, once mapped; (0, 0): no file a
    #: name in /dev/shm or a path can reach (memfd, System V).
    inode: Tuple[int, int] = (0, 0)

    def make(self, mode: int, size: int, reserve: bool) -> bool:
        """Make the storage, exclusively; False when it exists already.

        Raises:
            RingPermissionError: the system refused.
            RingNoSpace: too little memory (System V with reserve).
        """
        raise NotImplementedError

    def find(self, any_owner: bool) -> None:
        """Find existing storage to attach; the owner rule applies before
        one byte of it is read.

        Raises:
            RingNotFound: nothing there.
            RingCorrupted: not a segment or regular file.
            RingPermissionError: another user's, or the mode forbids us.
        """
        raise NotImplementedError

    def size(self) -> int:
        """Bytes of the storage now (0 while a creator has not sized it)."""
        raise NotImplementedError

    def allocate(self, size: int, reserve: bool) -> None:
        """Give new storage its size (and its memory, with ``reserve``).

        Raises:
            RingNoSpace: reserve and too little room.
        """

    def map(self, size: int) -> Mapping:
        """A core Mapping of the storage's first ``size`` bytes.

        Raises:
            OSError: the system refused.
        """
        raise NotImplementedError

    def bind_liveness(self, ring: SegmentCore, creating: bool) -> None:
        """Give the ring's mapping the file its lock slots live on, when
        that is not the segment itself (map() bound that already).

        Raises:
            RingCorrupted, RingPermissionError: as find(), for that file.
        """

    def watch(self) -> None:
        """Have the watcher remove what make() made if this process dies."""

    def disown(self) -> None:
        """What make() made is another process's to initialise and remove."""

    def adopt(self) -> None:
        """This process initialised existing blank storage it found
        (adopts_blank): it removes it as a creator would."""

    def remove(self) -> None:
        """Remove what make() made (the creator's finalizer); never raises."""

    def unlink(self) -> None:
        """Remove the name; processes already attached keep working.

        Raises:
            RingNotFound: already gone.
            TypeError: nothing to remove (an anonymous ring).
        """
        raise TypeError("an anonymous ring has no name to unlink")

    def release(self) -> None:
        """Close what make() or find() opened (the mapping keeps what it needs)."""

    def describe(self) -> str:
        """How the ring is found, for repr(): ``name='jobs'``."""
        return "anonymous"

    def pickle_as(self) -> dict[str, Any]:
        """The Ring.open() keywords that find this ring again, in another
        process (how a pickle reopens it: ring.py).

        Raises:
            TypeError: the ring can be shared only by fork.
        """
        raise TypeError("an anonymous ring cannot be pickled: it is shared only with "
                        "children made by fork; use Ring.create() for a named ring "
                        "to pass it to other processes")
