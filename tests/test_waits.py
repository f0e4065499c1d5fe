"""Waits hold no lock (SPEC.md, "Additions for 0.2", waits): a process that
waits in get() for data, or in put() for room, holds none of the ring's
locks, so a stopped (SIGSTOP) waiter delays nobody; several consumers sleep
for data and several producers for room at once, and none misses its
wake-up.  Also the wait primitives for asyncio, _wait_data and _wait_room.

The rings use a long recovery_interval (the sleep slice): a lost wake-up
would then show as a wait of that length, far beyond the bounds here.
"""

import contextlib
import os
import signal
import threading
import time

import pytest
from conftest import fill, one_ring_on
from faultkit import (
    GET_LOCK,
    PUT_LOCK,
    Child,
    handle,
    hold_put_lock,
    open_where,
    wait_until,
)
from test_faults import get_then_report, put_then_report, wait_asleep

from ringshm import Empty, Full, MessageTooLarge, Ring

pytestmark = [pytest.mark.multiprocess, pytest.mark.fault]

SLICE = 5.0     # recovery_interval: the longest a lost wake-up could hide
PROMPT = 0.1    # the bound for the next message to reach a peer
SLOW = 10.0     # bound on waits that may take a moment on a busy machine


# The waits are the core's, above the mapping: a POSIX segment and a System
# V one (whose lock slots live on a companion file) stand for the backings.
@pytest.fixture(params=["shm", "sysv"])
def ring(request, tmp_path):
    yield from one_ring_on(request.param, tmp_path, capacity=4096, recovery_interval=SLICE)


def stopped(child):
    """SIGSTOP `child` and wait until the kernel says it is stopped."""
    os.kill(child.pid, signal.SIGSTOP)
    wait_until(lambda: _state(child.pid) == "T", what=f"child {child.pid} stopped")


def _state(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


# ---------------------------------------------------------------- stopped waiters

@contextlib.contextmanager
def stopped_waiter_and_another(raw, queue, frozen, other):
    """Children `frozen` and `other` (faultkit.Child) both sleep on `queue`,
    `frozen` stopped; yields `other`, holding no lock of the ring."""
    with frozen, other:
        frozen.wait_ready()
        wait_asleep(frozen, raw, queue)
        stopped(frozen)
        other.wait_ready()
        wait_asleep(other, raw, queue)
        assert (raw.owner(PUT_LOCK), raw.owner(GET_LOCK)) == (0, 0)
        try:
            yield other
        finally:
            os.kill(frozen.pid, signal.SIGCONT)


def test_stopped_consumer_waiting_for_data_delays_nobody(ring, raw):
    with stopped_waiter_and_another(raw, "data", Child(get_then_report, handle(ring)),
                                    Child(get_then_report, handle(ring))) as other:
        sent = time.monotonic()
        ring.put(b"next")
        got_at, message = other.wait_ready(timeout=SLOW).split()
        assert bytes.fromhex(message) == b"next"
        assert float(got_at) - sent < PROMPT
        # And this process, no waiter before, is not held up either.
        ring.put(b"after")
        assert ring.get(timeout=1) == b"after"
        assert len(ring) == 0


def test_stopped_producer_waiting_for_room_delays_nobody(ring, raw):
    size = 500                      # 8 records of 512 bytes fill 4096
    assert fill(ring, size) == 8
    with stopped_waiter_and_another(raw, "space",
                                    Child(put_then_report, handle(ring), b"F" * size),
                                    Child(put_then_report, handle(ring), b"O" * size)) as other:
        freed = time.monotonic()
        ring.get()
        put_at = float(other.wait_ready(timeout=SLOW))
        assert put_at - freed < PROMPT
        messages = [ring.get_nowait() for _ in range(8)]
        assert messages[-1] == b"O" * size
        with pytest.raises(Empty):
            ring.get_nowait()
        # And this process's own put is not held up by the frozen producer.
        ring.put(b"mine", timeout=1)
        assert ring.get_nowait() == b"mine"


# ---------------------------------------------------------------- many sleepers

def take_and_forward(link, name, results):
    """get() messages for ever, forwarding each to the `results` ring."""
    ring = open_where(name)
    link.ready()
    while True:
        results.put(ring.get())


@pytest.mark.parametrize("sleepers", [4, 16])
def test_many_consumers_sleep_and_none_misses_a_wake(ring, raw, sleepers):
    rounds = 3
    results = Ring.anonymous(1 << 16)
    children = [Child(take_and_forward, handle(ring), results) for _ in range(sleepers)]
    try:
        for child in children:
            child.wait_ready()
        got = []
        for r in range(rounds):
            wait_until(lambda: raw.wanted("data") == 1, what="sleepers armed")
            time.sleep(0.05)
            start = time.monotonic()
            # One message per sleeper, each to exactly one of them, and
            # promptly: a lost wake-up would wait a whole SLICE.
            for i in range(sleepers):
                ring.put(f"{r}:{i}".encode())
            got += [results.get(timeout=SLOW).decode() for _ in range(sleepers)]
            assert time.monotonic() - start < SLICE / 2
        assert sorted(got) == sorted(f"{r}:{i}" for r in range(rounds) for i in range(sleepers))
        with pytest.raises(Empty):
            results.get(timeout=0.2)
    finally:
        for child in children:
            child.close()
        results.close()
    stats = ring.stats()
    assert stats["messages_got"] == stats["messages_put"] == rounds * sleepers


def put_all(link, name, tag, count):
    ring = open_where(name)
    link.ready()
    for i in range(count):
        ring.put(f"{tag}:{i}".encode().ljust(200, b"."))
    ring.close()


def test_many_producers_sleep_for_room_and_order_holds(ring, raw):
    producers, each = 4, 50
    fill(ring, 200)
    left = len(ring)
    children = [Child(put_all, handle(ring), p, each) for p in range(producers)]
    try:
        for child in children:
            child.wait_ready()
        wait_until(lambda: raw.wanted("space") == 1, what="producers asleep for room")
        got = [ring.get(timeout=SLOW) for _ in range(left + producers * each)]
        for child in children:
            assert child.join() == 0
    finally:
        for child in children:
            child.close()
    mine = [m.rstrip(b".").decode() for m in got[left:]]
    for p in range(producers):
        assert [m for m in mine if m.startswith(f"{p}:")] == [f"{p}:{i}" for i in range(each)]
    assert len(ring) == 0


# ---------------------------------------------------------------- _wait_data, _wait_room

def test_wait_data_times_out_on_an_empty_ring(ring):
    start = time.monotonic()
    assert ring._wait_data(timeout=0.05) is False
    assert time.monotonic() - start >= 0.045
    assert ring._wait_data(timeout=0) is False


def test_wait_data_takes_nothing(ring):
    ring.put(b"x")
    assert ring._wait_data(timeout=0) is True
    assert ring._wait_data() is True
    assert len(ring) == 1 and ring.stats()["messages_got"] == 0
    assert ring.get_nowait() == b"x"


def put_later(link, name, delay):
    ring = open_where(name)
    link.ready()
    time.sleep(delay)
    ring.put(b"later")
    ring.close()


def test_wait_data_wakes_when_a_message_comes(ring):
    with Child(put_later, handle(ring), 0.2) as child:
        child.wait_ready()
        start = time.monotonic()
        assert ring._wait_data(timeout=SLOW) is True
        assert 0.15 < time.monotonic() - start < SLICE
        assert child.join() == 0
    assert ring.get_nowait() == b"later"


def test_wait_data_returns_on_shutdown(ring):
    threading.Timer(0.1, ring.shutdown).start()
    start = time.monotonic()
    assert ring._wait_data(timeout=SLOW) is True
    assert time.monotonic() - start < SLICE


def test_wait_data_holds_no_lock(ring, raw):
    def wait_in_child(link, name):
        r = open_where(name)
        link.ready()
        r._wait_data(timeout=60)
        link.ready("woke")

    with Child(wait_in_child, handle(ring)) as child:
        child.wait_ready()
        wait_asleep(child, raw, "data")
        stopped(child)
        ring.put(b"a")
        assert ring.get(timeout=1) == b"a"
        os.kill(child.pid, signal.SIGCONT)
        # Resumed, it finds the ring empty again and goes on waiting.
        wait_asleep(child, raw, "data")
        ring.put(b"b")
        assert child.wait_ready(timeout=SLOW) == "woke"
        assert len(ring) == 1


def test_wait_room_on_a_full_ring(ring):
    fill(ring, 500)
    assert ring._wait_room(500, timeout=0.05) is False
    assert ring._wait_room(0, timeout=0) is False
    threading.Timer(0.1, ring.get).start()
    start = time.monotonic()
    assert ring._wait_room(500, timeout=SLOW) is True
    assert time.monotonic() - start < SLICE
    ring.put_nowait(b"y" * 500)      # it did fit, and nothing was reserved
    assert ring._wait_room(500, timeout=0) is False


def test_wait_room_counts_the_wrap_padding(make_ring):
    ring = make_ring(capacity=4096)
    ring.put(b"a" * 1500)            # a record of 1512 bytes
    ring.get()
    ring.put(b"b" * 2000)            # head 3520, tail 1512: 2088 free, 576 in this lap
    # 1520 bytes (a 1528-byte record) fit the free bytes, but not after the
    # padding to the end of the lap: 576 + 1528 > 2088.
    assert ring._wait_room(1520, timeout=0) is False
    assert ring._wait_room(1504, timeout=0) is True     # 576 + 1512 == 2088
    with pytest.raises(Full):
        ring.put_nowait(b"c" * 1520)
    ring.put_nowait(b"c" * 1504)


def test_wait_room_counts_max_messages(make_ring):
    ring = make_ring(capacity=4096, max_messages=1)
    ring.put(b"1")
    assert ring._wait_room(1, timeout=0.02) is False
    ring.get()
    assert ring._wait_room(1, timeout=0) is True


def test_wait_room_returns_on_shutdown(ring):
    fill(ring, 500)
    threading.Timer(0.1, ring.shutdown).start()
    assert ring._wait_room(500, timeout=SLOW) is True


def test_wait_room_refuses_what_never_fits(ring):
    with pytest.raises(MessageTooLarge):
        ring._wait_room(ring.max_message_size + 1)
    with pytest.raises(ValueError):
        ring._wait_room(-1)
    with pytest.raises(TypeError):
        ring._wait_room(1.5)


def test_waits_on_a_closed_ring(make_ring):
    ring = make_ring()
    ring.close()
    with pytest.raises(ValueError):
        ring._wait_data(0)
    with pytest.raises(ValueError):
        ring._wait_room(1, 0)


def test_close_from_another_thread_ends_a_wait(make_ring):
    ring = make_ring(recovery_interval=SLICE)
    closer = threading.Timer(0.1, ring.close)
    closer.start()
    start = time.monotonic()
    with pytest.raises(ValueError):
        ring._wait_data(timeout=SLOW)
    assert time.monotonic() - start < SLICE
    # The wait ends as soon as close() has begun; the fixture's check that
    # the name is gone must come after that close() has finished.
    closer.join(SLOW)


def test_a_signal_handler_interrupts_a_wait(ring):
    class Interrupted(Exception):
        pass

    def handler(signum, frame):
        raise Interrupted

    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        start = time.monotonic()
        with pytest.raises(Interrupted):
            ring._wait_data(timeout=SLOW)
        assert time.monotonic() - start < SLICE
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_close_while_shutdown_waits_for_a_publishing_put(ring):
    """shutdown() lets a put that is publishing elsewhere finish (up to 1 s,
    the GIL released); a close() from another thread meanwhile must not
    unmap the header under it (it crashed the interpreter: shutdown did not
    count as an operation in progress)."""
    with Child(hold_put_lock, handle(ring)) as holder:
        holder.wait_ready()
        done = []
        waiter = threading.Thread(target=lambda: done.append(ring.shutdown()))
        waiter.start()
        time.sleep(0.2)            # inside its wait for the holder
        ring.close()
        waiter.join(SLOW)
        assert done == [None] and ring.closed
