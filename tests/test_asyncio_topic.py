"""ringshm.asyncio's topics: AsyncSubscription (get, get_many, async for,
Lagged, close) waiting through the loop's one helper thread beside rings,
cancellation at random points losing no message, and AsyncTopic's publish
waiting for room without blocking the loop (and never publishing twice)."""

import asyncio
import multiprocessing
import random
import threading
import time

import pytest
from conftest import closing, join_or_kill, unique_ring_name

from ringshm import Empty, Full, Lagged, ObjectTopic, ShutDown, Topic
from ringshm.asyncio import AsyncRing, AsyncSubscription, AsyncTopic

JOIN = 120.0
fork = multiprocessing.get_context("fork")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, JOIN))


def waiter_threads():
    return [t for t in threading.enumerate() if t.name.startswith("ringshm-wait")]


@pytest.fixture
def make_topic():
    yield from closing(lambda capacity=1 << 16, **options:
                       Topic.create(unique_ring_name(), capacity, **options))


def publish_in_bursts(name, count):
    # Bursts with pauses: the subscriber keeps running dry, so its gets
    # wait, and that is where the cancellations land.
    with Topic.open(name) as topic:
        for i in range(count):
            topic.publish(i.to_bytes(4, "little"))
            if i % 300 == 299:
                time.sleep(0.003)
        topic.shutdown()


def test_get_waits_without_blocking_the_loop_beside_a_ring(make_topic, make_ring):
    topic = make_topic()
    sub = AsyncSubscription(topic.subscribe())
    aring = AsyncRing(make_ring())

    async def main():
        ticks = 0
        getter = asyncio.create_task(sub.get())
        ring_getter = asyncio.create_task(aring.get())
        threading.Timer(0.1, topic.publish, (b"news",)).start()
        while not getter.done():
            ticks += 1
            await asyncio.sleep(0.005)
        assert await getter == b"news"
        assert not ring_getter.done()          # the ring's wait goes on
        aring.ring.put(b"r")
        assert await ring_getter == b"r"
        with pytest.raises(Empty):
            await sub.get(timeout=0.05)
        return ticks

    try:
        assert run(main()) > 3                  # the loop ran while it waited
    finally:
        aring.close()
        sub.close()


def test_cancelled_gets_at_random_points_lose_nothing(make_topic):
    topic = make_topic(capacity=8192)
    sub = AsyncSubscription(topic.subscribe())
    count = 30_000
    rng = random.Random(7)

    async def main():
        publisher = fork.Process(target=publish_in_bursts, args=(topic.name, count))
        publisher.start()   # before the loop's helper thread exists
        received, cancelled = [], 0
        try:
            while True:
                getter = asyncio.create_task(sub.get())
                done, _ = await asyncio.wait({getter}, timeout=rng.choice([0, 0.0005, 0.002]))
                if not done:
                    getter.cancel()
                try:
                    received.append(int.from_bytes(await getter, "little"))
                except asyncio.CancelledError:
                    cancelled += 1
                except ShutDown:
                    return received, cancelled
        finally:
            assert join_or_kill(publisher, JOIN)

    received, cancelled = run(main())
    assert received == list(range(count))     # each once, in order
    assert cancelled > 10, "the test did not cancel gets while they waited"
    sub.close()


def test_many_subscriptions_wait_on_one_helper_thread(make_topic):
    topics = [make_topic(capacity=4096) for _ in range(4)]
    subs = [AsyncSubscription(t.subscribe()) for t in topics for _ in range(50)]

    async def main():
        before = threading.active_count()
        getters = [asyncio.create_task(s.get(timeout=JOIN)) for s in subs]
        await asyncio.sleep(0.3)
        assert not any(g.done() for g in getters)
        during, helpers = threading.active_count(), waiter_threads()
        for i, t in enumerate(topics):
            t.publish(b"%d" % i)
        got = await asyncio.gather(*getters)
        return before, during, helpers, got

    before, during, helpers, got = run(main())
    assert during - before <= 2 and len(helpers) == 1
    assert got == [b"%d" % (i // 50) for i in range(200)]
    for s in subs:
        s.close()


def test_lagged_get_many_and_async_for(make_topic):
    topic = make_topic(capacity=4096)
    untethered = AsyncSubscription(topic.subscribe(tethered=False))
    tethered = AsyncSubscription(topic.subscribe())

    async def main():
        for i in range(10):
            topic.publish(b"%d" % i)
        assert await tethered.get_many(max_messages=4) == [b"0", b"1", b"2", b"3"]
        assert [m async for m in _take(tethered, 6)] == [b"%d" % i for i in range(4, 10)]
        tethered.close()          # leaves: nothing holds the publisher back now
        for _ in range(200):      # overruns the untethered one
            topic.publish_nowait(bytes(48))
        with pytest.raises(Lagged) as caught:
            await untethered.get()
        assert caught.value.missed > 0
        assert await untethered.get(timeout=JOIN) == bytes(48)   # then the oldest held
        topic.shutdown()
        rest = [m async for m in untethered]   # until shut down and drained
        assert rest and all(m == bytes(48) for m in rest)
        assert caught.value.missed + 1 + len(rest) == 210   # every one counted

    run(main())
    untethered.close()
    assert tethered.closed and untethered.closed


async def _take(sub, n):
    async for message in sub:
        yield message
        n -= 1
        if n == 0:
            return


def test_object_topic_through_async_topic():
    otopic = ObjectTopic.create(unique_ring_name(), 1 << 16)
    try:
        async def main():
            async with AsyncTopic(otopic) as atopic:
                async with atopic.subscribe() as sub:
                    getter = asyncio.create_task(sub.get())
                    await asyncio.sleep(0.02)
                    await atopic.publish({"celsius": 21.5})
                    assert await getter == {"celsius": 21.5}
                    await atopic.publish_many([1, 2, 3])
                    assert await sub.get_many() == [1, 2, 3]
                assert sub.closed

        run(main())
    finally:
        otopic.close()


def test_close_wakes_a_waiting_get_and_ends_the_helper(make_topic):
    topic = make_topic()
    sub = AsyncSubscription(topic.subscribe())

    async def main():
        getter = asyncio.create_task(sub.get())
        await asyncio.sleep(0.05)
        assert waiter_threads()
        sub.close()
        with pytest.raises(ValueError):
            await getter

    run(main())
    assert not waiter_threads()
    assert sub.subscription.closed
    sub.close()   # idempotent


def test_publish_waits_for_room_then_times_out_with_full(make_topic):
    topic = make_topic(capacity=4096)
    slow = topic.subscribe()   # tethered: publishers wait for it
    atopic = AsyncTopic(topic)
    big = bytes(1000)

    async def main():
        while True:
            try:
                atopic.publish_nowait(big)
            except Full:
                break
        with pytest.raises(Full):
            await atopic.publish(big, timeout=0.05)
        ticks = 0
        publisher = asyncio.create_task(atopic.publish(big))
        threading.Timer(0.1, slow.get).start()   # makes room
        while not publisher.done():
            ticks += 1
            await asyncio.sleep(0.005)
        await publisher
        return ticks

    assert run(main()) > 3
    slow.close()


def consume_numbers(name, ready, results, count):
    with Topic.open(name) as topic:
        sub = topic.subscribe()
        ready.set()
        got = []
        while len(got) < count:
            got.append(int.from_bytes(sub.get(timeout=JOIN)[:4], "little"))
            if len(got) % 50 == 0:
                time.sleep(0.002)   # the log fills: publishes wait
        results.put(got)


def test_cancelled_publishes_neither_lose_nor_duplicate(make_topic):
    topic = make_topic(capacity=4096)
    atopic = AsyncTopic(topic)
    count = 3000
    results, ready = fork.Queue(), fork.Event()
    consumer = fork.Process(target=consume_numbers, args=(topic.name, ready, results, count))
    consumer.start()
    assert ready.wait(JOIN)
    rng = random.Random(11)

    async def main():
        cancelled, i = 0, 0
        while i < count:
            publisher = asyncio.create_task(atopic.publish(i.to_bytes(4, "little") * 16))
            done, _ = await asyncio.wait({publisher}, timeout=rng.choice([0, 0.0005, 0.002]))
            if not done:
                publisher.cancel()
            try:
                await publisher
            except asyncio.CancelledError:
                cancelled += 1
                continue   # not published: publish the same number again
            i += 1
        return cancelled

    try:
        cancelled = run(main())
        got = results.get(timeout=JOIN)
    finally:
        assert join_or_kill(consumer, JOIN)
    assert got == list(range(count))
    assert cancelled > 10, "the test did not cancel publishes while they waited"


def test_bad_arguments(make_topic):
    with pytest.raises(TypeError, match="Subscription"):
        AsyncSubscription(object())
    with pytest.raises(TypeError, match="Topic"):
        AsyncTopic(make_topic().subscribe())
