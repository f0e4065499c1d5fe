# System V shared memory (shmget/shmat/shmdt/shmctl) for the sysv_key
# backing (ringshm/_backing.py): thin wrappers that turn -1 into OSError,
# and the Mapping of an attached segment.  Included into _ring.pyx.  Called
# from Cython directly rather than through a package (sysv_ipc): four
# system calls, no new dependency, and the attachment becomes a Mapping
# like any other (see docs/DESIGN.md, "Backings").

SYSV_CREATE = IPC_CREAT | IPC_EXCL
SYSV_NORESERVE = SHM_NORESERVE


cdef int unmap_sysv(char *base, size_t length) noexcept nogil:
    return shmdt(base)


cdef inline int check_sysv(int rc) except -1:
    if rc == -1:
        raise OSError(errno, os.strerror(errno))
    return rc


def sysv_get(int key, size_t size, int flags):
    """shmget(key, size, flags) -> shmid (flags: SYSV_CREATE | mode bits,
    SYSV_NORESERVE; 0 to find an existing segment).

    Raises:
        OSError: as shmget(2) (ENOENT: no segment has that key; EEXIST).
    """
    return check_sysv(shmget(key, size, flags))


def sysv_stat(int shmid):
    """IPC_STAT of a segment, before anything is attached: a dict of its
    owner (uid, gid), creator (cuid), mode, size, creator pid, attachments, and
    whether it was removed (IPC_RMID: it lives on until the last detach).

    Raises:
        OSError: as shmctl(2) (EINVAL: removed; EACCES: no read permission).
    """
    cdef shmid_ds ds
    check_sysv(shmctl(shmid, IPC_STAT, &ds))
    return {"uid": ds.shm_perm.uid, "gid": ds.shm_perm.gid, "cuid": ds.shm_perm.cuid,
            "mode": ds.shm_perm.mode & 0o777, "size": ds.shm_segsz,
            "creator_pid": ds.shm_cpid, "attached": ds.shm_nattch,
            "removed": bool(ds.shm_perm.mode & SHM_DEST)}


def sysv_remove(int shmid):
    """IPC_RMID: the key goes at once, the memory with its last attachment.

    Raises:
        OSError: as shmctl(2) (EINVAL: already gone; EPERM: not ours).
    """
    check_sysv(shmctl(shmid, IPC_RMID, NULL))


def sysv_peek(int shmid, size_t count):
    """The first `count` bytes of a segment at least that large, through a
    read-only attachment that is let go at once (ringshm ls: is it a ring?).

    Raises:
        OSError: the segment cannot be attached.
    """
    cdef void *p = shmat(shmid, NULL, SHM_RDONLY)
    if p == <void *>-1:
        raise OSError(errno, os.strerror(errno))
    try:
        return PyBytes_FromStringAndSize(<char *>p, count)
    finally:
        shmdt(p)


def map_sysv(int shmid, size_t size):
    """A Mapping of the segment `shmid` (read-write), of `size` bytes (its
    shm_segsz).  It has no lock file yet: bind_liveness() gives it one.

    Raises:
        OSError: as shmat(2).
    """
    cdef Mapping mapping = Mapping.__new__(Mapping)
    cdef void *p = shmat(shmid, NULL, 0)
    if p == <void *>-1:
        raise OSError(errno, os.strerror(errno))
    mapping.adopt(<char *>p, size, unmap_sysv)
    return mapping
