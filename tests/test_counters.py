"""Exact counters at every instruction (issue 8, item 5): a consumer or a
producer SIGKILLed at any instruction while it holds its lock leaves, once
another process has taken the lock over, every counter exact: messages and
bytes put and got, and len().

A child waits for the lock that this process holds; we stop it (ptrace),
let the lock go, and single-step it through its get() or put(), killing it
after step k.  A first run steps it to the end and finds where it holds the
lock and where it writes its intent; the kill points are every instruction
from a little before the intent to the unlock (publish(), _end_get and
_end_put) and every SPARSE-th instruction of the rest of the locked stretch.
The test runs on whatever build is in place, release or debug: the release
build is the one where the compiler reordered the intent's stores (gcc put
intent.bytes before intent.position; bytes_got came out 100 too high).
"""

import os
import platform

import pytest
import stepper
from faultkit import GET_INTENT, GET_LOCK, PUT_INTENT, PUT_LOCK, RawHeader, sleeping_on, wait_until

from ringshm import Empty, Ring

pytestmark = [pytest.mark.fault, pytest.mark.multiprocess, pytest.mark.slow]

if platform.system() != "Linux" or platform.machine() not in ("x86_64", "aarch64"):
    pytest.skip("ptrace single-stepping is tested on Linux x86_64/aarch64 only",
                allow_module_level=True)

SPARSE = 16          # outside the publish, kill at every SPARSE-th instruction
BEFORE_INTENT = 24   # instructions before the first intent store killed at each
MESSAGES = [bytes([i]) * n for i, n in enumerate((100, 200, 300))]
LATE = b"L" * 44     # what the producer child puts
MINE = b"M" * 12     # what this process puts after the takeover

# Per side: the lock word and the intent's position, watched in the survey.
SIDES = {"get": (GET_LOCK, GET_INTENT), "put": (PUT_LOCK, PUT_INTENT)}


class Release(Exception):
    """Raised in our block to let its lock go without publishing."""


def consumer_child(name):
    Ring.open(name).get(timeout=30)


def producer_child(name):
    Ring.open(name).put(LATE, timeout=30)


def start_stepping(make_ring, side, work=None):
    """A ring whose `side` lock a traced child waits for, the child stopped
    and the lock free: returns (ring, raw header, child pid).  The child
    runs `work(name)` (default: one get() or put())."""
    ring = make_ring(capacity=4096, spin=0)
    for message in MESSAGES:
        ring.put(message)
    raw = RawHeader(ring.name)
    queue, block, default = (("get lock", ring.view, consumer_child) if side == "get"
                             else ("put lock", lambda: ring.reserve(8), producer_child))
    work = work or default
    pid = None
    try:
        with block():
            pid = os.fork()
            if pid == 0:
                status = 1
                try:
                    stepper.trace_me()
                    work(ring.name)
                    status = 0
                finally:
                    os._exit(status)
            wait_until(lambda: sleeping_on(pid, raw, queue) is not False,
                       what=f"child asleep on the {queue}")
            stepper.stop(pid)
            raise Release
    except Release:
        pass
    except BaseException:
        if pid:
            stepper.kill(pid)
        raw.close()
        raise
    return ring, raw, pid


def survey(make_ring, side, work=None, intent_at=None):
    """Step a child through its whole call: (first step holding the lock,
    first step of the intent, step that let it go).  `intent_at`: the
    header offset whose first change marks the intent (default the side's
    intent position)."""
    lock, side_intent = SIDES[side]
    intent_at = intent_at or side_intent
    ring, raw, pid = start_stepping(make_ring, side, work)
    steps = 0
    locked = intent = unlocked = None
    intent_before = raw.u64(intent_at)
    try:
        while unlocked is None and stepper.step(pid):
            steps += 1
            # The lock was free when stepping began and only the child
            # runs: a token in the lock word is the child's.
            owner = raw.u64(lock)
            if locked is None and owner != 0:
                locked = steps
            if intent is None and raw.u64(intent_at) != intent_before:
                intent = steps
            if locked is not None and owner == 0:
                unlocked = steps
    finally:
        stepper.kill(pid)
        raw.close()
        ring.close()
    assert locked and intent and unlocked and locked < intent < unlocked, \
        (locked, intent, unlocked)
    return locked, intent, unlocked


def kill_points(locked, intent, unlocked):
    dense = set(range(max(locked, intent - BEFORE_INTENT), unlocked + 1))
    return sorted(dense | set(range(locked, unlocked, SPARSE)))


def kill_at(make_ring, side, k, work=None):
    ring, raw, pid = start_stepping(make_ring, side, work)
    try:
        for _ in range(k):
            assert stepper.step(pid), "the child exited early"
    finally:
        stepper.kill(pid)
        raw.close()
    return ring


def drain(ring):
    """Take everything (the first get() waits for the dead child's lock)."""
    got = [ring.get(timeout=10)]
    while True:
        try:
            got.append(ring.get_nowait())
        except Empty:
            return got


def check_counters(ring, expected):
    stats = ring.stats()
    where = f"stats {stats}"
    assert stats["messages_put"] == stats["messages_got"] == len(expected), where
    assert stats["bytes_put"] == stats["bytes_got"] == sum(map(len, expected)), where
    assert len(ring) == 0, where


@pytest.mark.parametrize("side", ["get", "put"])
def test_counters_exact_after_a_kill_at_every_instruction(make_ring, side):
    points = kill_points(*survey(make_ring, side))
    assert len(points) > BEFORE_INTENT
    for k in points:
        ring = kill_at(make_ring, side, k)
        if side == "get":
            # Killed before its tail was published, the child's message is
            # delivered again; after, it is gone.  Either way, counted once.
            got = drain(ring)
            assert got in (MESSAGES, MESSAGES[1:]), f"kill after step {k}: {got}"
            check_counters(ring, MESSAGES)
        else:
            ring.put(MINE, timeout=10)
            got = drain(ring)
            assert got in (MESSAGES + [LATE, MINE], MESSAGES + [MINE]), \
                f"kill after step {k}: {got}"
            check_counters(ring, got)
        ring.close()
