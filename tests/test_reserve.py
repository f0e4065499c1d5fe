"""A full /dev/shm is an error at create(), never a SIGBUS later (issue 8,
item 2).  Each case runs in a child under ``unshare -m`` with a small
private tmpfs mounted over /dev/shm (or over a directory for path=), so the
machine's own /dev/shm is never filled, and whatever the case leaves dies
with its mount namespace."""

import os
import signal

import pytest
from privateshm import in_private_tmpfs, needs_unshare

from ringshm import Ring

KIB = 1024
MIB = 1024 * KIB

pytestmark = [pytest.mark.multiprocess, needs_unshare]


def test_a_ring_that_does_not_fit_raises_and_leaves_nothing():
    status, result = in_private_tmpfs("""
        import errno
        from ringshm import Ring, RingNoSpace, RingError
        try:
            Ring.create("big", capacity=2 << 20)
            raised = None
        except RingNoSpace as e:
            raised = {"errno": e.errno, "message": str(e), "needed": e.needed,
                      "free": e.free, "is_ring_error": isinstance(e, RingError),
                      "is_os_error": isinstance(e, OSError)}
        print(json.dumps({"raised": raised, "left": os.listdir(MOUNT)}))
    """, size=MIB)
    assert status == 0
    raised = result["raised"]
    assert raised is not None, "create() of 2 MiB in a 1 MiB /dev/shm did not raise"
    assert raised["errno"] == 28 and raised["is_ring_error"] and raised["is_os_error"]
    assert raised["needed"] == (2 << 20) + 4096 and raised["free"] == MIB
    assert f"{(2 << 20) + 4096} bytes" in raised["message"]
    assert f"{MIB} bytes free" in raised["message"]
    assert result["left"] == []


def test_the_last_bytes_are_refused_by_fallocate_itself():
    """free >= needed at the first look, but the file system cannot hand out
    the last page (tmpfs counts whole pages): posix_fallocate's ENOSPC is a
    RingNoSpace too, and the half-made segment is removed."""
    status, result = in_private_tmpfs("""
        from ringshm import Ring, RingNoSpace
        import ringshm.ring as ring_module
        real = os.fstatvfs
        class Roomy:
            def __init__(self, v): self.v = v
            def __getattr__(self, k): return getattr(self.v, k)
            f_bavail = property(lambda self: self.v.f_blocks * 4)
        ring_module.os.fstatvfs = lambda fd: Roomy(real(fd))
        try:
            Ring.create("big", capacity=2 << 20)
            raised = False
        except RingNoSpace:
            raised = True
        print(json.dumps({"raised": raised, "left": os.listdir(MOUNT)}))
    """, size=MIB)
    assert status == 0
    assert result == {"raised": True, "left": []}


def test_rings_that_fit_work_and_a_full_ring_never_sigbuses():
    """Two reserved rings fill most of a 1 MiB /dev/shm; a file takes the
    rest; then both rings are filled to the brim and drained."""
    status, result = in_private_tmpfs("""
        from ringshm import Ring, Full
        rings = [Ring.create(f"r{i}", capacity=256 << 10) for i in range(2)]
        fill(MOUNT)
        counts = []
        for ring in rings:
            n = 0
            try:
                while True:
                    ring.put_nowait(bytes([n % 256]) * 1000)
                    n += 1
            except Full:
                pass
            got = [ring.get_nowait() for _ in range(n)]
            assert got == [bytes([i % 256]) * 1000 for i in range(n)]
            counts.append(n)
        print(json.dumps({"counts": counts}))
    """, size=MIB)
    assert status == 0, "a reserved ring died of SIGBUS"
    assert all(n > 200 for n in result["counts"]), result


def test_a_sparse_ring_does_sigbus_on_a_full_tmpfs():
    """reserve=False keeps the 0.1 behaviour, documented: the same filling
    kills the writer with SIGBUS.  (This is what the default now avoids.)"""
    status, _ = in_private_tmpfs("""
        from ringshm import Ring
        ring = Ring.create("sparse", capacity=512 << 10, reserve=False)
        fill(MOUNT)
        for _ in range(400):
            ring.put_nowait(b"y" * 1000)
        print(json.dumps({"survived": True}))
    """, size=MIB)
    assert status == -signal.SIGBUS


def test_a_one_tib_ring_raises_clearly():
    """Issue 8: `--capacity 1000000000000` made a 1 TiB ring on a 24 GB
    tmpfs.  (tmpfs's size is a limit, not memory taken.)"""
    status, result = in_private_tmpfs("""
        from ringshm import Ring, RingNoSpace
        try:
            Ring.create("huge", capacity=10 ** 12)
            message = None
        except RingNoSpace as e:
            message = str(e)
        print(json.dumps({"message": message, "left": os.listdir(MOUNT)}))
    """, size="24G")
    assert status == 0
    assert result["message"] is not None and "1099511631872 bytes" in result["message"]
    assert result["left"] == []


def test_a_file_backed_ring_is_reserved_too(tmp_path):
    status, result = in_private_tmpfs("""
        from ringshm import Ring, RingNoSpace
        path = os.path.join(MOUNT, "ring")
        try:
            Ring.create(path=path, capacity=2 << 20)
            raised = False
        except RingNoSpace:
            raised = True
        ring = Ring.create(path=path, capacity=256 << 10)
        blocks = os.stat(path).st_blocks * 512
        ring.close()
        print(json.dumps({"raised": raised, "blocks": blocks, "left": os.listdir(MOUNT)}))
    """, size=MIB, mount_on=str(tmp_path))
    assert status == 0
    assert result == {"raised": True, "blocks": (256 << 10) + 4096, "left": []}


def test_reserve_false_makes_a_sparse_segment(make_ring):
    ring = make_ring(capacity=1 << 20, reserve=False)
    assert os.stat(f"/dev/shm/ringshm.{ring.name}").st_blocks * 512 < 1 << 20
    reserved = make_ring(capacity=1 << 20)
    assert os.stat(f"/dev/shm/ringshm.{reserved.name}").st_blocks * 512 >= 1 << 20
    assert isinstance(ring, Ring)
