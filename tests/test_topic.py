"""Topics from Python: publish/subscribe, tethered and untethered
subscribers, Lagged, history, shutdown, zero-copy blocks, the subscriber
limit, a topic and a ring each refused as the other, pickling, ObjectTopic.

Each test makes its own topics under unique names and closes them; the
other files are test_topic_statemachine.py (against a model),
test_topic_processes.py (processes and threads) and test_topic_faults.py
(kills and stops)."""

import multiprocessing
import os
import pickle
import threading
import time

import pytest
from conftest import closing, shm_path, unique_ring_name

from ringshm import (
    Empty,
    Full,
    Lagged,
    MessageTooLarge,
    ObjectTopic,
    Ring,
    RingCorrupted,
    RingError,
    RingExists,
    RingWrongKind,
    ShutDown,
    Subscription,
    Topic,
)
from ringshm.topic import MAX_SUBSCRIBERS


def record_span(payload):
    """A topic record: a 16-byte header and the payload, 16-aligned."""
    return (16 + payload + 15) // 16 * 16


def create_topic(capacity=4096, **options):
    return Topic.create(unique_ring_name(), capacity, **options)


@pytest.fixture
def make_topic():
    yield from closing(create_topic)


def numbered(i, size=48):
    return i.to_bytes(4, "little") * (size // 4)


# ---------------------------------------------------------------- basics

def test_tethered_subscriber_receives_every_message_in_order(make_topic):
    topic = make_topic()
    sub = topic.subscribe()
    assert sub.tethered and isinstance(sub, Subscription)
    messages = [numbered(i) for i in range(500)]   # several laps of the log
    received = []
    for message in messages:
        topic.publish(message, timeout=0)
        received.append(sub.get(timeout=0))
    assert received == messages
    with pytest.raises(Empty):
        sub.get_nowait()
    with pytest.raises(Empty):
        sub.get(timeout=0.01)


def test_every_subscriber_receives_what_was_published_after_it_subscribed(make_topic):
    topic = make_topic()
    topic.publish(b"before anyone")
    first = topic.subscribe()
    topic.publish(b"one")
    second = topic.subscribe(tethered=False)
    topic.publish_many([b"two", b"three"])
    assert first.get_many() == [b"one", b"two", b"three"]
    assert second.get_many() == [b"two", b"three"]
    assert first.lag == second.lag == 0


def test_a_tethered_subscriber_holds_publishers_back_and_loses_nothing(make_topic):
    topic = make_topic()
    sub = topic.subscribe()
    fits = topic.capacity // record_span(48)
    for i in range(fits):
        topic.publish_nowait(numbered(i))
    with pytest.raises(Full):
        topic.publish_nowait(numbered(fits))
    with pytest.raises(Full):
        topic.publish(numbered(fits), timeout=0.05)
    assert sub.get() == numbered(0)
    topic.publish_nowait(numbered(fits))   # the room it freed
    assert sub.get_many(max_messages=10_000) == [numbered(i) for i in range(1, fits + 1)]
    assert topic.stats()["publish_timeouts"] >= 2


def test_an_untethered_subscriber_never_slows_publishers_and_lags_by_an_exact_count(
        make_topic):
    topic = make_topic()
    sub = topic.subscribe(tethered=False)
    assert not sub.tethered
    held = topic.capacity // record_span(48)   # the log holds this many
    total = held + 37
    for i in range(total):
        topic.publish_nowait(numbered(i))
    with pytest.raises(Lagged) as caught:
        sub.get()
    assert caught.value.missed == 37 == sub.missed
    assert isinstance(caught.value, RingError)
    assert "37 messages lost" in str(caught.value)
    # Then the oldest message held, and on without a gap.
    assert [sub.get_nowait() for _ in range(held)] == [numbered(i) for i in range(37, total)]
    with pytest.raises(Empty):
        sub.get_nowait()
    info, = topic.subscribers()
    assert (info.missed, info.lags, info.messages) == (37, 1, held)


@pytest.mark.parametrize("call", ["get", "get_many", "view", "get_into"])
def test_lagged_from_every_way_of_receiving(make_topic, call):
    topic = make_topic()
    sub = topic.subscribe(tethered=False)
    held = topic.capacity // record_span(48)
    for i in range(held + 5):
        topic.publish_nowait(numbered(i))
    with pytest.raises(Lagged) as caught:
        if call == "get":
            sub.get()
        elif call == "get_many":
            sub.get_many()
        elif call == "view":
            with sub.view():
                pass
        else:
            sub.get_into(bytearray(64))
    assert caught.value.missed == 5
    assert sub.get() == numbered(5)


def test_lagged_twice_counts_each_overrun(make_topic):
    topic = make_topic()
    sub = topic.subscribe(tethered=False)
    held = topic.capacity // record_span(48)
    for i in range(held + 3):
        topic.publish_nowait(numbered(i))
    with pytest.raises(Lagged) as first:
        sub.get()
    assert sub.get() == numbered(3)
    for i in range(held + 3, 2 * held + 3 + 10):
        topic.publish_nowait(numbered(i))
    with pytest.raises(Lagged) as second:
        sub.get()
    # It had taken up to 3; the log now holds the last `held`.
    next_held = 2 * held + 13 - held
    assert (first.value.missed, second.value.missed) == (3, next_held - 4)
    assert sub.get() == numbered(next_held)
    assert topic.subscribers()[0].missed == 3 + next_held - 4


def test_an_untethered_view_written_over_while_open_is_lagged(make_topic):
    topic = make_topic()
    sub = topic.subscribe(tethered=False)
    held = topic.capacity // record_span(48)
    topic.publish(numbered(0))
    with pytest.raises(Lagged) as during:
        with sub.view() as view:
            assert bytes(view) == numbered(0)
            for i in range(1, held + 11):   # overwrites what the view shows
                topic.publish_nowait(numbered(i))
    assert during.value.missed == 1   # what it showed may be torn: missed
    with pytest.raises(Lagged) as after:
        sub.get()
    assert after.value.missed == 10
    assert sub.get() == numbered(11)
    assert topic.subscribers()[0].missed == 11 == held + 11 - held


def test_padding_at_the_end_of_a_lap(make_topic):
    # Records that do not divide the capacity: padding where one would
    # cross the end; a subscriber skips it.
    topic = make_topic()
    sub = topic.subscribe()
    for i in range(300):
        message = numbered(i, 4 * (i % 40))
        topic.publish(message, timeout=0)
        assert sub.get(timeout=0) == message


# ---------------------------------------------------------------- history

def test_history_gives_a_new_subscriber_the_most_recent_messages(make_topic):
    topic = make_topic(history=3)
    assert topic.history == 3
    for i in range(5):
        topic.publish(numbered(i))
    sub = topic.subscribe()
    topic.publish(numbered(5))
    assert sub.get_many() == [numbered(i) for i in (2, 3, 4, 5)]
    late = topic.subscribe(tethered=False)
    assert late.get_many() == [numbered(i) for i in (3, 4, 5)]


def test_history_longer_than_what_was_published(make_topic):
    topic = make_topic(history=10)
    topic.publish(b"a")
    topic.publish(b"b")
    assert topic.subscribe().get_many() == [b"a", b"b"]


def test_history_only_what_the_log_still_holds(make_topic):
    topic = make_topic(history=1000)
    held = topic.capacity // record_span(48)
    for i in range(held + 20):
        topic.publish_nowait(numbered(i))
    sub = topic.subscribe()
    assert sub.get_many(max_messages=10_000, max_bytes=None) == [
        numbered(i) for i in range(20, held + 20)]


def test_history_argument_checks():
    with pytest.raises(ValueError, match="history"):
        Topic.create(unique_ring_name(), history=-1)
    with pytest.raises(ValueError, match="history"):
        Topic.create(unique_ring_name(), history=65537)
    with pytest.raises(TypeError, match="history"):
        Topic.create(unique_ring_name(), history=1.5)


# ---------------------------------------------------------------- shutdown

def test_shutdown_publishers_raise_subscribers_drain_then_stop(make_topic):
    topic = make_topic()
    subs = [topic.subscribe(), topic.subscribe(tethered=False)]
    topic.publish_many([b"1", b"2", b"3"])
    assert subs[0].get() == b"1"
    topic.shutdown()
    assert topic.is_shutdown
    with pytest.raises(ShutDown):
        topic.publish(b"late")
    with pytest.raises(ShutDown):
        topic.publish_many([b"late"])
    with pytest.raises(ShutDown):
        with topic.reserve(4):
            pass
    assert list(subs[0]) == [b"2", b"3"]
    assert list(subs[1]) == [b"1", b"2", b"3"]
    for sub in subs:
        with pytest.raises(ShutDown):
            sub.get(timeout=5)


def test_shutdown_wakes_a_blocked_subscriber(make_topic):
    topic = make_topic()
    sub = topic.subscribe()
    outcome = []

    def receive():
        outcome.extend(sub)   # ends with the shutdown

    thread = threading.Thread(target=receive)
    thread.start()
    topic.publish(b"x")
    time.sleep(0.05)
    topic.shutdown()
    thread.join(10)
    assert not thread.is_alive() and outcome == [b"x"]


# ---------------------------------------------------------------- zero copy

def test_reserve_publishes_zero_copy_and_a_raise_drops_it(make_topic):
    topic = make_topic()
    sub = topic.subscribe()
    with topic.reserve(5) as space:
        assert len(space) == 5 and not space.readonly
        space[:] = b"hello"
    with pytest.raises(KeyError):
        with topic.reserve(3) as space:
            space[:] = b"bad"
            raise KeyError("no")
    topic.publish(b"after")
    assert sub.get_many() == [b"hello", b"after"]
    with pytest.raises(MessageTooLarge):
        with topic.reserve(topic.max_message_size + 1):
            pass


def test_reserve_a_publish_inside_it_is_refused(make_topic):
    topic = make_topic()
    sub = topic.subscribe()
    with topic.reserve(48) as space:
        space[:] = numbered(999)
        with pytest.raises(RuntimeError, match="deadlock"):
            topic.publish(b"x", timeout=5)
    assert sub.get_many() == [numbered(999)]


def test_view_reads_in_place_and_a_raise_leaves_the_message(make_topic):
    topic = make_topic()
    sub = topic.subscribe()
    topic.publish_many([b"first", b"second"])
    with pytest.raises(KeyError):
        with sub.view() as view:
            assert bytes(view) == b"first" and view.readonly
            raise KeyError("not now")
    with sub.view() as view:
        assert bytes(view) == b"first"
    with sub.view() as view:
        assert bytes(view) == b"second"
        with pytest.raises(RuntimeError, match="deadlock"):
            sub.get()
    with pytest.raises(Empty):
        with sub.view(timeout=0):
            pass


def test_get_into_and_a_buffer_too_small(make_topic):
    topic = make_topic()
    sub = topic.subscribe()
    topic.publish(b"0123456789")
    with pytest.raises(ValueError, match="too small"):
        sub.get_into(bytearray(4))
    buffer = bytearray(32)
    assert sub.get_into(buffer) == 10 and buffer[:10] == b"0123456789"


def test_get_many_limits(make_topic):
    topic = make_topic(capacity=1 << 16)
    sub = topic.subscribe()
    topic.publish_many([bytes([i]) * 100 for i in range(10)])
    assert len(sub.get_many(max_messages=3)) == 3
    assert len(sub.get_many(max_bytes=250)) == 2
    big = b"B" * 20_000
    topic.publish(big)
    rest = sub.get_many(max_bytes=1000)
    assert len(rest) == 5
    assert sub.get_many(max_bytes=1000) == [big]   # the first, whatever its size
    with pytest.raises(Empty):
        sub.get_many(block=False)


def test_publish_many_is_atomic_and_too_large_a_batch_publishes_nothing(make_topic):
    topic = make_topic()
    sub = topic.subscribe()
    with pytest.raises(MessageTooLarge):
        topic.publish_many([b"x" * 1000] * 3)
    with pytest.raises(MessageTooLarge):
        topic.publish(b"x" * (topic.max_message_size + 1))
    with pytest.raises(TypeError):
        topic.publish_many(b"not a list")
    for i in range(topic.capacity // record_span(48) - 2):
        topic.publish(numbered(i))
    with pytest.raises(Full):   # 3 do not fit, none goes in
        topic.publish_many([numbered(0)] * 3, timeout=0)
    assert sub.lag == topic.capacity // record_span(48) - 2
    topic.publish_many([])


# ---------------------------------------------------------------- stalls

def test_stall_timeout_unties_a_subscriber_that_takes_nothing(make_topic):
    topic = make_topic(recovery_interval=0.05)
    stalled = topic.subscribe(stall_timeout=0.2)
    fits = topic.capacity // record_span(48)
    for i in range(fits):
        topic.publish_nowait(numbered(i))
    started = time.monotonic()
    topic.publish(numbered(fits), timeout=30)   # goes on once it is untethered
    assert time.monotonic() - started < 20
    assert not stalled.tethered
    info, = topic.subscribers()
    assert info.stalled and not info.tethered and info.stall_timeout == pytest.approx(0.2)
    assert topic.stats()["stalls"] == 1
    with pytest.raises(Lagged) as caught:
        stalled.get()
    assert caught.value.missed == 1
    assert stalled.get() == numbered(1)


def test_stall_timeout_arguments(make_topic):
    topic = make_topic()
    with pytest.raises(ValueError, match="tethered"):
        topic.subscribe(tethered=False, stall_timeout=1.0)
    with pytest.raises(ValueError):
        topic.subscribe(stall_timeout=-1)


# ---------------------------------------------------------------- limits

def test_the_129th_subscriber_is_refused_clearly(make_topic):
    topic = make_topic()
    subs = [topic.subscribe(tethered=bool(i % 2)) for i in range(MAX_SUBSCRIBERS)]
    assert MAX_SUBSCRIBERS == 128
    assert topic.stats()["subscribers"] == 128
    with pytest.raises(RingError, match="128 subscriber"):
        topic.subscribe()
    subs.pop().close()
    subs.append(topic.subscribe())   # the entry a closed one left
    topic.publish(b"to all")
    assert all(sub.get(timeout=0) == b"to all" for sub in subs)
    for sub in subs:
        sub.close()
    assert topic.stats()["subscribers"] == 0


# ---------------------------------------------------------------- a ring is not a topic

def segment_bytes(name):
    with open(shm_path(name), "rb") as f:
        return f.read()


def test_ring_open_of_a_topic_is_refused_and_changes_nothing(make_topic):
    topic = make_topic()
    sub = topic.subscribe()
    topic.publish(b"kept")
    before = segment_bytes(topic.name)
    with pytest.raises(RingWrongKind, match=r"'.*' is a topic, not a ring: use Topic.open\(\)"):
        Ring.open(topic.name)
    with pytest.raises(RingWrongKind):
        Ring.create(topic.name, exist_ok=True)
    with pytest.raises(RingExists):
        Ring.create(topic.name)
    # A RingCorrupted and a ValueError too: what skips "not a ring" skips it.
    with pytest.raises(RingCorrupted):
        Ring.open(topic.name)
    with pytest.raises(ValueError):
        Ring.open(topic.name)
    assert segment_bytes(topic.name) == before
    assert sub.get() == b"kept"
    topic.publish(b"still a topic")
    assert sub.get() == b"still a topic"


def test_topic_open_of_a_ring_is_refused_and_changes_nothing(make_ring):
    ring = make_ring()
    ring.put(b"kept")
    before = segment_bytes(ring.name)
    with pytest.raises(RingWrongKind, match=r"is a ring, not a topic: use Ring.open\(\)"):
        Topic.open(ring.name)
    with pytest.raises(RingWrongKind):
        Topic.create(ring.name, exist_ok=True)
    assert segment_bytes(ring.name) == before
    assert ring.get() == b"kept"


def test_ls_shows_a_topic_as_a_topic_not_as_a_corrupt_ring(make_topic):
    from ringshm import census
    topic = make_topic()
    row, = [row for row in census.census() if row.get("name") == topic.name]
    assert row["states"] == ["topic"]


def test_topic_create_exist_ok_opens_the_topic(make_topic):
    topic = make_topic(history=2)
    again = Topic.create(topic.name, exist_ok=True)
    try:
        sub = again.subscribe()
        topic.publish(b"x")
        assert sub.get() == b"x" and again.history == 2
    finally:
        again.close()


@pytest.mark.parametrize("kind", ["path", "sysv"])
def test_topic_on_other_backings(kind, tmp_path):
    from conftest import remove_sysv, unique_sysv_key
    where = {"path": str(tmp_path / "topic")} if kind == "path" else \
        {"sysv_key": unique_sysv_key()}
    try:
        topic = Topic.create(**where, capacity=8192, history=1)
        with topic:
            topic.publish(b"early")
            other = Topic.open(**where)
            with other:
                sub = other.subscribe()
                topic.publish(b"late")
                assert sub.get_many() == [b"early", b"late"]
                with pytest.raises(RingWrongKind):
                    Ring.open(**where)
    finally:
        if kind == "sysv":
            remove_sysv(where["sysv_key"])
    assert not os.path.exists(str(tmp_path / "topic"))


# ---------------------------------------------------------------- lifecycle

def test_close_ends_the_subscriptions_and_calls_after_it_raise(make_topic):
    topic = make_topic()
    sub = topic.subscribe()
    other = Topic.open(topic.name)
    mine = other.subscribe()
    other.close()
    assert mine.closed and other.closed
    with pytest.raises(ValueError, match="closed"):
        mine.get_nowait()
    with pytest.raises(ValueError, match="closed topic"):
        other.publish(b"x")
    sub.close()
    sub.close()
    with pytest.raises(ValueError, match="closed subscription"):
        sub.get()
    assert topic.stats()["subscribers"] == 0


def test_close_in_another_thread_ends_a_blocked_get(make_topic):
    topic = make_topic()
    sub = topic.subscribe()
    outcome = []

    def receive():
        try:
            sub.get()
        except ValueError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=receive)
    thread.start()
    time.sleep(0.1)
    sub.close()
    thread.join(10)
    assert not thread.is_alive() and len(outcome) == 1
    assert topic.stats()["subscribers"] == 0


def test_close_races_calls_of_other_threads(make_topic):
    """close() while other threads keep calling: each call either works or
    raises ValueError (closed); none meets a freed subscription."""
    topic = make_topic(capacity=1 << 14)
    for _ in range(30):
        sub = topic.subscribe(tethered=False)
        stop = threading.Event()
        errors = []

        def hammer(sub=sub, stop=stop, errors=errors):
            while not stop.is_set():
                try:
                    sub.get(timeout=0.001)
                except ValueError:
                    return
                except Empty:
                    pass
                except Exception as exc:
                    errors.append(exc)
                    return

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for thread in threads:
            thread.start()
        topic.publish_many([b"m"] * 20)
        time.sleep(0.005)
        sub.close()
        stop.set()
        for thread in threads:
            thread.join(10)
        assert not errors and not any(thread.is_alive() for thread in threads)
    assert topic.stats()["subscribers"] == 0


def test_a_dropped_subscription_leaves_the_topic(make_topic):
    topic = make_topic()
    topic.subscribe()   # dropped at once
    assert topic.stats()["subscribers"] == 0
    for i in range(100):
        topic.publish_nowait(numbered(i))   # nobody holds the log


def test_stats_and_subscribers(make_topic):
    topic = make_topic(history=4)
    sub = topic.subscribe(stall_timeout=3)
    topic.publish_many([b"ab", b"cde"])
    stats = topic.stats()
    assert stats["published"] == 2 and stats["bytes_published"] == 5
    assert stats["history"] == 4 and stats["subscribers"] == stats["tethered"] == 1
    assert stats["creator_pid"] == os.getpid() and stats["ephemeral"]
    info, = topic.subscribers()
    assert info.pid == os.getpid() and info.alive and info.tethered
    assert info.lag_messages == 2 and info.stall_timeout == 3
    assert sub.get() == b"ab"
    assert topic.subscribers()[0].lag_messages == 1 == sub.lag
    assert "tethered" in repr(sub) and topic.name in repr(topic)


def test_constructors_are_refused():
    with pytest.raises(TypeError):
        Topic()
    with pytest.raises(TypeError):
        Subscription()
    with pytest.raises(TypeError):
        ObjectTopic()


# ---------------------------------------------------------------- pickling and fork

def test_a_topic_pickles_by_name_and_a_subscription_does_not(make_topic):
    topic = make_topic()
    sub = topic.subscribe()
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(sub)
    copy = pickle.loads(pickle.dumps(topic))
    try:
        copy.publish(b"through the copy")
        assert sub.get() == b"through the copy"
        assert isinstance(copy, Topic) and copy.name == topic.name
    finally:
        copy.close()
    with pytest.raises(TypeError, match="anonymous"):
        anonymous = Topic.anonymous(4096)
        try:
            pickle.dumps(anonymous)
        finally:
            anonymous.close()


def _use_inherited(sub, results):
    try:
        sub.get_nowait()
        results.put("no error")
    except RuntimeError as exc:
        results.put(f"RuntimeError: {exc}")
    except BaseException as exc:
        results.put(repr(exc))


def test_a_forked_child_cannot_use_its_parents_subscription(make_topic):
    topic = make_topic()
    sub = topic.subscribe()
    topic.publish(b"the parent's")
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    child = ctx.Process(target=_use_inherited, args=(sub, results))
    child.start()
    outcome = results.get(timeout=30)
    child.join(30)
    assert outcome.startswith("RuntimeError") and "process that made it" in outcome
    assert sub.get() == b"the parent's"   # untouched by the child
    assert topic.stats()["subscribers"] == 1


def _anonymous_child(topic, ready, results):
    sub = topic.subscribe()
    ready.set()
    results.put(list(sub))


def test_an_anonymous_topic_is_shared_with_forked_children():
    topic = Topic.anonymous(4096)
    try:
        ctx = multiprocessing.get_context("fork")
        ready, results = ctx.Event(), ctx.Queue()
        child = ctx.Process(target=_anonymous_child, args=(topic, ready, results))
        child.start()
        assert ready.wait(30)
        topic.publish_many([b"a", b"b"])
        topic.shutdown()
        assert results.get(timeout=30) == [b"a", b"b"]
        child.join(30)
    finally:
        topic.close()


# ---------------------------------------------------------------- objects

def test_object_topic_carries_objects(make_topic):
    otopic = ObjectTopic.create(unique_ring_name(), 1 << 16, history=1)
    try:
        sub = otopic.subscribe()
        otopic.publish({"a": 1})
        otopic.publish_many([[1, 2], "three", bytearray(b"four")])
        assert sub.get() == {"a": 1}
        assert sub.get_many() == [[1, 2], "three", bytearray(b"four")]
        other = pickle.loads(pickle.dumps(otopic))
        try:
            other.publish(("via", "pickle"))
        finally:
            other.close()
        assert sub.get_nowait() == ("via", "pickle")
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(sub)
        otopic.shutdown()
        assert list(sub) == []
    finally:
        otopic.close()


def test_object_topic_too_large_an_object_says_why():
    otopic = ObjectTopic.create(unique_ring_name(), 4096)
    try:
        with pytest.raises(MessageTooLarge, match="no side files"):
            otopic.publish(b"x" * 5000)
        with pytest.raises(MessageTooLarge, match="no side files"):
            otopic.publish_many([1, b"x" * 5000])
        assert otopic.stats()["published"] == 0
    finally:
        otopic.close()


def test_object_topic_with_numpy_arrays():
    numpy = pytest.importorskip("numpy")
    otopic = ObjectTopic.create(unique_ring_name(), 1 << 20)
    try:
        sub = otopic.subscribe()
        arrays = [numpy.arange(1000, dtype=numpy.float64).reshape(10, 100),
                  numpy.asfortranarray(numpy.ones((30, 7), dtype=numpy.int16)),
                  numpy.zeros((0, 3)),
                  {"nested": numpy.arange(5)}]
        for array in arrays:
            otopic.publish(array)
        otopic.publish_many(arrays[:2])
        got = [sub.get() for _ in range(6)]
        for expected, actual in zip(arrays + arrays[:2], got):
            if isinstance(expected, dict):
                assert numpy.array_equal(expected["nested"], actual["nested"])
            else:
                assert numpy.array_equal(expected, actual) and expected.dtype == actual.dtype
                assert actual.flags.writeable
    finally:
        otopic.close()


def test_object_topic_with_a_custom_codec():
    otopic = ObjectTopic.create(unique_ring_name(), 4096, dumps=lambda o: o.encode(),
                                loads=lambda b: bytes(b).decode())
    try:
        sub = otopic.subscribe()
        otopic.publish("héllo")
        assert sub.get() == "héllo"
        otopic.publish("raw")
        assert sub.subscription.get_nowait() == b"raw"   # the custom bytes as they are
    finally:
        otopic.close()
