"""Topics whose processes die or stop: a publisher SIGKILLed inside
reserve() or while publishing, a subscriber SIGKILLed inside get() or
view(), a tethered subscriber SIGSTOPped (publishers wait for it; with a
stall_timeout they go on and it sees Lagged), an untethered one
SIGSTOPped (publishers never notice).  The others go on within the
recovery interval; the bounds below are generous (a busy 2-core machine),
never measurements.  Children are forked by faultkit.Child and always
reaped."""

import os
import random
import signal
import time

import pytest
from conftest import unique_ring_name
from faultkit import Child, wait_until

from ringshm import Empty, Full, Lagged, Topic

pytestmark = [pytest.mark.fault, pytest.mark.multiprocess]

RECOVERY = 0.1
BOUND = RECOVERY + 5.0   # generous: "within the recovery interval" on a loaded box


def record_span(payload):
    return (16 + payload + 15) // 16 * 16


def numbered(i, size=48):
    return i.to_bytes(4, "little") * (size // 4)


@pytest.fixture
def topic():
    topic = Topic.create(unique_ring_name(), 4096, recovery_interval=RECOVERY)
    yield topic
    topic.close()


def fits(topic, size=48):
    return topic.capacity // record_span(size)


# ---------------------------------------------------------------- children

def reserve_and_hang(link, name):
    topic = Topic.open(name)
    with topic.reserve(48) as space:
        space[:] = b"never published".ljust(48, b".")
        link.ready()
        time.sleep(3600)


def publish_forever(link, name, first):
    topic = Topic.open(name)
    link.ready()
    n = first
    while True:
        topic.publish(numbered(n), timeout=60)
        n += 1


def subscribe_and_get(link, name, how):
    topic = Topic.open(name)
    sub = topic.subscribe()
    link.ready()
    if how == "get":
        sub.get()
    else:
        with sub.view():
            link.ready("viewing")
            time.sleep(3600)


def subscribe_then_report(link, name, tethered, stall_timeout):
    """Subscribe, say so, wait for go(), then report what the first get
    raised or returned, and the get after it."""
    topic = Topic.open(name)
    sub = topic.subscribe(tethered=tethered, stall_timeout=stall_timeout)
    link.ready()
    link.wait_go()
    try:
        first = f"message {int.from_bytes(sub.get(timeout=10)[:4], 'little')}"
    except Lagged as exc:
        first = f"lagged {exc.missed}"
    second = int.from_bytes(sub.get(timeout=10)[:4], "little")
    link.ready(f"{first} then {second} tethered={sub.tethered}")


# ---------------------------------------------------------------- publishers

def test_publisher_killed_inside_reserve(topic):
    sub = topic.subscribe()
    with Child(reserve_and_hang, topic.name) as child:
        child.wait_ready()
        child.kill()
    started = time.monotonic()
    topic.publish(b"after the death", timeout=BOUND + 5)
    assert time.monotonic() - started < BOUND
    assert sub.get(timeout=5) == b"after the death"   # the dead one's write vanished
    assert topic.stats()["lock_recoveries"] == 1


def test_publisher_killed_while_publishing(topic):
    """Kill a publisher at random moments of a publishing loop (inside
    publish or between two): what it published is whole and in order, and
    the survivor publishes within the bound."""
    sub = topic.subscribe()
    rng = random.Random(5)
    for round_ in range(8):
        first = round_ * 1_000_000
        with Child(publish_forever, topic.name, first) as child:
            child.wait_ready()
            deadline = time.monotonic() + rng.uniform(0.005, 0.05)
            received = []
            while time.monotonic() < deadline:
                received.extend(sub.get_many(timeout=1))
            child.kill()
        while True:   # what it published before it died (a tethered reader holds the log)
            try:
                received.extend(sub.get_many(timeout=0.2))
            except Empty:
                break
        started = time.monotonic()
        topic.publish(b"survivor", timeout=BOUND + 5)   # its lock, if it held it, recovered
        assert time.monotonic() - started < BOUND
        assert sub.get(timeout=5) == b"survivor"
        # Whole, in order, none twice: first, first + 1, ...
        assert received == [numbered(first + i) for i in range(len(received))]


# ---------------------------------------------------------------- subscribers

@pytest.mark.parametrize("how", ["get", "view"])
def test_dead_tethered_subscriber_stops_holding_publishers_back(topic, how):
    with Child(subscribe_and_get, topic.name, how) as child:
        child.wait_ready()
        if how == "view":
            topic.publish(b"being read")
            assert child.wait_ready() == "viewing"
        assert topic.stats()["tethered"] == 1
        child.kill()
    started = time.monotonic()
    for i in range(3 * fits(topic)):   # laps over the dead one's position
        topic.publish(numbered(i), timeout=BOUND + 5)
    assert time.monotonic() - started < BOUND
    assert topic.stats()["reaped"] == 1
    assert topic.subscribers() == []


def test_stopped_tethered_subscriber_makes_publishers_wait(topic):
    with Child(subscribe_then_report, topic.name, True, None) as child:
        child.wait_ready()
        os.kill(child.pid, signal.SIGSTOP)
        try:
            for i in range(fits(topic)):
                topic.publish(numbered(i), timeout=5)
            with pytest.raises(Full):
                topic.publish(numbered(fits(topic)), timeout=1.0)   # it waits for the child
        finally:
            os.kill(child.pid, signal.SIGCONT)
        child.go()
        assert child.wait_ready() == "message 0 then 1 tethered=True"
    assert topic.stats()["stalls"] == 0


def test_stopped_subscriber_with_stall_timeout_is_untethered(topic):
    with Child(subscribe_then_report, topic.name, True, 0.3) as child:
        child.wait_ready()
        os.kill(child.pid, signal.SIGSTOP)
        try:
            for i in range(fits(topic)):
                topic.publish(numbered(i), timeout=5)
            started = time.monotonic()
            for i in range(fits(topic), fits(topic) + 5):
                topic.publish(numbered(i), timeout=30)   # goes on once it stalled
            assert time.monotonic() - started < 20
            info, = topic.subscribers()
            assert info.stalled and not info.tethered and info.pid == child.pid
        finally:
            os.kill(child.pid, signal.SIGCONT)
        child.go()
        assert child.wait_ready() == "lagged 5 then 5 tethered=False"
    assert topic.stats()["stalls"] == 1


def test_stopped_untethered_subscriber_goes_unnoticed(topic):
    with Child(subscribe_then_report, topic.name, False, None) as child:
        child.wait_ready()
        os.kill(child.pid, signal.SIGSTOP)
        try:
            total = 10 * fits(topic)
            for i in range(total):
                topic.publish(numbered(i), timeout=0)   # never waits
        finally:
            os.kill(child.pid, signal.SIGCONT)
        child.go()
        missed = total - fits(topic)
        assert child.wait_ready() == f"lagged {missed} then {missed} tethered=False"
    stats = topic.stats()
    assert stats["publish_waits"] == 0 and stats["publish_timeouts"] == 0


def test_a_dead_subscribers_entry_is_taken_again(topic):
    subs = [topic.subscribe(tethered=False) for _ in range(127)]
    with Child(subscribe_and_get, topic.name, "get") as child:
        child.wait_ready()
        child.kill()
    wait_until(lambda: not any(i.alive for i in topic.subscribers() if i.pid != os.getpid()),
               what="the subscriber to be seen dead")
    subs.append(topic.subscribe())   # the 128th: the dead one's entry
    assert topic.stats()["subscribers"] == 128
    for sub in subs:
        sub.close()
