"""The file backings (ringshm/_backing.py has the interface): a file at
a path, a POSIX shared-memory name (the file /dev/shm/ringshm.NAME), and
the anonymous memfd.  Each segment is its own lock file."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from typing import Any, Optional, Tuple

from ringshm import watcher
from ringshm._backing import (
    Backing,
    allocate_file,
    create_file,
    open_file,
    refuse,
    shm_path,
)
from ringshm._ring import Mapping, map_file
from ringshm.errors import RingNotFound

__all__ = ["FileBacking", "MemfdBacking", "ShmBacking"]


class FileBacking(Backing):
    """A file at a path (``Ring.create(path=...)``); the base of the
    shm_open backing, whose file is /dev/shm/ringshm.NAME."""

    kind = "file"
    hands_descriptor = True

    def __init__(self, path: str) -> None:
        self.where = path
        self.label = path
        self.fd = -1
        self.identity: Optional[Tuple[int, int]] = None   # (dev, ino) of what we made

    def make(self, mode: int, size: int, reserve: bool) -> bool:
        fd = create_file(self.where, self.label, mode)
        if fd is None:
            return False
        self.fd = fd
        st = os.fstat(fd)
        self.identity = (st.st_dev, st.st_ino)
        return True

    def find(self, any_owner: bool) -> None:
        self.fd = open_file(self.where, self.label, any_owner)

    def adopt_descriptor(self, fd: int) -> None:
        """Attach through ``fd`` (a spawned child's duplicate), never the name.

        Raises:
            RingCorrupted, RingPermissionError: as find() (no opt-out).
        """
        refuse(os.fstat(fd), self.label, False)
        self.fd = fd

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def allocate(self, size: int, reserve: bool) -> None:
        os.ftruncate(self.fd, size)
        if reserve:
            allocate_file(self.fd, size, self.label)

    def map(self, size: int) -> Mapping:
        mapping: Mapping = map_file(self.fd, size)
        st = os.fstat(self.fd)
        self.inode = (st.st_dev, st.st_ino)
        return mapping

    def watch(self) -> None:
        assert self.identity is not None
        watcher.register(os.path.abspath(self.where), *self.identity)

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.where)
        watcher.unregister(os.path.abspath(self.where))

    def unlink(self) -> None:
        watcher.unregister(os.path.abspath(self.where))
        try:
            os.unlink(self.where)
        except FileNotFoundError:
            raise RingNotFound(errno.ENOENT, "no such ring", self.label) from None

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def describe(self) -> str:
        return f"path={self.where!r}"

    def pickle_as(self) -> dict[str, Any]:
        return {"path": self.where}


class ShmBacking(FileBacking):
    """A POSIX shared-memory name: the file /dev/shm/ringshm.NAME, or a
    fresh unique name when ``name`` is None."""

    kind = "shm"

    def __init__(self, name: Optional[str]) -> None:
        self.unique = name is None
        super().__init__("")
        self._name(name if name is not None else _unique_name())

    def _name(self, name: str) -> None:
        self.name = name
        self.label = name
        self.where = shm_path(name)

    def make(self, mode: int, size: int, reserve: bool) -> bool:
        while not super().make(mode, size, reserve):
            if not self.unique:
                return False
            self._name(_unique_name())   # a unique name that was not: draw again
        return True

    def describe(self) -> str:
        return f"name={self.name!r}"

    def pickle_as(self) -> dict[str, Any]:
        return {"name": self.name}


def _unique_name() -> str:
    return f"{os.getpid()}-{secrets.token_hex(6)}"


class MemfdBacking(Backing):
    """An anonymous ring: a memfd (no name, shared with the children forked
    after it), not MAP_ANONYMOUS: lock-holder liveness needs a file to hold
    OFD locks on (DESIGN.md, "Liveness")."""

    kind = "anonymous"

    def __init__(self) -> None:
        self.fd = -1

    def make(self, mode: int, size: int, reserve: bool) -> bool:
        self.fd = os.memfd_create("ringshm-anonymous", os.MFD_CLOEXEC)
        return True

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def allocate(self, size: int, reserve: bool) -> None:
        os.ftruncate(self.fd, size)

    def map(self, size: int) -> Mapping:
        mapping: Mapping = map_file(self.fd, size)
        return mapping

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
