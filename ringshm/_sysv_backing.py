"""The System V backing (ringshm/_backing.py has the interface): a
segment found by key (shmget/shmat, through the core's _sysv.pxi), whose
lock slots live on a companion file.  See docs/DESIGN.md, "System V
segments"."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from typing import Any, Optional, Tuple

from ringshm import watcher
from ringshm._backing import (
    Backing,
    companion_path,
    create_file,
    open_file,
    refuse_owner,
    signed_key,
    unlink_same,
)
from ringshm._ring import (
    SYSV_CREATE,
    SYSV_NORESERVE,
    Mapping,
    SegmentCore,
    map_sysv,
    sysv_get,
    sysv_remove,
    sysv_stat,
)
from ringshm.errors import RingCorrupted, RingNoSpace, RingNotFound, RingPermissionError

__all__ = ["SysvBacking"]


def _refuse_mode(info: dict[str, int], label: str) -> None:
    """Raise unless shm_perm.mode lets this process read and write the
    segment, as shmat would decide (root, with CAP_IPC_OWNER, may anyway):
    said before anything is attached, in a message that names the mode.

    Raises:
        RingPermissionError: the mode forbids it.
    """
    euid = os.geteuid()
    if euid == 0:
        return
    shift = 6 if euid == info["uid"] else 3 if info["gid"] in (os.getegid(), *os.getgroups()) \
        else 0
    if (info["mode"] >> shift) & 0o6 != 0o6:
        raise RingPermissionError(
            errno.EACCES, f"the segment's mode {info['mode']:#o} does not let uid {euid} "
            "read and write it", label)


class SysvBacking(Backing):
    """A System V shared-memory segment found by key (shmget/shmat), whose
    lock slots live on a companion file, /dev/shm/ringshm-sysv.0xKEY: a
    segment has no descriptor to hold OFD locks on.  The companion takes
    the segment's mode; its identity is recorded in the ring header, so an
    opener whose companion is another file refuses the ring."""

    kind = "sysv"
    exact_size = False
    adopts_blank = True

    def __init__(self, key: int) -> None:
        self.key = key
        self.label = f"sysv key 0x{key:08x}"
        self.companion = companion_path(key)
        self.shmid = -1
        self.mode = 0o600
        self.segment_size = 0
        self.creator_pid = 0           # shm_cpid: with the shmid, the segment's identity
        self.any_owner = False
        self.watched = False
        self.made = False              # the segment is ours to remove
        self.companion_identity: Optional[Tuple[int, int]] = None

    def make(self, mode: int, size: int, reserve: bool) -> bool:
        # Without SHM_NORESERVE the kernel accounts the whole segment at
        # shmget (overcommit): too little memory fails here, not later.
        flags = SYSV_CREATE | mode | (0 if reserve else SYSV_NORESERVE)
        try:
            self.shmid = sysv_get(signed_key(self.key), size, flags)
        except FileExistsError:
            return False
        except PermissionError as e:
            raise RingPermissionError(e.errno, e.strerror, self.label) from None
        except OSError as e:
            if e.errno in (errno.ENOMEM, errno.ENOSPC):
                raise RingNoSpace(size, None, self.label) from None
            if e.errno == errno.EINVAL:
                raise ValueError(f"capacity: {size} bytes is more than this system allows "
                                 "for a System V segment (kernel.shmmax)") from None
            raise
        self.made = True
        self._stat(True)
        self.mode = mode
        return True

    def find(self, any_owner: bool) -> None:
        try:
            self.shmid = sysv_get(signed_key(self.key), 0, 0)
        except FileNotFoundError:
            raise RingNotFound(errno.ENOENT, "no System V segment has this key",
                               self.label) from None
        except PermissionError as e:
            raise RingPermissionError(e.errno, e.strerror, self.label) from None
        self.any_owner = any_owner
        info = self._stat(any_owner)
        self.mode = info["mode"]

    def _stat(self, any_owner: bool) -> dict[str, int]:
        # IPC_STAT, before shmat: nothing of the segment is read yet.
        try:
            info: dict[str, int] = sysv_stat(self.shmid)
        except PermissionError as e:
            raise RingPermissionError(e.errno, e.strerror, self.label) from None
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.EIDRM):
                raise RingNotFound(errno.ENOENT, "the segment was removed",
                                   self.label) from None
            raise
        # Its owner can be changed (IPC_SET), its creator cannot: both ours.
        refuse_owner(info["uid"], self.label, any_owner)
        refuse_owner(info["cuid"], self.label, any_owner)
        _refuse_mode(info, self.label)
        self.segment_size = info["size"]
        self.creator_pid = info["creator_pid"]
        return info

    def size(self) -> int:
        return self.segment_size

    def map(self, size: int) -> Mapping:
        try:
            mapping: Mapping = map_sysv(self.shmid, size)
        except PermissionError as e:
            raise RingPermissionError(e.errno, "the segment's mode forbids this user",
                                      self.label) from None
        return mapping

    def bind_liveness(self, ring: SegmentCore, creating: bool) -> None:
        if creating:
            fd = self._make_companion()
        else:
            try:
                fd = open_file(self.companion, self.companion, self.any_owner)
            except RingNotFound:
                raise RingCorrupted(f"{self.label}: its lock file {self.companion} is "
                                    "missing (removed by hand?): not a usable ring") from None
        try:
            ring._bind_liveness(fd)
        finally:
            os.close(fd)

    def _make_companion(self) -> int:
        # We claimed the blank segment: no ring lives in it yet, so a
        # companion already there is a dead ring's (its segment removed)
        # and is replaced, never shared.
        while True:
            fd = create_file(self.companion, self.companion, self.mode & 0o666)
            if fd is not None:
                break
            st = os.lstat(self.companion)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                raise RingPermissionError(
                    errno.EEXIST, "the lock file's name is taken by what is not this "
                    "user's regular file", self.companion)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.companion)
        st = os.fstat(fd)
        self.companion_identity = (st.st_dev, st.st_ino)
        if self.watched:
            watcher.register(self.companion, st.st_dev, st.st_ino)
        return fd

    def watch(self) -> None:
        self.watched = True
        watcher.register_sysv(self.key, self.shmid, self.creator_pid)
        if self.companion_identity is not None:
            watcher.register(self.companion, *self.companion_identity)

    def adopt(self) -> None:
        self.made = True

    def disown(self) -> None:
        if self.watched:
            watcher.unregister_sysv(self.shmid)
            self.watched = False
        self.made = False

    def _still_ours(self) -> bool:
        try:
            info = sysv_stat(self.shmid)
        except OSError:
            return False
        return bool(info["creator_pid"] == self.creator_pid and not info["removed"])

    def remove(self) -> None:
        if self.made and self._still_ours():
            with contextlib.suppress(OSError):
                sysv_remove(self.shmid)
        unlink_same(self.companion, self.companion_identity)
        if self.watched:
            watcher.unregister_sysv(self.shmid)
            watcher.unregister(self.companion)

    def unlink(self) -> None:
        if self.watched:
            watcher.unregister_sysv(self.shmid)
            watcher.unregister(self.companion)
        if not self._still_ours():
            raise RingNotFound(errno.ENOENT, "the segment was removed already", self.label)
        sysv_remove(self.shmid)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.companion)

    def describe(self) -> str:
        return f"sysv_key=0x{self.key:08x}"

    def pickle_as(self) -> dict[str, Any]:
        return {"sysv_key": self.key}
