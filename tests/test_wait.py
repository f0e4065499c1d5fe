"""ringshm.wait(): many rings and queues at once, as
multiprocessing.connection.wait (and rs_wait under it): every arrival is
reported, timeouts, shut-down rings, a ring closed during the wait, more
than one futex_waitv's worth of rings, Ctrl-C, and the polling fallback."""

import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import child_env, default_sigint, ringshm_home

from ringshm import JoinableQueue, Queue, Ring, SimpleQueue, wait
from ringshm._ring import wait_uses_futex_waitv

SLOW = 10.0   # bound on waits that may take a moment on a busy machine


@pytest.fixture
def queues():
    made = []

    def make(kind=Queue, **kwargs):
        queue = kind(capacity=4096, **kwargs)
        made.append(queue)
        return queue

    yield make
    for queue in made:
        queue.close()


def test_nothing_ready_times_out(make_ring, queues):
    rings = [make_ring() for _ in range(3)] + [queues()]
    started = time.monotonic()
    assert wait(rings, timeout=0) == []
    assert wait(rings, timeout=0.05) == []
    assert time.monotonic() - started >= 0.05
    assert wait([], timeout=0) == []


def test_reports_exactly_those_with_a_message_in_the_order_given(make_ring, queues):
    a, b, c = make_ring(), make_ring(), make_ring()
    q, jq, sq = queues(), queues(JoinableQueue), queues(SimpleQueue)
    everything = [a, q, b, jq, c, sq]
    c.put(b"x")
    jq.put(1)
    assert wait(everything, timeout=0) == [jq, c]
    a.put(b"y")
    sq.put(2)
    assert wait(everything, timeout=SLOW) == [a, jq, c, sq]
    # It takes nothing.
    assert a.get_nowait() == b"y" and c.get_nowait() == b"x"
    assert jq.get_nowait() == 1 and sq.get() == 2
    assert wait(everything, timeout=0) == []


def test_a_shut_down_ring_is_ready(make_ring):
    a, b = make_ring(), make_ring()
    threading.Timer(0.05, b.shutdown).start()
    assert wait([a, b], timeout=SLOW) == [b]


def test_wakes_on_a_put_from_another_thread(make_ring):
    rings = [make_ring() for _ in range(8)]
    threading.Timer(0.05, rings[5].put, (b"late",)).start()
    started = time.monotonic()
    assert wait(rings, timeout=SLOW) == [rings[5]]
    assert time.monotonic() - started < SLOW


def test_more_rings_than_one_futex_waitv_takes(make_ring):
    rings = [make_ring() for _ in range(300)]
    for index in (0, 126, 127, 128, 254, 299):
        assert wait(rings, timeout=0) == []
        threading.Timer(0.02, rings[index].put, (b"x",)).start()
        assert wait(rings, timeout=SLOW) == [rings[index]]
        rings[index].get_nowait()
    threads = threading.active_count()
    assert wait(rings, timeout=0.02) == []
    assert threading.active_count() == threads   # its helper threads are gone


def _producer(names, rounds, seed, go, done):
    rng = random.Random(seed)
    rings = [Ring.open(name) for name in names]
    try:
        for number in range(rounds):
            index = rng.randrange(len(rings))
            rings[index].put(number.to_bytes(4, "little"))
            # One message at a time: the next only once this one was taken.
            if not go.wait(SLOW):
                return
            go.clear()
        done.set()
    finally:
        for ring in rings:
            ring.close()


@pytest.mark.multiprocess
def test_every_arrival_on_a_random_ring_from_another_process_is_reported(make_ring, queues):
    rounds = 10_000
    rings = [make_ring() for _ in range(15)]
    queue = queues()
    context = multiprocessing.get_context("fork")
    go, done = context.Event(), context.Event()
    names = [ring.name for ring in rings] + [queue._ring.name]
    producer = context.Process(target=_producer, args=(names, rounds, 1234, go, done))
    producer.start()
    objects = rings + [queue]
    try:
        for number in range(rounds):
            ready = wait(objects, timeout=SLOW)
            assert len(ready) == 1, (number, ready)
            obj = ready[0]
            message = obj._ring.get_nowait() if obj is queue else obj.get_nowait()
            assert int.from_bytes(message, "little") == number
            go.set()
        assert done.wait(SLOW)
    finally:
        producer.join(SLOW)
        if producer.is_alive():
            producer.kill()
            producer.join()
    assert producer.exitcode == 0
    assert wait(objects, timeout=0) == []


def test_a_ring_closed_during_the_wait_ends_it(make_ring):
    a, b = make_ring(), make_ring()
    closer = threading.Timer(0.1, b.close)
    closer.start()
    started = time.monotonic()
    with pytest.raises(ValueError, match="closed"):
        wait([a, b], timeout=SLOW)
    assert time.monotonic() - started < SLOW / 2
    closer.join()
    with pytest.raises(ValueError):
        wait([a, b], timeout=0)


def test_bad_arguments(make_ring):
    ring = make_ring()
    with pytest.raises(TypeError, match="Ring, Queue and Subscription"):
        wait([ring, object()], timeout=0)
    with pytest.raises(ValueError):
        wait([ring], timeout=-1)
    with pytest.raises(TypeError):
        wait([ring], timeout="soon")


def test_a_stopped_waiter_delays_nobody(make_ring):
    ring = make_ring()
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; from ringshm import Ring, wait; "
         "r = Ring.open(sys.argv[1]); print('ready', flush=True); wait([r])", ring.name],
        cwd=ringshm_home(), env=child_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "ready\n"
        time.sleep(0.1)
        os.kill(child.pid, signal.SIGSTOP)
        for i in range(100):
            ring.put(b"%d" % i, timeout=SLOW)
            assert ring.get(timeout=SLOW) == b"%d" % i
    finally:
        child.kill()
        child.wait()


CTRL_C = r"""
import sys, time
from ringshm import Ring, wait
rings = [Ring.open(name) for name in sys.argv[1:]]
print("ready", flush=True)
try:
    wait(rings)
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
"""


@pytest.mark.parametrize("count", [2, 200])
def test_ctrl_c_interrupts_the_wait(make_ring, count):
    rings = [make_ring(recovery_interval=30) for _ in range(count)]
    child = subprocess.Popen([sys.executable, "-c", CTRL_C, *[r.name for r in rings]],
                             cwd=ringshm_home(), env=child_env(), stdout=subprocess.PIPE,
                             preexec_fn=default_sigint,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "ready\n"
        time.sleep(0.3)
        assert child.poll() is None, "the wait returned by itself"
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=SLOW)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert out == "KeyboardInterrupt\n", err


FALLBACK = r"""
import sys, threading, time
from ringshm import Ring, wait
from ringshm._ring import wait_uses_futex_waitv
rings = [Ring.open(name) for name in sys.argv[1:]]
assert wait(rings, timeout=0.01) == []
assert not wait_uses_futex_waitv()
for index in (0, len(rings) - 1):
    threading.Timer(0.05, rings[index].put, (b"x",)).start()
    assert wait(rings, timeout=10) == [rings[index]]
    rings[index].get_nowait()
rings[1].shutdown()
assert wait(rings, timeout=10) == [rings[1]]
print("ok", time.process_time(), flush=True)
"""


def test_the_fallback_without_futex_waitv_works_and_does_not_spin(make_ring):
    rings = [make_ring() for _ in range(130)]
    env = child_env(RINGSHM_NO_FUTEX_WAITV="1")
    done = subprocess.run([sys.executable, "-c", FALLBACK, *[r.name for r in rings]],
                          cwd=ringshm_home(), env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    word, cpu = done.stdout.split()
    assert word == "ok"
    # It waited about 0.1 s in all; a busy loop would have burnt that much
    # CPU, polling every 2 ms burns a small part of it (plus the start-up).
    assert float(cpu) < 5.0


def test_this_kernel_has_futex_waitv():
    # Linux 5.16+: the machines this project runs on.  A kernel without it
    # takes the fallback (tested above); say which this run exercised.
    release = tuple(int(part) for part in os.uname().release.split("-")[0].split(".")[:2])
    if release < (5, 16) and not wait_uses_futex_waitv():
        pytest.skip("this kernel has no futex_waitv (Linux < 5.16): the fallback polls")
    assert wait_uses_futex_waitv()
