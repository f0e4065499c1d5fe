"""Many producer and consumer processes on one ring: nothing lost, nothing
duplicated, each producer's order kept, for every start method; and a ring
passed to children as an argument (Process, Pool, inside a queue)."""

import multiprocessing
import os
import random
import struct
import zlib
from typing import NamedTuple

import pytest
from conftest import remove_segment, remove_sysv, shm_path, unique_sysv_key

from ringshm import Ring, ShutDown
from ringshm._ring import SYSV_CREATE, sysv_get

pytestmark = pytest.mark.multiprocess

PRODUCERS = 4
CONSUMERS = 4
# producer id, sequence number, crc32 of the payload; then the payload.
HEAD = struct.Struct("<HII")
DEADLINE = 50  # seconds for a whole run; only to turn a hang into a failure


class Load(NamedTuple):
    """What the producers send: messages of min_size..max_size bytes,
    per_producer each, put_many batches of 1..max_batch."""

    min_size: int
    max_size: int
    per_producer: int
    max_batch: int


SMALL = Load(8, 200, 200_000 // PRODUCERS, 8)   # at most 8 x 208: half of 4096
# 20-60 KB: past the early wrap's 32 KiB, in a 1 MiB ring, where a put
# meets a lap start that is free for three records or is not.
BIG = Load(20_000, 60_000, 1_000, 2)


def make_message(rng, producer, seq, load):
    size = rng.randint(max(load.min_size, HEAD.size), load.max_size) - HEAD.size
    payload = rng.randbytes(size)
    return HEAD.pack(producer, seq, zlib.crc32(payload)) + payload


def produce(ring, producer, load):
    """Put this producer's messages in sequence, by put, put_many and
    reserve in turn, so that every way of writing races with the others."""
    rng = random.Random(producer)
    seq = turn = 0
    while seq < load.per_producer:
        turn += 1
        if turn % 3 == 0:
            count = min(rng.randint(1, load.max_batch), load.per_producer - seq)
            ring.put_many([make_message(rng, producer, seq + i, load) for i in range(count)])
            seq += count
            continue
        message = make_message(rng, producer, seq, load)
        if turn % 3 == 1:
            ring.put(message)
        else:
            with ring.reserve(len(message)) as buffer:
                buffer[:] = message
        seq += 1
    ring.close()


def take(ring, turn, buffer):
    """Messages by get, get_many, view and get_into in turn."""
    if turn % 4 == 0:
        return [ring.get()]
    if turn % 4 == 1:
        return ring.get_many(max_messages=64)
    if turn % 4 == 2:
        with ring.view() as view:
            return [bytes(view)]
    return [bytes(buffer[:ring.get_into(buffer)])]


def consume(ring, consumer, results, load):
    """Take messages until the ring is shut down and drained; send back one
    summary: a bitmap of the sequence numbers seen per producer, plus the
    count of duplicates, order violations and bad checksums seen here."""
    seen = [bytearray(load.per_producer) for _ in range(PRODUCERS)]
    last = [-1] * PRODUCERS
    duplicates = out_of_order = corrupt = count = 0
    buffer = bytearray(load.max_size)
    turn = consumer
    try:
        while True:
            turn += 1
            for message in take(ring, turn, buffer):
                producer, seq, crc = HEAD.unpack_from(message)
                if (zlib.crc32(message[HEAD.size:]) != crc or producer >= PRODUCERS
                        or seq >= load.per_producer):
                    corrupt += 1
                    continue
                count += 1
                duplicates += seen[producer][seq]
                seen[producer][seq] = 1
                out_of_order += seq <= last[producer]
                last[producer] = seq
    except ShutDown:
        pass
    ring.close()
    results.put((count, duplicates, out_of_order, corrupt, [bytes(s) for s in seen]))


def stop(processes):
    for process in processes:
        if process.is_alive():
            process.kill()
        process.join()


# Small rings: they wrap and make both sides wait often; 4096 holds about
# 25 messages, so nearly every put and get there meets a full or empty ring.
@pytest.mark.parametrize("method", ["fork", "spawn"])
@pytest.mark.parametrize("capacity", [4096, 64 << 10])
def test_many_producers_and_consumers(make_ring, method, capacity):
    exchange(multiprocessing.get_context(method), make_ring(capacity=capacity))


# The other backings (shm above): the same exchange; an anonymous ring only
# with fork (nothing else can share it), a System V one pickled as its key.
@pytest.mark.parametrize("backing, method", [("file", "fork"), ("anonymous", "fork"),
                                             ("sysv", "fork"), ("sysv", "spawn")],
                         indirect=["backing"])
def test_many_processes_on_every_backing(backing, method):
    exchange(multiprocessing.get_context(method), backing(capacity=4096))


def test_big_messages_that_wrap_early(make_ring):
    # Records of 32 KiB and more go to the start of the lap when the room
    # there is free (docs/DESIGN.md, "Early wraps"): nothing lost, doubled
    # or reordered, and the ring does wrap early.
    ring = make_ring(capacity=1 << 20)
    exchange(multiprocessing.get_context("fork"), ring, BIG)
    stats = ring.stats()
    laps = stats["head"] // ring.capacity
    # An ordinary wrap pads less than the record that did not fit, so only
    # early wraps can pad more than the largest record per lap (a record
    # header and alignment take under 16 bytes: the padding counted here
    # is at most what there was).
    padding = stats["head"] - stats["bytes_put"] - 16 * stats["messages_put"]
    assert padding > laps * (BIG.max_size + 16), "no lap ended early"


def exchange(ctx, ring, load=SMALL):
    """Run the producers and consumers on ``ring`` and check every message
    arrived once, in each producer's order."""
    results = ctx.Queue()
    producers = [ctx.Process(target=produce, args=(ring, p, load))
                 for p in range(PRODUCERS)]
    consumers = [ctx.Process(target=consume, args=(ring, c, results, load))
                 for c in range(CONSUMERS)]
    try:
        for process in consumers + producers:
            process.start()
        for process in producers:
            process.join(DEADLINE)
            assert process.exitcode == 0, f"producer exit code {process.exitcode}"
        ring.shutdown()   # consumers drain what is left, then see ShutDown
        summaries = [results.get(timeout=DEADLINE) for _ in consumers]
        for process in consumers:
            process.join(DEADLINE)
            assert process.exitcode == 0
    finally:
        stop(producers + consumers)

    assert sum(s[3] for s in summaries) == 0, "messages with a bad checksum"
    assert sum(s[1] for s in summaries) == 0, "a consumer got a message twice"
    assert sum(s[2] for s in summaries) == 0, "a producer's order was not kept"
    total = load.per_producer * PRODUCERS
    assert sum(s[0] for s in summaries) == total
    for producer in range(PRODUCERS):
        # Each sequence number seen by exactly one consumer: the bitmaps (one
        # byte per number, 0 or 1) as big integers must not overlap and must
        # cover everything.
        union = 0
        for summary in summaries:
            bitmap = int.from_bytes(summary[4][producer], "little")
            assert union & bitmap == 0, f"producer {producer}: delivered twice"
            union |= bitmap
        seen = union.to_bytes(load.per_producer, "little").count(1)
        assert seen == load.per_producer, f"producer {producer}: {load.per_producer - seen} lost"
    stats = ring.stats()
    assert stats["messages_put"] == stats["messages_got"] == total
    assert stats["messages"] == 0 and len(ring) == 0


# ------------------------------------------------ create(exist_ok) race

def create_or_open_and_put(where, start, index):
    start.wait(20)
    # persist: the first creator must not remove the name while the others
    # are still attaching to it.
    ring = Ring.create(**where, capacity=4096, exist_ok=True, persist=True)
    ring.put(b"%d" % index)
    ring.close()


# Regression: an opener that found no magic yet once got a ring marked
# closed (the retry went through close's path).
@pytest.mark.parametrize("kind", ["name", "sysv_key", "blank sysv segment"])
def test_racing_create_exist_ok_all_share_one_ring(ring_name, kind):
    """Processes that create(exist_ok=True) the same name (or System V key)
    at the same moment end up on one ring: an opener waits for the winner's
    header instead of failing on a half-made segment.  On a blank segment
    made beforehand (as a C program's shmget would) all race to adopt it:
    one writes the header, once."""
    where = {"name": ring_name} if kind == "name" else {"sysv_key": unique_sysv_key()}
    if kind == "blank sysv segment":
        sysv_get(where["sysv_key"], 4096 + 4096, SYSV_CREATE | 0o600)
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    children = [ctx.Process(target=create_or_open_and_put, args=(where, start, i))
                for i in range(8)]
    try:
        for child in children:
            child.start()
        start.set()
        for child in children:
            child.join(30)
        assert [child.exitcode for child in children] == [0] * 8
        with Ring.open(**where) as ring:
            assert sorted(ring.get_many(max_messages=100, block=False)) == sorted(
                b"%d" % i for i in range(8))
            assert ring.stats()["messages_put"] == 8   # one header, never rewritten
    finally:
        stop(children)
        remove_segment(ring_name)
        if "sysv_key" in where:
            remove_sysv(where["sysv_key"])


# ---------------------------------------------------- rings as arguments
# Requests and replies go through two rings: on one ring the asker could
# take back its own request.

def echo(requests, replies, count):
    for _ in range(count):
        replies.put(b"reply to " + requests.get(timeout=20))


def echo_from_queue(rings):
    requests, replies = rings.get(timeout=20)
    echo(requests, replies, 1)


def put_squares(ring, n):
    ring.put(b"%d" % (n * n))
    return n


def ask(requests, replies, questions):
    for question in questions:
        requests.put(question)
    return sorted(replies.get(timeout=20) for _ in questions)


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_ring_as_process_argument(make_ring, method):
    requests, replies = make_ring(), make_ring()
    ctx = multiprocessing.get_context(method)
    child = ctx.Process(target=echo, args=(requests, replies, 2))
    child.start()
    try:
        assert ask(requests, replies, [b"1", b"2"]) == [b"reply to 1", b"reply to 2"]
    finally:
        child.join(20)
        stop([child])
    assert child.exitcode == 0
    # The child's copies only attached: the names outlive it.
    assert os.path.exists(shm_path(requests.name)) and os.path.exists(shm_path(replies.name))


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_ring_inside_another_queue(make_ring, method):
    ctx = multiprocessing.get_context(method)
    requests, replies = make_ring(), make_ring()
    rings = ctx.Queue()
    child = ctx.Process(target=echo_from_queue, args=(rings,))
    child.start()
    try:
        rings.put((requests, replies))
        assert ask(requests, replies, [b"q"]) == [b"reply to q"]
    finally:
        child.join(20)
        stop([child])
    assert child.exitcode == 0


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_ring_as_pool_argument(make_ring, method):
    ring = make_ring()
    with multiprocessing.get_context(method).Pool(2) as pool:
        done = pool.starmap(put_squares, [(ring, n) for n in range(10)], chunksize=1)
        pool.close()
        pool.join()
    assert done == list(range(10))
    got = sorted(int(ring.get(timeout=5)) for _ in range(10))
    assert got == [n * n for n in range(10)]
    assert len(ring) == 0
