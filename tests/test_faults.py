"""Processes that die: SIGKILLed while holding the put or the get lock, while
sleeping (for data, for room, for a lock), or at any step of a put or a get
(simulated through the segment's bytes, docs/FORMAT.md).  The others go on
within recovery_interval, committed messages are never lost, an uncommitted
write vanishes, the message a dying consumer was reading is delivered
again, and a dead sleeper leaves no lasting cost.

The kill points come from the API: ``reserve()`` holds the put lock and
``view()`` the get lock for the whole with-block.  Children are forked by
faultkit.Child and always reaped.  See docs/RELIABILITY.md.
"""

import contextlib
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

import faultkit
import pytest
from conftest import child_env, one_ring_on
from faultkit import (
    Child,
    RawHeader,
    handle,
    hold_a_slot,
    hold_put_lock,
    open_where,
    sleeping_on,
    wait_until,
)

from ringshm import Empty, Full

pytestmark = [pytest.mark.fault, pytest.mark.multiprocess]

RECOVERY = 0.1        # the default recovery_interval, passed explicitly
# A survivor must go on within recovery_interval; the margin absorbs a busy
# machine (a 2-core CI box running other jobs), not a slow design.
MARGIN = 1.5
BOUND = RECOVERY + MARGIN
KILLS = 20            # recovery measurements


# Every backing whose bytes a test can map a second time (RawHeader): an
# anonymous ring's memfd is held by the ring alone.
@pytest.fixture(params=["shm", "file", "sysv"])
def ring(request, tmp_path):
    yield from one_ring_on(request.param, tmp_path, capacity=4096, recovery_interval=RECOVERY)


# ---------------------------------------------------------------- children



def hold_get_lock(link, name):
    """view() the oldest message (reported as hex) and sleep there, holding
    the get lock; after go(), consume it and exit."""
    ring = open_where(name)
    with ring.view() as mv:
        link.ready(bytes(mv).hex())
        link.wait_go()
    ring.close()


def put_then_report(link, name, payload):
    """put() (waiting for the lock, or room), then report when it returned."""
    ring = open_where(name)
    link.ready()
    ring.put(payload, timeout=60)
    link.ready(repr(time.monotonic()))
    ring.close()


def get_then_report(link, name):
    """get() (waiting for the lock, or data), then report when it returned
    and what."""
    ring = open_where(name)
    link.ready()
    message = ring.get(timeout=60)
    link.ready(f"{time.monotonic()!r} {message.hex()}")
    ring.close()


def wait_asleep(child, raw, queue):
    """Wait until `child` sleeps in futex() on `queue`'s futex word; where the
    kernel does not tell, until it armed the queue's flag, plus a moment."""
    if sleeping_on(child.pid, raw, queue) is None:
        wait_until(lambda: raw.wanted(queue) == 1, what=f"a sleeper on {queue}")
        time.sleep(0.2)
    else:
        wait_until(lambda: sleeping_on(child.pid, raw, queue),
                   what=f"child {child.pid} asleep on {queue}")


def dead_token(name):
    """The lock token of a process that held a slot of ring `name` and is
    gone (reaped)."""
    with Child(hold_a_slot, name) as child:
        token = int(child.wait_ready())
        child.kill()
        return token


# ---------------------------------------------------------------- dead lock holders

def test_producer_killed_inside_reserve(ring):
    ring.put(b"c0")
    ring.put(b"c1")
    with Child(hold_put_lock, handle(ring)) as holder:
        holder.wait_ready()
        assert ring._lock_owners() == (holder.pid, 0)
        holder.kill()
    ring.put(b"after", timeout=BOUND)   # Full here: nobody took the lock over
    assert ring._lock_owners() == (0, 0)
    stats = ring.stats()
    assert stats["lock_recoveries"] == 1
    assert (stats["messages_put"], stats["bytes_put"]) == (3, 9)
    # Committed messages all there, in order; the uncommitted write vanished.
    assert [ring.get_nowait() for _ in range(3)] == [b"c0", b"c1", b"after"]
    with pytest.raises(Empty):
        ring.get_nowait()


def test_consumer_killed_inside_view_leaves_the_message(ring):
    ring.put(b"m0")
    ring.put(b"m1")
    with Child(hold_get_lock, handle(ring)) as holder:
        assert holder.wait_ready() == b"m0".hex()
        assert ring._lock_owners() == (0, holder.pid)
        holder.kill()
    assert ring.get(timeout=BOUND) == b"m0"   # delivered again
    assert ring.get_nowait() == b"m1"
    stats = ring.stats()
    assert stats["lock_recoveries"] == 1
    assert (stats["messages_got"], stats["messages"], stats["bytes_got"]) == (2, 0, 4)
    assert ring._lock_owners() == (0, 0)


@pytest.mark.parametrize("side", ["put", "get"])
def test_nonblocking_call_takes_over_a_dead_lock(ring, side):
    """A non-blocking call waits a moment for a lock; when the holder is dead
    it takes the lock over at the end of that moment instead of failing."""
    ring.put(b"m0")
    holder_target = hold_put_lock if side == "put" else hold_get_lock
    with Child(holder_target, handle(ring)) as holder:
        holder.wait_ready()
        holder.kill()
    if side == "put":
        ring.put_nowait(b"m1")
        assert len(ring) == 2
    else:
        assert ring.get_nowait() == b"m0"
    assert ring.stats()["lock_recoveries"] == 1


def nonblocking_gets_on_dead_locks(link, name, attempts, dead):
    """get_nowait() `attempts` times, each with a message in the ring and the
    get lock held by the dead token `dead`; reports how many said Empty."""
    ring = open_where(name)
    empties = 0
    with RawHeader(name) as raw:
        for _ in range(attempts):
            ring.put(b"m")
            raw.set_u64(faultkit.GET_LOCK, dead)
            try:
                ring.get_nowait()
            except Empty:
                empties += 1
                raw.set_u64(faultkit.GET_LOCK, 0)
                ring.get_nowait()
    ring.close()
    link.ready(str(empties))


def test_a_preempted_nonblocking_call_still_takes_over_a_dead_lock(ring):
    """The race behind a rare failure of the test above: the moment a
    non-blocking call waits for a lock can end inside its spin (or between
    two looks at the clock) without one look at the owner, and then it
    failed with Empty although the owner was dead.  Here the caller is
    stopped (SIGSTOP) at random moments, so that the moment often ends while
    it is stopped; every call must still take the lock over."""
    dead = dead_token(handle(ring))
    stop = threading.Event()
    with Child(nonblocking_gets_on_dead_locks, handle(ring), 1500, dead) as caller:

        def preempt():
            rng = random.Random(8)
            while not stop.is_set():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(caller.pid, signal.SIGSTOP)
                    time.sleep(0.002)
                    os.kill(caller.pid, signal.SIGCONT)
                time.sleep(rng.uniform(0, 0.0015))

        preempter = threading.Thread(target=preempt)
        preempter.start()
        try:
            empties = int(caller.wait_ready(timeout=120))
        finally:
            stop.set()
            preempter.join()
            with contextlib.suppress(ProcessLookupError):
                os.kill(caller.pid, signal.SIGCONT)
    assert empties == 0


def test_recovery_time(ring, raw):
    """KILLS lock holders: producers inside reserve() and consumers inside
    view(), by turns; half the time a survivor is already asleep waiting for
    the lock, half the time it arrives after the death (this process).
    Measured: from the SIGKILL to the survivor's call returning.  Each must
    be within recovery_interval (+ a margin)."""
    times = {}
    for i in range(KILLS):
        side = ("put", "get")[i % 2]
        survivor_was = ("waiting", "arriving")[i // 2 % 2]
        message = b"read by the dead, then by the survivor"
        if side == "get":
            ring.put(message)
        holder_target = hold_put_lock if side == "put" else hold_get_lock
        with Child(holder_target, handle(ring)) as holder:
            holder.wait_ready()
            if survivor_was == "arriving":
                killed_at = time.monotonic()
                holder.kill()
                if side == "put":
                    ring.put(b"survivor", timeout=BOUND)
                else:
                    assert ring.get(timeout=BOUND) == message
                done_at = time.monotonic()
            else:
                if side == "put":
                    survivor = Child(put_then_report, handle(ring), b"survivor")
                else:
                    survivor = Child(get_then_report, handle(ring))
                with survivor:
                    survivor.wait_ready()
                    wait_asleep(survivor, raw, f"{side} lock")
                    killed_at = time.monotonic()
                    holder.kill()
                    note = survivor.wait_ready(timeout=BOUND + 30).split()
                    assert survivor.join() == 0
                done_at = float(note[0])
                if side == "get":
                    assert bytes.fromhex(note[1]) == message
        if side == "put":
            assert ring.get_nowait() == b"survivor"
        times.setdefault((side, survivor_was), []).append(done_at - killed_at)
        assert ring._lock_owners() == (0, 0)
    everything = [t for some in times.values() for t in some]
    print(f"\nrecovery after SIGKILL of a lock holder ({KILLS} kills, recovery_interval "
          f"{RECOVERY} s): median {statistics.median(everything):.3f} s, "
          f"max {max(everything):.3f} s; " + ", ".join(
              f"{side} lock, survivor {was}: median {statistics.median(some):.3f} "
              f"max {max(some):.3f}" for (side, was), some in sorted(times.items())))
    assert ring.stats()["lock_recoveries"] == KILLS
    assert all(t < BOUND for t in everything), times
    assert len(ring) == 0


# Regression: owner_alive() once took a zombie for alive (kill(pid, 0)
# succeeds and the start time is unchanged until the parent reaps it), so a
# parent waiting for its own killed child's lock waited for ever.
@pytest.mark.parametrize("side", ["put", "get"])
def test_dead_holder_not_yet_reaped(ring, side):
    ring.put(b"m0")
    holder_target = hold_put_lock if side == "put" else hold_get_lock
    with Child(holder_target, handle(ring)) as holder:
        holder.wait_ready()
        holder.kill_unreaped()
        # This process is the holder's parent: it reaps only after the call.
        if side == "put":
            ring.put(b"m1", timeout=BOUND)
        else:
            assert ring.get(timeout=BOUND) == b"m0"


# ---------------------------------------------------------------- who is alive

@pytest.mark.parametrize("side", ["put", "get"])
def test_slot_taken_again_is_a_dead_holder(ring, raw, side):
    """Slot reuse: the lock word names a slot that a live process holds, but
    at an earlier generation: its holder then was another process, gone."""
    ring.put(b"m0")
    lock = faultkit.PUT_LOCK if side == "put" else faultkit.GET_LOCK
    with Child(hold_a_slot, handle(ring)) as other:
        token = int(other.wait_ready())
        slot = faultkit.token_slot(token)
        generation, pid = raw.slot(slot)
        assert (token, pid) == (faultkit.token(slot, generation), other.pid)
        raw.set_u64(lock, faultkit.token(slot, generation - 1))
        if side == "put":
            ring.put(b"m1", timeout=BOUND)
        else:
            assert ring.get(timeout=BOUND) == b"m0"
        assert raw.owner(lock) == 0
        assert raw.recoveries(lock) == 1
        other.go()
        assert other.join() == 0


@pytest.mark.parametrize("side", ["put", "get"])
def test_live_holder_is_not_taken_over(ring, raw, side):
    """A lock held by a live process (its slot locked, at the generation in
    the lock word) is never stolen: a waiter times out after several
    liveness checks."""
    ring.put(b"m0")
    lock = faultkit.PUT_LOCK if side == "put" else faultkit.GET_LOCK
    holder_target = hold_put_lock if side == "put" else hold_get_lock
    with Child(holder_target, handle(ring)) as holder:
        holder.wait_ready()
        owner = raw.owner(lock)
        generation, pid = raw.slot(faultkit.token_slot(owner))
        assert (owner, pid) == (faultkit.token(faultkit.token_slot(owner), generation),
                                holder.pid)
        timeout = 5 * RECOVERY
        with pytest.raises(Full if side == "put" else Empty):
            if side == "put":
                ring.put(b"m1", timeout=timeout)
            else:
                ring.get(timeout=timeout)
        with pytest.raises(Full if side == "put" else Empty):
            if side == "put":
                ring.put_nowait(b"m1")
            else:
                ring.get_nowait()
        assert raw.owner(lock) == owner
        assert raw.recoveries(lock) == 0
        holder.go()                    # commits, or consumes m0
        assert holder.join() == 0
    if side == "put":
        assert [ring.get_nowait(), ring.get_nowait()] == [b"m0", b"reserved"]
    else:
        assert len(ring) == 0
    assert ring._lock_owners() == (0, 0)


# ---------------------------------------------------------------- death at each step

# The steps of a put (FORMAT.md, "Protocol"): take the lock, write the
# record, write put_intent, publish head, count.  The producer dies after
# the named step; "published" and "counted" made the message visible.
PUT_STEPS = ["locked", "written", "intent", "published", "counted"]


@pytest.mark.parametrize("step", PUT_STEPS)
def test_producer_dies_after_each_step_of_a_put(ring, raw, step):
    ring.put(b"m0")
    done = PUT_STEPS[:PUT_STEPS.index(step) + 1]
    head = raw.u64(faultkit.HEAD)
    messages, nbytes = raw.u64(faultkit.MESSAGES_PUT), raw.u64(faultkit.BYTES_PUT)
    raw.set_u64(faultkit.PUT_LOCK, dead_token(handle(ring)))
    new_head = raw.write_record(head, b"dying") if "written" in done else head
    if "intent" in done:
        for i, value in enumerate((new_head, messages + 1, nbytes + 5)):
            raw.set_u64(faultkit.PUT_INTENT + 8 * i, value)
    if "published" in done:
        raw.set_u64(faultkit.HEAD, new_head)
    if "counted" in done:
        raw.set_u64(faultkit.MESSAGES_PUT, messages + 1)
        raw.set_u64(faultkit.BYTES_PUT, nbytes + 5)

    ring.put(b"survivor", timeout=BOUND)
    expected = [b"m0", b"dying", b"survivor"] if "published" in done else [b"m0", b"survivor"]
    stats = ring.stats()
    assert stats["lock_recoveries"] == 1
    # Exact counters, whatever instruction the producer died at.
    assert len(ring) == stats["messages_put"] == len(expected)
    assert stats["bytes_put"] == sum(map(len, expected))
    assert [ring.get_nowait() for _ in expected] == expected
    with pytest.raises(Empty):
        ring.get_nowait()


# The steps of a get: take the lock (and read), write get_intent, publish
# tail, count.  Until tail is published the message is delivered again.
GET_STEPS = ["locked", "intent", "published", "counted"]


@pytest.mark.parametrize("step", GET_STEPS)
def test_consumer_dies_after_each_step_of_a_get(ring, raw, step):
    ring.put(b"m0")
    ring.put(b"m1")
    done = GET_STEPS[:GET_STEPS.index(step) + 1]
    tail = raw.u64(faultkit.TAIL)
    new_tail = tail + 16   # past m0: 8-byte header + 2 bytes, rounded to 8
    raw.set_u64(faultkit.GET_LOCK, dead_token(handle(ring)))
    if "intent" in done:
        for i, value in enumerate((new_tail, 1, 2)):
            raw.set_u64(faultkit.GET_INTENT + 8 * i, value)
    if "published" in done:
        raw.set_u64(faultkit.TAIL, new_tail)
    if "counted" in done:
        raw.set_u64(faultkit.MESSAGES_GOT, 1)
        raw.set_u64(faultkit.BYTES_GOT, 2)

    consumed = "published" in done
    expected = [b"m1"] if consumed else [b"m0", b"m1"]
    assert ring.get(timeout=BOUND) == expected[0]
    stats = ring.stats()
    assert stats["lock_recoveries"] == 1
    assert stats["messages_got"] == 1 + consumed
    assert stats["bytes_got"] == 2 + 2 * consumed
    assert len(ring) == len(expected) - 1
    assert [ring.get_nowait() for _ in expected[1:]] == expected[1:]
    with pytest.raises(Empty):
        ring.get_nowait()


# ---------------------------------------------------------------- dead sleepers

def kill_sleepers(ring, raw):
    """SIGKILL one process asleep in each place to sleep: get() on an empty
    ring, put() on a full one, waiting for the get lock and for the put
    lock.  Returns the `wanted` flags each left armed, by queue."""
    armed = {}
    assert len(ring) == 0

    with Child(get_then_report, handle(ring)) as sleeper:      # for data
        sleeper.wait_ready()
        wait_asleep(sleeper, raw, "data")
        armed["data"] = raw.wanted("data")
        sleeper.kill()

    filler = 0
    while True:
        try:
            ring.put_nowait(b"fill %d" % filler)
        except Full:
            break
        filler += 1
    with Child(put_then_report, handle(ring), b"x" * 100) as sleeper:   # for room
        sleeper.wait_ready()
        wait_asleep(sleeper, raw, "space")
        armed["space"] = raw.wanted("space")
        sleeper.kill()
    for _ in range(filler):
        ring.get_nowait()

    ring.put(b"held")
    for side, holder_target, waiter in (
            ("get", hold_get_lock, (get_then_report, handle(ring))),
            ("put", hold_put_lock, (put_then_report, handle(ring), b"y"))):
        with Child(holder_target, handle(ring)) as holder:      # for a lock
            holder.wait_ready()
            with Child(*waiter) as sleeper:
                sleeper.wait_ready()
                wait_asleep(sleeper, raw, f"{side} lock")
                armed[f"{side} lock"] = raw.wanted(f"{side} lock")
                sleeper.kill()
            holder.go()
            assert holder.join() == 0
    assert ring.get(timeout=BOUND) == b"reserved"   # committed by the put holder
    assert len(ring) == 0
    return armed


def test_dead_sleepers_leave_no_lasting_cost(ring, raw):
    """Without strace: after one operation of each kind, no wait queue has
    its flag armed, and thousands more operations wake nobody (every wake
    adds one to the queue's futex word, so the words must not move)."""
    armed = kill_sleepers(ring, raw)
    assert armed == {"data": 1, "space": 1, "get lock": 1, "put lock": 1}

    ring.put(b"heal")
    assert ring.get(timeout=BOUND) == b"heal"
    assert {q: raw.wanted(q) for q in faultkit.WAIT_QUEUES} == dict.fromkeys(armed, 0)
    wakes = {q: raw.futex_word(q) for q in faultkit.WAIT_QUEUES}

    for i in range(1000):
        ring.put_nowait(b"%d" % i)
        assert ring.get_nowait() == b"%d" % i
    for _ in range(5):
        count = 0
        while True:
            try:
                ring.put_nowait(b"z" * 50)
            except Full:
                break
            count += 1
        assert [len(ring.get_nowait()) for _ in range(count)] == [50] * count

    assert {q: raw.futex_word(q) for q in faultkit.WAIT_QUEUES} == wakes
    assert {q: raw.wanted(q) for q in faultkit.WAIT_QUEUES} == dict.fromkeys(armed, 0)
    stats = ring.stats()
    assert ring._lock_owners() == (0, 0)
    assert stats["messages"] == 0
    assert stats["messages_put"] == stats["messages_got"]


def _strace_works():
    if shutil.which("strace") is None:
        return False
    probe = subprocess.run(["strace", "-f", "-c", "-e", "trace=futex", "true"],
                           check=False, capture_output=True)
    return probe.returncode == 0


def futex_calls(name, count):
    """futex() system calls of a 1 -> 1 exchange of `count` messages (both
    processes, start-up included), counted by strace."""
    env = child_env()
    result = subprocess.run(
        ["strace", "-f", "-c", "-e", "trace=futex", sys.executable,
         faultkit.__file__, "exchange", name, str(count)],
        check=False, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    match = re.search(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?futex\s*$",
                      result.stderr, re.MULTILINE)
    return int(match.group(1)) if match else 0   # no line: no futex call at all


@pytest.mark.skipif(not _strace_works(), reason="strace is not installed or cannot trace")
def test_dead_sleepers_leave_no_lasting_syscalls(make_ring):
    """Count futex() calls of a 1 -> 1 exchange before and after killing a
    sleeper of every kind.  A waiter count that did not heal (as glibc's
    count inside a sem_t does not) would make every wake a system call, at least
    one per message; the design keeps both far below that."""
    count = 200_000
    ring = make_ring(capacity=1 << 16, recovery_interval=RECOVERY)
    before = futex_calls(ring.name, count)
    with RawHeader(handle(ring)) as raw:
        kill_sleepers(ring, raw)
    ring.put(b"heal")
    ring.get()
    after = futex_calls(ring.name, count)
    print(f"\nfutex calls per message, 1 -> 1 exchange of {count}: before the dead "
          f"sleepers {before / count:.5f} ({before}), after {after / count:.5f} ({after})")
    assert before / count < 0.1
    assert after / count < 0.1
