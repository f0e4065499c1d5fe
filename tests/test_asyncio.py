"""ringshm.asyncio: waits that never block the loop, timeouts, cancellation
that loses and duplicates nothing (under load, against a blocking process),
batches, iteration, the waiter threads' lifecycle, and one helper thread per
loop for any number of waits (data and room, rings closed under it)."""

import asyncio
import multiprocessing
import threading
import time

import pytest
from conftest import closing, join_or_kill

from ringshm import Empty, Full, Queue, ShutDown
from ringshm.asyncio import AsyncQueue, AsyncRing
from ringshm.queue import JoinableQueue

LOAD_ITEMS = 100_000
PAUSE = 0.005        # the blocking end pauses now and then, so the other waits
CANCEL_AFTER = 0.001  # a get/put not done by then is cancelled
JOIN = 120.0
fork = multiprocessing.get_context("fork")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, JOIN))


def waiter_threads():
    return [t for t in threading.enumerate() if t.name.startswith("ringshm-wait")]


@pytest.fixture
def aring(make_ring):
    ar = AsyncRing(make_ring(capacity=1 << 16))
    yield ar
    ar.close()


@pytest.fixture
def make_aqueue():
    yield from closing(AsyncQueue)


# -- children (the blocking end, in another process) ---------------------------

def put_later(ring, delay, data):
    time.sleep(delay)
    ring.put(data)


def produce_in_bursts(q, count):
    # Bursts with pauses: the consumer keeps running dry, so its gets wait,
    # and that is where the cancellations land.
    for i in range(count):
        q.put(i)
        if i % 500 == 499:
            time.sleep(PAUSE)
    q.put(None)


def consume_all(q, results, pause_every=0):
    # pause_every: a pause after so many items (the producer then finds the
    # queue full and waits).
    got = []
    while (item := q.get(timeout=JOIN)) is not None:
        got.append(item)
        if pause_every and len(got) % pause_every == 0:
            time.sleep(PAUSE)
    results.put(got)


# -- waiting -------------------------------------------------------------------

def test_get_waits_without_blocking_the_loop(aring):
    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        tick_task = asyncio.create_task(ticker())
        child = fork.Process(target=put_later, args=(aring.ring, 0.3, b"late"))
        child.start()
        try:
            assert await aring.get(timeout=30) == b"late"
        finally:
            tick_task.cancel()
            assert join_or_kill(child)
        assert ticks >= 1, "the loop was blocked while get() waited"

    run(main())


def test_timeouts_raise_empty_and_full(make_ring):
    async def main(ar):
        with pytest.raises(Empty):
            await ar.get(timeout=0.05)
        with pytest.raises(Empty):
            await ar.get_many(timeout=0)
        await ar.put(b"1")
        with pytest.raises(Full):
            await ar.put(b"2", timeout=0.05)
        with pytest.raises(Full):
            await ar.put_many([b"2"], timeout=0)
        with pytest.raises(ValueError):
            await ar.get(timeout=-1)

    ar = AsyncRing(make_ring(max_messages=1))
    try:
        run(main(ar))
    finally:
        ar.close()


def test_put_waits_for_room_made_by_another_process(make_aqueue):
    aq = make_aqueue(maxsize=1)
    results = fork.Queue()

    async def main():
        await aq.put(0)
        child = fork.Process(target=consume_all, args=(aq.queue, results))
        child.start()
        for i in range(1, 200):
            await aq.put(i, timeout=30)
        await aq.put(None, timeout=30)
        assert results.get(timeout=JOIN) == list(range(200))
        assert join_or_kill(child)

    run(main())


def test_batches_and_iteration_until_shutdown(aring):
    async def main():
        await aring.put_many([b"a", b"b", b"c"])
        assert await aring.get_many(max_messages=2) == [b"a", b"b"]
        assert await aring.get_many() == [b"c"]
        await aring.put_many([b"x", b"y"])
        aring.ring.shutdown()
        assert [m async for m in aring] == [b"x", b"y"]
        with pytest.raises(ShutDown):
            await aring.put(b"z")

    run(main())


def test_shutdown_wakes_a_waiting_get(make_aqueue):
    aq = make_aqueue()

    async def main():
        getter = asyncio.create_task(aq.get())
        await asyncio.sleep(0.05)
        assert not getter.done()
        aq.queue.shutdown()
        with pytest.raises(ShutDown):
            await getter
        assert aq.is_shutdown

    run(main())


# -- cancellation ---------------------------------------------------------------

def test_cancelled_get_takes_nothing(aring):
    async def main():
        getter = asyncio.create_task(aring.get())
        await asyncio.sleep(0.05)
        getter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await getter
        aring.ring.put(b"kept")
        await asyncio.sleep(0.05)   # a leftover waiter would have it by now
        assert aring.ring.get_nowait() == b"kept"

    run(main())


def test_cancelled_gets_under_load_lose_nothing(make_aqueue):
    aq = make_aqueue(maxsize=64)
    producer = fork.Process(target=produce_in_bursts, args=(aq.queue, LOAD_ITEMS))

    async def main():
        received, cancelled = [], 0
        producer.start()
        while True:
            getter = asyncio.create_task(aq.get())
            # Cancel every few ms, wherever the get is.
            done, _ = await asyncio.wait({getter}, timeout=CANCEL_AFTER)
            if not done:
                getter.cancel()
            try:
                item = await getter
            except asyncio.CancelledError:
                cancelled += 1
                continue
            if item is None:
                return received, cancelled
            received.append(item)

    try:
        received, cancelled = run(main())
    finally:
        assert join_or_kill(producer, JOIN)
    assert producer.exitcode == 0
    assert received == list(range(LOAD_ITEMS))   # each once, in order
    assert cancelled > 10, "the test did not cancel gets while they waited"
    assert aq.empty()


def test_cancelled_puts_under_load_neither_lose_nor_duplicate(make_aqueue):
    aq = make_aqueue(maxsize=16)
    results = fork.Queue()
    consumer = fork.Process(target=consume_all, args=(aq.queue, results, 200))
    items = 20_000

    async def main():
        consumer.start()
        cancelled = 0
        i = 0
        while i <= items:
            item = i if i < items else None
            putter = asyncio.create_task(aq.put(item))
            done, _ = await asyncio.wait({putter}, timeout=CANCEL_AFTER)
            if not done:
                putter.cancel()
            try:
                await putter
            except asyncio.CancelledError:
                cancelled += 1   # not published: put the same item again
                continue
            i += 1
        return cancelled

    try:
        cancelled = run(main())
        got = results.get(timeout=JOIN)
    finally:
        assert join_or_kill(consumer, JOIN)
    assert got == list(range(items))
    assert cancelled > 10, "the test did not cancel puts while they waited"


# -- wrapping, closing -----------------------------------------------------------

def test_async_queue_wraps_an_existing_queue_of_any_subclass():
    jq = JoinableQueue()
    aq = AsyncQueue(queue=jq)
    try:
        async def main():
            await aq.put({"n": 1})
            assert await aq.get() == {"n": 1}
            jq.task_done()
            assert jq.join(timeout=0)

        run(main())
        with pytest.raises(TypeError):
            AsyncQueue(queue=jq, capacity=4096)
        with pytest.raises(TypeError):
            AsyncQueue(queue=object())
    finally:
        aq.close()
        assert not jq.is_shutdown   # still open: it was not ours to close
        jq.close()


def test_close_wakes_waiters_and_ends_the_threads(make_ring):
    ar = AsyncRing(make_ring())

    async def main():
        getter = asyncio.create_task(ar.get())
        await asyncio.sleep(0.05)
        assert waiter_threads()
        ar.close()
        with pytest.raises(ValueError):
            await getter

    run(main())
    assert not waiter_threads()
    assert not ar.ring.closed   # the ring stays usable
    ar.close()                  # idempotent


def test_idle_waiter_threads_end_after_the_loop(aring):
    async def main():
        with pytest.raises(Empty):
            await aring.get(timeout=0.05)

    run(main())
    deadline = time.monotonic() + 10
    while waiter_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not waiter_threads()


def test_async_queue_is_picklable_through_its_queue(make_aqueue):
    aq = make_aqueue()
    results = fork.Queue()
    child = fork.Process(target=consume_all, args=(aq.queue, results))

    async def main():
        child.start()
        await aq.put_many([1, 2, 3, None])

    run(main())
    assert results.get(timeout=JOIN) == [1, 2, 3]
    assert join_or_kill(child)


def test_async_queue_rejects_bad_arguments():
    with pytest.raises(TypeError):
        AsyncRing(Queue)


def test_the_asyncio_bench_counts_every_case():
    from ringshm.bench import asyncio_bench

    rows = asyncio_bench.run(messages=2000, round_trips=200, log=lambda line: None)
    assert {row["case"] for row in rows} == {"round trip", "await get()", "get_nowait() loop"}
    for row in rows:
        assert row.get("msgs_per_s", 0) > 0 or row["p50_us"] > 0
    assert "| round trip | ringshm AsyncRing |" in asyncio_bench.format_table(rows)


# -- one helper thread per loop --------------------------------------------------

MANY = 1000
OWN = 600            # coroutines with a queue of their own; the rest share
SHARED = 4           # ... these queues, (MANY - OWN) // SHARED each


def put_to_each(queues, shared, per_shared):
    for i, q in enumerate(queues):
        q.put(("own", i))
    for j, q in enumerate(shared):
        for k in range(per_shared):
            q.put(("shared", j, k))


def test_a_thousand_waiting_gets_use_one_helper_thread(make_aqueue):
    per_shared = (MANY - OWN) // SHARED
    own = [make_aqueue(capacity=4096) for _ in range(OWN)]
    shared = [make_aqueue(capacity=1 << 16) for _ in range(SHARED)]
    targets = own + [q for q in shared for _ in range(per_shared)]
    assert len(targets) == MANY

    async def main():
        before = threading.active_count()   # the loop's own thread among them
        getters = [asyncio.create_task(q.get(timeout=JOIN)) for q in targets]
        await asyncio.sleep(0.3)             # every get is waiting now
        assert not any(g.done() for g in getters)
        during = threading.active_count()
        helpers = waiter_threads()
        # Spawned, not forked: this process runs the loop's helper thread
        # now (Python 3.12+ warns that a forked child may deadlock).
        child = multiprocessing.get_context("spawn").Process(
            target=put_to_each, args=([q.queue for q in own],
                                      [q.queue for q in shared], per_shared))
        child.start()
        try:
            got = await asyncio.gather(*getters)
        finally:
            assert join_or_kill(child, JOIN)
        return before, during, helpers, got

    before, during, helpers, got = run(main())
    assert during - before <= 2, f"{during - before} threads besides the loop's own"
    assert len(helpers) == 1
    assert got[:OWN] == [("own", i) for i in range(OWN)]
    assert sorted(got[OWN:]) == sorted(("shared", j, k) for j in range(SHARED)
                                       for k in range(per_shared))   # each exactly once
    assert all(q.empty() for q in own + shared)


def test_waits_for_data_and_room_on_many_rings_at_once(make_ring):
    rings = 40
    full = [AsyncRing(make_ring(capacity=4096)) for _ in range(rings // 2)]
    empty = [AsyncRing(make_ring(capacity=4096)) for _ in range(rings // 2)]
    for ar in full:
        while True:
            try:
                ar.ring.put_nowait(b"f")
            except Full:
                break

    def feed():
        time.sleep(0.2)
        for i, ar in enumerate(empty):
            ar.ring.put(b"%d" % i)
        for ar in full:   # room for a small message, then for a big one
            ar.ring.get()
            time.sleep(0.001)
            for _ in range(100):
                ar.ring.get()

    async def main():
        gets = [asyncio.create_task(ar.get(timeout=JOIN)) for ar in empty]
        small = [asyncio.create_task(ar.put(b"s" * 8, timeout=JOIN)) for ar in full]
        big = [asyncio.create_task(ar.put(b"B" * 1000, timeout=JOIN)) for ar in full]
        await asyncio.sleep(0.1)
        assert not any(t.done() for t in gets + small + big)
        assert len(waiter_threads()) == 1
        feeder = threading.Thread(target=feed)
        feeder.start()
        try:
            got = await asyncio.gather(*gets)
            await asyncio.gather(*small, *big)
        finally:
            feeder.join()
        return got

    try:
        assert run(main()) == [b"%d" % i for i in range(len(empty))]
        for ar in full:
            messages = ar.ring.get_many(block=False, max_messages=1000)
            assert b"s" * 8 in messages and b"B" * 1000 in messages
    finally:
        for ar in full + empty:
            ar.close()


def test_a_ring_closed_during_the_wait_fails_only_its_coroutine(make_ring):
    ars = [AsyncRing(make_ring()) for _ in range(3)]

    async def main():
        gets = [asyncio.create_task(ar.get(timeout=JOIN)) for ar in ars]
        await asyncio.sleep(0.1)
        closer = threading.Thread(target=ars[1].ring.close)
        closer.start()
        closer.join()
        with pytest.raises(ValueError):
            await gets[1]
        await asyncio.sleep(0.1)
        assert not gets[0].done() and not gets[2].done()
        assert len(waiter_threads()) == 1
        ars[0].ring.put(b"a")
        ars[2].ring.put(b"c")
        return await gets[0], await gets[2]

    try:
        assert run(main()) == (b"a", b"c")
    finally:
        for ar in ars:
            ar.close()


def test_a_loop_closed_under_its_waits_ends_its_helper(make_ring):
    ar = AsyncRing(make_ring())
    loop = asyncio.new_event_loop()
    task = loop.create_task(ar.get())
    loop.run_until_complete(asyncio.sleep(0.05))
    assert waiter_threads()
    task._log_destroy_pending = False   # left pending on purpose
    loop.close()                         # its get can never end now
    deadline = time.monotonic() + 10
    while waiter_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert not waiter_threads()
        ar.ring.put(b"kept")             # the dead wait took nothing
        assert ar.ring.get_nowait() == b"kept"
    finally:
        ar.close()


def test_each_loop_has_its_own_helper(make_ring):
    ars = [AsyncRing(make_ring()) for _ in range(2)]
    started = threading.Barrier(3)

    def in_a_loop(ar, results):
        async def main():
            getter = asyncio.create_task(ar.get(timeout=JOIN))
            await asyncio.sleep(0.05)
            await asyncio.to_thread(started.wait)
            results.append(await getter)

        asyncio.run(main())

    results = []
    threads = [threading.Thread(target=in_a_loop, args=(ar, results)) for ar in ars]
    for t in threads:
        t.start()
    try:
        started.wait(timeout=30)
        assert len(waiter_threads()) == 2
        for ar in ars:
            ar.ring.put(b"x")
    finally:
        for t in threads:
            t.join(timeout=JOIN)
        for ar in ars:
            ar.close()
    assert results == [b"x", b"x"]
