"""Waiting: timeouts expire on time, a wait ends when its event comes,
shutdown() wakes every sleeper at once, and Ctrl-C reaches a blocked call.

Lower bounds are the timeouts themselves; upper bounds are generous (a busy
2-core CI machine) and only catch a wait that ignores its timeout or its
wake-up."""

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import child_env, default_sigint, join_or_kill, ringshm_home, where_stuck

from ringshm import Empty, Full, Ring, ShutDown

EARLY = 0.005  # a deadline rounded to the clock's tick may end this early
WAKE = 0.5     # shutdown() and Ctrl-C must be seen within this


def fill(ring):
    while True:
        try:
            ring.put_nowait(b"f" * 100)
        except Full:
            return


def elapsed(call, error):
    start = time.monotonic()
    with pytest.raises(error):
        call()
    return time.monotonic() - start


# ----------------------------------------------------------------- timeouts

EMPTY_WAITS = {
    "get": lambda ring: ring.get(timeout=0.2),
    "get_many": lambda ring: ring.get_many(timeout=0.2),
    "get_into": lambda ring: ring.get_into(bytearray(8), timeout=0.2),
    "view": lambda ring: ring.view(timeout=0.2).__enter__(),
}
FULL_WAITS = {
    "put": lambda ring: ring.put(b"x" * 100, timeout=0.2),
    "put_many": lambda ring: ring.put_many([b"x" * 100], timeout=0.2),
    "reserve": lambda ring: ring.reserve(100, timeout=0.2).__enter__(),
}


@pytest.mark.parametrize("wait", EMPTY_WAITS.values(), ids=EMPTY_WAITS.keys())
def test_empty_ring_times_out(make_ring, wait):
    ring = make_ring()
    assert 0.2 - EARLY <= elapsed(lambda: wait(ring), Empty) <= 0.5


@pytest.mark.parametrize("wait", FULL_WAITS.values(), ids=FULL_WAITS.keys())
def test_full_ring_times_out(make_ring, wait):
    ring = make_ring()
    fill(ring)
    count = len(ring)
    assert 0.2 - EARLY <= elapsed(lambda: wait(ring), Full) <= 0.5
    assert len(ring) == count


def in_thread(call):
    """call() in another thread (a lock held by this thread is then held by
    somebody else); return what it raised."""
    raised = []

    def run():
        try:
            call()
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the call ignored its timeout"
    return raised


def test_waits_for_a_held_lock_time_out(make_ring):
    ring = make_ring()
    ring.put(b"waiting")
    with ring.reserve(8) as buffer:   # holds the put lock
        buffer[:] = b"reserved"
        start = time.monotonic()
        raised = in_thread(lambda: ring.put(b"x", timeout=0.2))
        assert 0.2 - EARLY <= time.monotonic() - start <= 0.5
        assert [type(e) for e in raised] == [Full]
        assert [type(e) for e in in_thread(lambda: ring.put_nowait(b"x"))] == [Full]
    with ring.view():       # holds the get lock (and then consumes b"waiting")
        start = time.monotonic()
        raised = in_thread(lambda: ring.get(timeout=0.2))
        assert 0.2 - EARLY <= time.monotonic() - start <= 0.5
        assert [type(e) for e in raised] == [Empty]
        assert [type(e) for e in in_thread(ring.get_nowait)] == [Empty]
    assert ring.get_many(block=False) == [b"reserved"]


def test_block_false_ignores_timeout(make_ring):
    ring = make_ring()
    assert elapsed(lambda: ring.get(block=False, timeout=5), Empty) < 0.1
    assert elapsed(lambda: ring.get_many(block=False, timeout=5), Empty) < 0.1
    fill(ring)
    message = b"x" * 100   # as large as fill()'s, so it does not fit
    assert elapsed(lambda: ring.put(message, block=False, timeout=5), Full) < 0.1
    assert elapsed(lambda: ring.put_many([message], block=False, timeout=5), Full) < 0.1


# --------------------------------------------------- waits that end early

def later(seconds, action):
    timer = threading.Timer(seconds, action)
    timer.start()
    return timer


@pytest.mark.parametrize("timeout", [None, 5])
def test_get_waits_for_a_message_from_a_thread(make_ring, timeout):
    ring = make_ring()
    # The clock starts before the timer: on a busy machine the timer thread
    # may run a while before this one takes the clock again.
    start = time.monotonic()
    timer = later(0.3, lambda: ring.put(b"late"))
    try:
        assert ring.get(timeout=timeout) == b"late"
    finally:
        timer.join()
    assert 0.3 - EARLY <= time.monotonic() - start <= 0.3 + WAKE


@pytest.mark.parametrize("timeout", [None, 5])
def test_put_waits_for_room_from_a_thread(make_ring, timeout):
    ring = make_ring()
    fill(ring)
    start = time.monotonic()
    timer = later(0.3, ring.get)
    try:
        ring.put(b"x" * 100, timeout=timeout)
    finally:
        timer.join()
    assert 0.3 - EARLY <= time.monotonic() - start <= 0.3 + WAKE


def test_put_waits_for_max_messages_room(make_ring):
    ring = make_ring(max_messages=2)
    ring.put(b"1")
    ring.put(b"2")
    assert ring.full()
    assert 0.1 - EARLY <= elapsed(lambda: ring.put(b"3", timeout=0.1), Full) <= 0.5
    start = time.monotonic()
    timer = later(0.3, ring.get)
    try:
        ring.put(b"3")
    finally:
        timer.join()
    assert 0.3 - EARLY <= time.monotonic() - start <= 0.3 + WAKE
    assert ring.get_many(block=False) == [b"2", b"3"]


def test_spinning_does_not_outlast_the_timeout(make_ring):
    ring = make_ring(spin=1_000_000)   # 1 s of busy-waiting before sleeping
    assert 0.05 - EARLY <= elapsed(lambda: ring.get(timeout=0.05), Empty) <= 0.5


def _put_later(name):
    time.sleep(0.3)
    with Ring.open(name) as ring:
        ring.put(b"from another process")


def test_get_waits_for_a_message_from_a_process(make_ring):
    ring = make_ring()
    child = multiprocessing.get_context("fork").Process(target=_put_later, args=(ring.name,))
    child.start()
    try:
        assert ring.get() == b"from another process"
    finally:
        join_or_kill(child)
    assert child.exitcode == 0


# ----------------------------------------------------------------- shutdown

# A long recovery_interval makes long sleep slices: the wake-up must not
# wait for the end of one.
@pytest.mark.parametrize("recovery_interval", [0.1, 30])
def test_shutdown_wakes_blocked_threads(make_ring, recovery_interval):
    getters_ring = make_ring(recovery_interval=recovery_interval)
    putters_ring = make_ring(recovery_interval=recovery_interval)
    fill(putters_ring)
    outcomes = []

    def blocked(call):
        try:
            call()
            outcomes.append("returned")
        except ShutDown:
            outcomes.append(("ShutDown", time.monotonic()))
        except Exception as exc:
            outcomes.append(repr(exc))

    calls = [getters_ring.get, getters_ring.get, lambda: getters_ring.get_many(),
             lambda: putters_ring.put(b"x" * 100), lambda: putters_ring.put_many([b"x" * 100])]
    threads = [threading.Thread(target=blocked, args=(call,), daemon=True) for call in calls]
    for thread in threads:
        thread.start()
    time.sleep(0.3)   # let them all fall asleep
    assert not outcomes
    start = time.monotonic()
    getters_ring.shutdown()
    putters_ring.shutdown()
    for thread in threads:
        thread.join(5)
    assert all(isinstance(o, tuple) for o in outcomes) and len(outcomes) == len(calls), outcomes
    assert max(t for _, t in outcomes) - start <= WAKE


def _blocked_in_child(name, kind, asleep):
    ring = Ring.open(name)
    asleep.set()
    try:
        ring.get() if kind == "get" else ring.put(b"x" * 100)
    except ShutDown:
        os._exit(0)
    os._exit(1)


@pytest.mark.parametrize("method", ["fork", "spawn"])
@pytest.mark.parametrize("recovery_interval", [0.1, 30])
def test_shutdown_wakes_blocked_processes(make_ring, method, recovery_interval):
    ctx = multiprocessing.get_context(method)
    getters_ring = make_ring(recovery_interval=recovery_interval)
    putters_ring = make_ring(recovery_interval=recovery_interval)
    fill(putters_ring)
    children = []
    for kind, ring in [("get", getters_ring)] * 2 + [("put", putters_ring)] * 2:
        asleep = ctx.Event()
        child = ctx.Process(target=_blocked_in_child, args=(ring.name, kind, asleep))
        child.start()
        children.append((child, asleep))
    try:
        for _, asleep in children:
            assert asleep.wait(30)
        time.sleep(0.3)   # from the event to the sleep inside get/put
        assert all(child.exitcode is None for child, _ in children)
        start = time.monotonic()
        getters_ring.shutdown()
        putters_ring.shutdown()
        for child, _ in children:
            child.join(5)
        took = time.monotonic() - start
    finally:
        for child, _ in children:
            join_or_kill(child, timeout=0)
    assert [child.exitcode for child, _ in children] == [0] * 4
    assert took <= WAKE + 0.2   # + the exit of four processes


# ------------------------------------------------------------------- Ctrl-C

CTRL_C_PEER = r"""
import sys, time
from ringshm import Ring
ring = Ring.open(sys.argv[1])
print("ready", flush=True)
try:
    ring.get() if sys.argv[2] == "get" else ring.put(b"x" * 100)
except KeyboardInterrupt:
    print("KeyboardInterrupt", time.monotonic(), flush=True)
"""


@pytest.mark.parametrize("recovery_interval", [0.1, 30])
@pytest.mark.parametrize("kind", ["get", "put", "put_lock"])
def test_ctrl_c_interrupts_a_blocked_call(make_ring, kind, recovery_interval):
    """kind: the child waits for a message, for room, or for the put lock
    (which this process holds inside reserve())."""
    ring = make_ring(recovery_interval=recovery_interval)
    holding = contextlib.ExitStack()
    if kind == "put":
        fill(ring)
    elif kind == "put_lock":
        holding.enter_context(ring.reserve(8))
    env = child_env()
    child = subprocess.Popen([sys.executable, "-c", CTRL_C_PEER, ring.name, kind],
                             cwd=ringshm_home(), env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    try:
        with holding:
            assert child.stdout.readline() == "ready\n"
            time.sleep(0.3)
            assert child.poll() is None, "the blocked call returned by itself"
            sent = time.monotonic()
            child.send_signal(signal.SIGINT)
            try:
                out, err = child.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                stuck = where_stuck(child.pid)
                child.kill()
                out, err = child.communicate()
                pytest.fail(f"the blocked call ({kind}) ignored SIGINT; the child:\n{stuck}\n"
                            f"stdout:\n{out}\nstderr:\n{err}")
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 0, err
    word, when = out.split()
    assert word == "KeyboardInterrupt"
    assert float(when) - sent <= WAKE
