"""One Ring object shared by several threads of a process (SPEC: any number
of producer and consumer threads at once), including zero-copy blocks that
are open in one thread while another thread uses the ring."""

import random
import struct
import subprocess
import sys
import threading

import pytest
from conftest import child_env, ringshm_home

from ringshm import Empty, ShutDown

HEAD = struct.Struct("<HI")   # producer, sequence number
PER_PRODUCER = 3000


def produce(ring, producer, errors, pad=60, count=PER_PRODUCER):
    """Put this producer's `count` numbered messages (each with up to `pad`
    bytes after its number) with put, put_many and reserve in turn."""
    rng = random.Random(producer)
    seq = 0
    try:
        while seq < count:
            how = seq % 3
            if how == 0:
                ring.put(HEAD.pack(producer, seq) + bytes(rng.randrange(pad)))
                seq += 1
            elif how == 1:
                batch = min(rng.randint(1, 5), count - seq)
                ring.put_many([HEAD.pack(producer, seq + i) + bytes(rng.randrange(pad))
                               for i in range(batch)])
                seq += batch
            else:
                message = HEAD.pack(producer, seq) + bytes(rng.randrange(pad))
                with ring.reserve(len(message)) as buffer:
                    buffer[:] = message
                seq += 1
    except Exception as exc:  # reported by the test, not lost in a thread
        errors.append(f"producer {producer}: {exc!r}")


def consume(ring, consumer, received, errors):
    """Take messages with get, get_many, view and get_into in turn until
    the ring is shut down and drained."""
    got = []
    turn = consumer
    try:
        while True:
            turn += 1
            if turn % 4 == 0:
                got.append(ring.get())
            elif turn % 4 == 1:
                got.extend(ring.get_many(max_messages=7))
            elif turn % 4 == 2:
                with ring.view() as view:
                    got.append(bytes(view))
            else:
                buffer = bytearray(ring.max_message_size)
                got.append(bytes(buffer[:ring.get_into(buffer)]))
    except ShutDown:
        pass
    except Exception as exc:
        errors.append(f"consumer {consumer}: {exc!r}")
        ring.shutdown()   # let the others finish instead of hanging
    received.append(got)


# Messages of 32 KiB and more are copied without the GIL (get, get_many,
# put), so there the threads really run inside the ring at the same time.
@pytest.mark.parametrize("capacity, pad, count", [(4096, 60, PER_PRODUCER),
                                                   (1 << 20, 48 << 10, 400)],
                         ids=["small", "copied without the GIL"])
def test_threads_share_one_ring_object(make_ring, capacity, pad, count):
    ring = make_ring(capacity=capacity)
    received, errors = [], []
    producers = [threading.Thread(target=produce, args=(ring, p, errors, pad, count),
                                  daemon=True) for p in range(3)]
    consumers = [threading.Thread(target=consume, args=(ring, c, received, errors),
                                  daemon=True) for c in range(3)]
    for thread in producers + consumers:
        thread.start()
    for thread in producers:
        thread.join(30)
    ring.shutdown()
    for thread in consumers:
        thread.join(30)
    assert not errors, errors
    assert not any(t.is_alive() for t in producers + consumers), "a thread hangs"
    seen = set()
    for got in received:
        last = {}
        for message in got:
            producer, seq = HEAD.unpack_from(message)
            assert (producer, seq) not in seen, "delivered twice"
            assert seq > last.get(producer, -1), "a producer's order was not kept"
            seen.add((producer, seq))
            last[producer] = seq
    assert len(seen) == 3 * count


def test_get_in_another_thread_during_reserve(make_ring):
    ring = make_ring()
    ring.put(b"abcde")
    got = []
    with ring.reserve(100) as buffer:
        buffer[:] = b"r" * 100
        reader = threading.Thread(target=lambda: got.append(ring.get(timeout=5)))
        reader.start()
        reader.join(10)
    assert got == [b"abcde"]
    assert ring.get_nowait() == b"r" * 100
    stats = ring.stats()
    assert (stats["messages_put"], stats["bytes_put"]) == (2, 105)


# In a separate interpreter: the bug this catches wrote through a None
# pointer, which may crash whatever process runs it.
VIEW_DURING_RESERVE = r"""
import sys, threading
from ringshm import Ring
ring = Ring.open(sys.argv[1])
ring.put(b"abcde")
seen = []
def read():
    with ring.view(timeout=5) as view:
        seen.append(bytes(view))
with ring.reserve(100) as buffer:
    buffer[:] = b"r" * 100
    reader = threading.Thread(target=read)
    reader.start()
    reader.join(10)
assert seen == [b"abcde"], seen
assert ring.get_nowait() == b"r" * 100
stats = ring.stats()
assert (stats["messages_put"], stats["bytes_put"]) == (2, 105), stats
ring.close()
print("ok")
"""


def test_view_in_another_thread_during_reserve(make_ring):
    ring = make_ring()
    env = child_env()
    done = subprocess.run([sys.executable, "-c", VIEW_DURING_RESERVE, ring.name],
                          cwd=ringshm_home(),
                          env=env, capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout) == (0, "ok\n"), done.stderr


# close() from another thread while a call waits inside the ring: the waiter
# must not touch the unmapped segment (a crash takes the whole interpreter,
# hence a separate one). It ends, with an error, instead of waiting for ever.
CLOSE_WHILE_BLOCKED = r"""
import sys, threading, time
from ringshm import Full, Ring
ring = Ring.open(sys.argv[1])
if sys.argv[2] == "put":
    try:
        while True:
            ring.put_nowait(b"x" * 100)
    except Full:
        pass
outcome = []
def blocked():
    try:
        ring.get() if sys.argv[2] == "get" else ring.put(b"x" * 100)
        outcome.append("returned")
    except Exception as exc:
        outcome.append(type(exc).__name__)
waiter = threading.Thread(target=blocked, daemon=True)
waiter.start()
time.sleep(0.3)
ring.close()
waiter.join(5)
print("still waiting" if waiter.is_alive() else outcome[0])
"""


@pytest.mark.parametrize("kind", ["get", "put"])
def test_close_while_another_thread_waits(make_ring, kind):
    ring = make_ring()
    env = child_env()
    done = subprocess.run([sys.executable, "-c", CLOSE_WHILE_BLOCKED, ring.name, kind],
                          cwd=ringshm_home(), env=env, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, f"exit status {done.returncode}: {done.stderr}"
    assert done.stdout.strip() not in ("still waiting", "returned"), done.stdout


def test_shutdown_waits_for_a_put_another_thread_is_publishing(make_ring):
    # Both threads share one lock token: the holder of the put lock looks
    # like ourselves.  shutdown() must still wait for the other thread's
    # put, or the message appears after shutdown() returned.
    ring = make_ring(capacity=64 << 10)
    holding = threading.Event()

    def put_slowly():
        with ring.reserve(100) as space:
            holding.set()
            threading.Event().wait(0.3)   # still copying when shutdown() comes
            space[:] = bytes(100)

    writer = threading.Thread(target=put_slowly)
    writer.start()
    try:
        assert holding.wait(10)
        ring.shutdown()
        after_shutdown = ring.qsize()
    finally:
        writer.join(10)
    assert after_shutdown == ring.qsize() == 1
    assert ring.get(timeout=1) == bytes(100)
    with pytest.raises(ShutDown):
        ring.get(timeout=1)


def test_shutdown_inside_its_own_reserve_block_still_commits_it(make_ring):
    ring = make_ring(capacity=64 << 10)
    with ring.reserve(10) as space:
        ring.shutdown()                   # returns at once, not after 1 s
        space[:] = bytes(10)
    assert ring.get(timeout=1) == bytes(10)


def test_no_consumer_concludes_drained_while_a_put_can_still_publish(make_ring):
    # A put that took its lock before shutdown() may publish after
    # shutdown() gave up waiting for it (1 s): a consumer must not end its
    # `for msg in ring` before that put has ended (0.2: the consumer raised
    # ShutDown after 0.1 s and b"hello" stayed in the ring, read by nobody).
    ring = make_ring(capacity=64 << 10)
    holding, release = threading.Event(), threading.Event()
    got = []

    def put_slowly():
        with ring.reserve(5) as space:
            holding.set()
            release.wait(10)
            space[:] = b"hello"

    def consume():
        got.extend(ring)   # get() until shut down and drained

    writer = threading.Thread(target=put_slowly)
    writer.start()
    assert holding.wait(10)
    ring.shutdown()                   # gives up on the holder after 1 s
    reader = threading.Thread(target=consume)
    reader.start()
    reader.join(0.3)
    assert reader.is_alive(), f"the consumer concluded 'drained' with a put open: {got}"
    with pytest.raises(Empty):
        ring.get(timeout=0.05)        # a bounded get says Empty, not ShutDown
    release.set()
    writer.join(10)
    reader.join(10)
    assert not reader.is_alive()
    assert got == [b"hello"]


def test_a_put_cancelled_after_shutdown_lets_consumers_conclude(make_ring):
    ring = make_ring(capacity=64 << 10)
    holding, release = threading.Event(), threading.Event()

    def cancel_slowly():
        with pytest.raises(KeyError):
            with ring.reserve(5):
                holding.set()
                release.wait(10)
                raise KeyError("discarded")

    writer = threading.Thread(target=cancel_slowly)
    writer.start()
    assert holding.wait(10)
    ring.shutdown()
    result = []
    reader = threading.Thread(target=lambda: result.append(list(ring)))
    reader.start()
    reader.join(0.2)
    assert reader.is_alive()
    release.set()                     # the holder drops its message: nothing comes
    writer.join(10)
    reader.join(10)
    assert result == [[]]


def _drain_to_the_end(name, results):
    from ringshm import Ring as R

    ring = R.open(name)
    try:
        results.put(sum(1 for _ in ring))
    finally:
        ring.close()


@pytest.mark.multiprocess
def test_every_put_that_returned_before_shutdown_reaches_a_consumer_in_another_process(
        make_ring):
    # put() racing shutdown(): a put that returned has published a message
    # that the consumer iterating to the end receives (0.2: 25 rounds of 200
    # ended with such a message left in the ring).
    import multiprocessing
    import random

    context = multiprocessing.get_context("fork")
    rng = random.Random(7)
    for _ in range(40):
        ring = make_ring(capacity=64 << 10)
        results = context.SimpleQueue()
        consumer = context.Process(target=_drain_to_the_end, args=(ring.name, results))
        consumer.start()
        published = []

        def produce(ring, published):
            while True:
                try:
                    ring.put(b"m" * rng.randrange(1, 200))
                except ShutDown:
                    return
                published.append(1)

        producers = [threading.Thread(target=produce, args=(ring, published)) for _ in range(2)]
        for producer in producers:
            producer.start()
        threading.Event().wait(rng.random() * 0.01)
        ring.shutdown()
        for producer in producers:
            producer.join(10)
        consumer.join(10)
        assert consumer.exitcode == 0
        assert results.get() == len(published)
        assert len(ring) == 0
