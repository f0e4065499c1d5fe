"""ringshm.wait() with subscriptions of topics among rings and queues (rs_wait
items with a subscription, libringshm/tests/test_wait_subs.c): a
subscription is reported when it has a message or a Lagged to report, or
its topic is shut down and it has taken everything; closed ones fail."""

import threading
import time

import pytest
from conftest import closing, unique_ring_name

from ringshm import Empty, Lagged, ObjectTopic, Queue, ShutDown, Topic, wait

SLOW = 10.0   # bound on waits that may take a moment on a busy machine


@pytest.fixture
def make_topic():
    yield from closing(lambda capacity=4096, **options:
                       Topic.create(unique_ring_name(), capacity, **options))


@pytest.fixture
def make_queue():
    yield from closing(lambda: Queue(capacity=4096))


def test_a_subscription_is_reported_with_a_message_in_the_order_given(
        make_ring, make_queue, make_topic):
    ring, queue, topic = make_ring(), make_queue(), make_topic()
    a, b = topic.subscribe(), topic.subscribe()
    other = make_topic().subscribe()
    everything = [ring, a, queue, other, b]
    assert wait(everything, timeout=0) == []
    topic.publish(b"m")
    assert wait(everything, timeout=0) == [a, b]
    queue.put(1)
    assert wait(everything, timeout=SLOW) == [a, queue, b]
    # It takes nothing: each subscriber still has the message.
    assert a.get_nowait() == b"m"
    assert wait(everything, timeout=0) == [queue, b]
    assert b.get_nowait() == b"m" and queue.get_nowait() == 1
    assert wait(everything, timeout=0) == []


def test_an_object_subscription_is_reported_as_itself(make_ring):
    otopic = ObjectTopic.create(unique_ring_name(), 4096)
    try:
        sub = otopic.subscribe()
        ring = make_ring()
        assert wait([sub, ring], timeout=0) == []
        otopic.publish({"x": 1})
        assert wait([ring, sub], timeout=SLOW) == [sub]
        assert sub.get_nowait() == {"x": 1}
    finally:
        otopic.close()


def test_wakes_on_a_publish_from_another_thread(make_ring, make_topic):
    topic = make_topic()
    subs = [topic.subscribe() for _ in range(3)]
    rings = [make_ring() for _ in range(3)]
    threading.Timer(0.05, topic.publish, (b"late",)).start()
    started = time.monotonic()
    assert wait(rings + subs, timeout=SLOW) == subs
    assert time.monotonic() - started < SLOW


def test_a_lagged_untethered_subscriber_is_ready(make_topic):
    topic = make_topic()
    sub = topic.subscribe(tethered=False)
    for _ in range(topic.capacity // 64 + 3):
        topic.publish_nowait(bytes(48))
    assert wait([sub], timeout=0) == [sub]
    with pytest.raises(Lagged):
        sub.get_nowait()
    assert wait([sub], timeout=0) == [sub]   # the oldest message held is next


def test_shut_down_is_ready_once_drained_for_that_subscriber(make_topic):
    topic = make_topic()
    taken, behind = topic.subscribe(), topic.subscribe()
    topic.publish(b"last")
    assert taken.get_nowait() == b"last"
    assert wait([taken], timeout=0) == []
    assert wait([taken, behind], timeout=0) == [behind]   # it has a message
    shutter = threading.Timer(0.05, topic.shutdown)
    shutter.start()
    assert wait([taken], timeout=SLOW) == [taken]
    shutter.join()
    assert wait([taken, behind], timeout=0) == [taken, behind]
    with pytest.raises(ShutDown):
        taken.get_nowait()
    assert behind.get_nowait() == b"last"
    assert wait([behind], timeout=0) == [behind]   # now drained: ShutDown next
    with pytest.raises(ShutDown):
        behind.get_nowait()


def test_a_subscription_closed_before_or_during_the_wait(make_ring, make_topic):
    topic = make_topic()
    ring = make_ring()
    sub = topic.subscribe()
    closer = threading.Timer(0.1, sub.close)
    closer.start()
    started = time.monotonic()
    with pytest.raises(ValueError, match="closed"):
        wait([ring, sub], timeout=SLOW)
    assert time.monotonic() - started < SLOW / 2
    closer.join()
    with pytest.raises(ValueError, match="closed"):
        wait([ring, sub], timeout=0)
    # The topic is untouched: a new subscriber works.
    again = topic.subscribe()
    topic.publish(b"x")
    assert wait([ring, again], timeout=SLOW) == [again]


def test_more_subscriptions_than_one_futex_waitv_takes(make_topic):
    topics = [make_topic() for _ in range(3)]
    subs = [topic.subscribe() for topic in topics for _ in range(60)]
    assert len(subs) == 180
    for index in (0, 59, 60, 127, 128, 179):
        topic = topics[index // 60]
        threading.Timer(0.02, topic.publish, (b"x",)).start()
        ready = wait(subs, timeout=SLOW)
        assert ready == subs[index // 60 * 60:(index // 60 + 1) * 60]
        for sub in ready:
            assert sub.get_nowait() == b"x"
        with pytest.raises(Empty):
            subs[index].get_nowait()


def test_a_room_for_a_subscription_is_refused(make_topic):
    from ringshm._ring import wait_many
    sub = make_topic().subscribe()
    with pytest.raises(TypeError, match="data only"):
        wait_many([sub], [16], 0)
    with pytest.raises(TypeError, match="Subscription"):
        wait([sub, object()], timeout=0)


def test_a_forked_childs_copy_of_a_subscription_is_refused(make_topic):
    import os
    topic = make_topic()
    sub = topic.subscribe()
    topic.publish(b"x")
    pid = os.fork()
    if pid == 0:   # the child: its copy belongs to the parent
        status = 1
        try:
            wait([sub], timeout=0)
        except RuntimeError as exc:
            status = 0 if "forked" in str(exc) else 2
        except BaseException:
            status = 3
        os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert wait([sub], timeout=0) == [sub]   # the parent's is untouched
    assert sub.get_nowait() == b"x"
