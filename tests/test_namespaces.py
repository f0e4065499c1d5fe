"""Lock-holder liveness (docs/DESIGN.md, "Liveness"): a holder in another
PID namespace that shares the segment (containers sharing /dev/shm; here
``unshare --pid --fork --mount-proc``) is respected while it lives and taken
over when it dies; and the cases a slot-based scheme must get right within
one namespace: a forked child (which inherits its parent's descriptors), a
parent that dies while its child lives on, a slot taken again by another
process after its holder died.

The holders in other namespaces run tests/namespace_holder.py.  See
docs/RELIABILITY.md, "PID namespaces", for the figures.
"""

import fcntl
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import faultkit
import pytest
from conftest import child_env, shm_path
from faultkit import Child, RawHeader, hold_a_slot, hold_put_lock

from ringshm import Empty, Full, Ring, RingError

pytestmark = [pytest.mark.fault, pytest.mark.multiprocess]

RECOVERY = 0.1
# A survivor must go on within recovery_interval; the margin is for a busy
# machine, not a slow design (as in test_faults.py).
BOUND = RECOVERY + 1.5
HOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "namespace_holder.py")
REPO = os.path.dirname(os.path.dirname(HOLDER))
UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc"]
# Recovery measurements across namespaces (RINGSHM_NAMESPACE_KILLS=50 for
# the figure in RELIABILITY.md).
KILLS = int(os.environ.get("RINGSHM_NAMESPACE_KILLS", "5"))


def _unshare_refusal():
    """Why a PID namespace cannot be made here, or None if it can."""
    try:
        probe = subprocess.run([*UNSHARE, "true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unshare cannot run: {e}"
    if probe.returncode != 0:
        return f"unshare --pid --fork --mount-proc fails: {probe.stderr.strip()}"
    return None


needs_unshare = pytest.mark.skipif(_unshare_refusal() is not None,
                                   reason=str(_unshare_refusal()))


@pytest.fixture
def ring(make_ring):
    return make_ring(capacity=4096, recovery_interval=RECOVERY)


class NamespacedHolder:
    """namespace_holder.py in a PID namespace of its own; always ended and
    reaped (a context manager)."""

    def __init__(self, name, side, seconds, committed=0):
        env = child_env()
        # unshare's own stderr is noise once its child was killed; the
        # holder's is shown if it never gets ready.
        self.stderr = tempfile.TemporaryFile()
        self.unshare = subprocess.Popen(
            [*UNSHARE, sys.executable, HOLDER, name, side, str(seconds), str(committed)],
            stdout=subprocess.PIPE, stderr=self.stderr, env=env)
        self.pid = None        # the holder's pid here (outside its namespace)

    def wait_ready(self, timeout=30.0):
        """Wait for ``ready``; returns (its pid there, its lock token)."""
        line = self.readline(timeout)
        assert line.startswith("ready "), line
        inner_pid, token = map(int, line.split()[1:])
        self.pid = self._holder_pid()
        # Really in another PID namespace: it has a second pid there.
        with open(f"/proc/{self.pid}/status") as status:
            nspid = next(x for x in status if x.startswith("NSpid:")).split()[1:]
        assert nspid == [str(self.pid), str(inner_pid)], nspid
        return inner_pid, token

    def readline(self, timeout):
        readable, _, _ = select.select([self.unshare.stdout], [], [], timeout)
        line = self.unshare.stdout.readline().decode().strip() if readable else ""
        if not line:
            self.stderr.seek(0)
            raise AssertionError(f"the holder said nothing (for {timeout} s at most): "
                                 f"{self.stderr.read().decode()[-2000:]}")
        return line

    def _holder_pid(self):
        # unshare --fork runs the holder as its only child.
        with open(f"/proc/{self.unshare.pid}/task/{self.unshare.pid}/children") as children:
            child, = children.read().split()
        return int(child)

    def kill(self):
        """SIGKILL the holder (pid 1 of its namespace: the namespace ends)."""
        os.kill(self.pid, signal.SIGKILL)
        self.unshare.wait(timeout=30)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if self.unshare.poll() is None:
            if self.pid is not None:
                os.kill(self.pid, signal.SIGKILL)
            self.unshare.kill()
        self.unshare.wait(timeout=30)
        self.unshare.stdout.close()
        self.stderr.close()


def take(ring, side, timeout):
    """put() or get() the survivor's message."""
    if side == "put":
        ring.put(b"after", timeout=timeout)
    else:
        return ring.get(timeout=timeout)


# ---------------------------------------------------------------- other PID namespaces

@needs_unshare
@pytest.mark.parametrize("side", ["put", "get"])
def test_live_holder_in_another_pid_namespace_is_not_taken_over(ring, side):
    """Its pid (1, there) means another process here: a liveness by pid
    took its lock over at the first look, and two producers wrote at once."""
    ring.put(b"m0")
    with NamespacedHolder(ring.name, side, 2.5) as holder, RawHeader(ring.name) as raw:
        inner_pid, token = holder.wait_ready()
        assert inner_pid == 1
        lock = faultkit.PUT_LOCK if side == "put" else faultkit.GET_LOCK
        assert raw.owner(lock) == token
        started = time.monotonic()
        with pytest.raises(Full if side == "put" else Empty):
            if side == "put":
                ring.put(b"thief", timeout=1.0)
            else:
                ring.get(timeout=1.0)
        assert time.monotonic() - started >= 0.9   # it waited, several looks
        assert raw.owner(lock) == token
        assert raw.recoveries(lock) == 0
        assert holder.readline(timeout=30) == "done"
    if side == "put":
        assert [ring.get_nowait(), ring.get_nowait()] == [b"m0", b"reserved"]
    else:
        assert len(ring) == 0     # the holder consumed m0, nobody else
    assert ring.stats()["lock_recoveries"] == 0
    assert ring._lock_owners() == (0, 0)


@needs_unshare
@pytest.mark.parametrize("side", ["put", "get"])
def test_dead_holder_in_another_pid_namespace_is_taken_over(ring, side):
    """SIGKILLed inside the block: its lock is taken over within
    recovery_interval, its committed messages all stay, in order."""
    if side == "get":
        ring.put(b"m0")
    with NamespacedHolder(ring.name, side, 60, committed=3) as holder:
        holder.wait_ready()
        holder.kill()
        killed_at = time.monotonic()
        message = take(ring, side, BOUND)
        assert time.monotonic() - killed_at < BOUND
    stats = ring.stats()
    assert stats["lock_recoveries"] == 1
    assert ring._lock_owners() == (0, 0)
    if side == "put":
        expected = [b"c0", b"c1", b"c2", b"after"]   # the reservation vanished
    else:
        assert message == b"m0"                     # delivered again
        expected = [b"c0", b"c1", b"c2"]
    assert (stats["messages"], stats["messages_put"]) == (len(expected), 1 + 3)
    assert [ring.get_nowait() for _ in expected] == expected
    with pytest.raises(Empty):
        ring.get_nowait()


@needs_unshare
def test_recovery_time_across_pid_namespaces(ring):
    """KILLS holders in PID namespaces of their own, by turns inside
    reserve() and view(); from the SIGKILL to this process's call
    returning, each within recovery_interval (+ the margin)."""
    times = []
    for i in range(KILLS):
        side = ("put", "get")[i % 2]
        if side == "get":
            ring.put(b"read by the dead, then by us")
        with NamespacedHolder(ring.name, side, 60) as holder:
            holder.wait_ready()
            killed_at = time.monotonic()
            os.kill(holder.pid, signal.SIGKILL)
            take(ring, side, BOUND)
            times.append(time.monotonic() - killed_at)
            holder.unshare.wait(timeout=30)
        if side == "put":
            assert ring.get_nowait() == b"after"
    print(f"\nrecovery after SIGKILL of a holder in another PID namespace ({KILLS} kills, "
          f"recovery_interval {RECOVERY} s): median {statistics.median(times):.3f} s, "
          f"max {max(times):.3f} s")
    assert ring.stats()["lock_recoveries"] == KILLS
    assert all(t < BOUND for t in times), times
    assert len(ring) == 0


# ---------------------------------------------------------------- one namespace, slots

@pytest.mark.parametrize("kind", ["named", "anonymous"])
def test_forked_child_holding_a_lock_is_killed(make_ring, kind):
    """A child forked from a process attached to the ring takes a slot of
    its own: killed inside reserve(), its parent takes the lock over (with
    the parent's token in the lock word the parent would have waited on
    itself, for ever).  An anonymous ring too: it is a memfd."""
    if kind == "named":
        ring = make_ring(recovery_interval=RECOVERY)
    else:
        ring = Ring.anonymous(capacity=4096, recovery_interval=RECOVERY)
    ring.put(b"m0")
    parent_token = ring._liveness_token()

    def child(link):
        with ring.reserve(8) as buf:     # the inherited Ring object
            buf[:] = b"reserved"
            link.ready(str(ring._liveness_token()))
            link.wait_go()

    with Child(child) as holder:
        token = int(holder.wait_ready())
        assert faultkit.token_slot(token) != faultkit.token_slot(parent_token)
        assert ring._lock_owners() == (holder.pid, 0)   # its slot, its generation
        holder.kill()
    ring.put(b"after", timeout=BOUND)
    assert ring.stats()["lock_recoveries"] == 1
    assert [ring.get_nowait(), ring.get_nowait()] == [b"m0", b"after"]
    assert ring._liveness_token() == parent_token
    ring.close()


def test_file_backed_ring(tmp_path):
    """A ring in a regular file (path=): its holder's OFD lock is on that
    file; a live holder is waited for, a dead one taken over."""
    path = str(tmp_path / "liveness.ring")
    with Ring.create(path=path, capacity=4096, recovery_interval=RECOVERY) as ring:
        with Child(hold_put_lock, None, b"reserved", path) as holder:
            holder.wait_ready()
            with pytest.raises(Full):
                ring.put(b"thief", timeout=5 * RECOVERY)
            holder.kill()
        ring.put(b"after", timeout=BOUND)
        assert ring.stats()["lock_recoveries"] == 1
        assert ring.get_nowait() == b"after"
        with pytest.raises(Empty):
            ring.get_nowait()


def test_no_free_slot_fails_clearly(ring):
    """Every slot held by a live open file description (another process's,
    as far as the ring can tell): the first lock raises RingError naming the
    limit instead of taking a pid or a held slot; once one slot is free
    again, the next lock takes it."""
    locks = os.open(shm_path(ring.name), os.O_RDWR)
    try:
        for slot in range(256):
            fcntl.fcntl(locks, fcntl.F_OFD_SETLK, faultkit.slot_flock(fcntl.F_WRLCK, slot))
        with pytest.raises(RingError, match="all 256 liveness slots"):
            ring.put(b"x")
        fcntl.fcntl(locks, fcntl.F_OFD_SETLK, faultkit.slot_flock(fcntl.F_UNLCK, 200))
        ring.put(b"x")
        assert faultkit.token_slot(ring._liveness_token()) == 200
        assert ring.get_nowait() == b"x"
    finally:
        os.close(locks)


def test_dead_parent_with_a_live_forked_child(ring):
    """A process holding the put lock dies while the child it forked earlier
    (which inherited its descriptors, and does not use the ring) lives on:
    the lock is taken over.  The child's copy of the descriptor would keep
    the parent's OFD lock, so its slot, alive: the fork handler gives the
    child a fresh open file description instead."""

    def parent(link, name):
        mine = Ring.open(name)
        mine.put(b"m0")                  # takes a slot
        child = os.fork()
        if child == 0:
            time.sleep(BOUND + 30)      # alive through the test, then gone
            os._exit(0)
        with mine.reserve(8) as buf:
            buf[:] = b"reserved"
            link.ready(str(child))
            link.wait_go()

    with Child(parent, ring.name) as holder:
        orphan = int(holder.wait_ready())
        try:
            holder.kill()
            assert faultkit.process_state(orphan) in ("S", "R")
            ring.put(b"after", timeout=BOUND)
            assert faultkit.process_state(orphan) in ("S", "R")   # it lived throughout
        finally:
            os.kill(orphan, signal.SIGKILL)
    assert ring.stats()["lock_recoveries"] == 1
    assert [ring.get_nowait(), ring.get_nowait()] == [b"m0", b"after"]


def test_slot_taken_again_by_a_live_process(ring):
    """A holder dies inside reserve(); before anyone looks, another process
    takes the same slot (the first free one) and lives on.  The slot is
    locked again, but at the next generation: the holder is gone."""
    ring.put(b"m0")                      # this process takes the first slot
    with RawHeader(ring.name) as raw:
        with Child(hold_put_lock, ring.name) as first:
            dead = int(first.wait_ready())
            first.kill()
        assert raw.owner(faultkit.PUT_LOCK) == dead
        with Child(hold_a_slot, ring.name) as second:
            taken = int(second.wait_ready())
            slot = faultkit.token_slot(taken)
            assert slot == faultkit.token_slot(dead) and taken != dead
            assert raw.slot(slot) == (taken >> 32, second.pid)
            ring.put(b"after", timeout=BOUND)
            assert raw.recoveries(faultkit.PUT_LOCK) == 1
            second.go()
            assert second.join() == 0
    assert [ring.get_nowait(), ring.get_nowait()] == [b"m0", b"after"]
