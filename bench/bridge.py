"""Messages per second from ring A to ring B through the NATS bridges,
against nats-py publishing and consuming the same messages directly with
the same acknowledgements.

Bridged: this process puts N messages into ring A (put_many batches); a
``ringshm bridge out`` process publishes them, a ``ringshm bridge in``
process puts them into ring B, a child process takes them from B.  Direct:
a publisher process sends the same N messages with ``publish_async`` in
windows of the out bridge's size (each with a Nats-Msg-Id, as the bridge
does), a consumer process fetches them from a durable pull consumer in
batches of the in bridge's size and acknowledges each.  Each figure is the
time from the first put (publish) to the last message taken, the best of
--repeats runs (direct and bridged alternate, so both see the same noise
of a shared machine); one nats-server (file storage, a temporary directory) on a free loopback port.

Run: .venv/bin/python bench/bridge.py [--count-64 N] [--count-64k N]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.queues
import multiprocessing.synchronize
import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Coroutine

import nats
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

from ringshm import Ring
from ringshm.bridge import in_, out
from ringshm.bridge.ids import default_durable, default_stream, msg_id
from ringshm.bridge.local_server import NatsServer

SIZES = {"64 B": 64, "64 KiB": 64 << 10}
PUT_BATCH_BYTES = 1 << 20


def _window(size: int) -> int:
    """The out bridge's window for messages of `size` bytes."""
    return max(1, min(out.WINDOW_MESSAGES, out.WINDOW_BYTES // size))


def _take_all(name: str, count: int, done: multiprocessing.queues.Queue[float]) -> None:
    ring = Ring.open(name)
    got = 0
    while got < count:
        got += len(ring.get_many(max_messages=4096, max_bytes=None))
    done.put(time.perf_counter())
    ring.close()


def bridged(url: str, size: int, count: int, subject: str) -> float:
    """Seconds for `count` messages of `size` bytes from A to B."""
    capacity = 1 << 26
    a, b = Ring.create(capacity=capacity), Ring.create(capacity=capacity)
    a_name, b_name = str(a.name), str(b.name)   # named rings: never None
    done: multiprocessing.queues.Queue[float] = multiprocessing.Queue()
    taker = multiprocessing.Process(target=_take_all, args=(b_name, count, done))
    command = [sys.executable, "-m", "ringshm", "bridge"]
    bridges = [subprocess.Popen(command + ["out", a_name, url, "--subject", subject]),
               subprocess.Popen(command + ["in", url, "--subject", subject, b_name])]
    try:
        taker.start()
        time.sleep(1.0)   # the bridges connect and make the stream and consumer
        message = b"x" * size
        per_batch = max(1, PUT_BATCH_BYTES // size)
        start = time.perf_counter()
        left = count
        while left:
            n = min(per_batch, left)
            a.put_many([message] * n)
            left -= n
        end = done.get(timeout=600)
        taker.join()
        return end - start
    finally:
        a.shutdown()
        b.shutdown()
        for bridge in bridges:
            bridge.wait(30)
        for ring in (a, b):
            ring.unlink()
            ring.close()


async def _publish_direct(url: str, subject: str, size: int, count: int,
                          ready: multiprocessing.synchronize.Event) -> None:
    client = await nats.connect(url)
    window = _window(size)
    js = client.jetstream(publish_async_max_pending=window + 1)
    message = b"x" * size
    identity = "0" * 32
    pending = []
    ready.wait()
    for i in range(count):
        pending.append(await js.publish_async(subject, message,
                                              headers={"Nats-Msg-Id": msg_id(identity, i)}))
        if len(pending) >= window:
            await pending.pop(0)
    for ack in pending:
        await ack
    await client.close()


async def _consume_direct(url: str, subject: str, stream: str, count: int,
                          ready: multiprocessing.synchronize.Event,
                          done: multiprocessing.queues.Queue[float]) -> None:
    client = await nats.connect(url)
    js = client.jetstream()
    durable = default_durable(stream)
    await js.add_consumer(stream, ConsumerConfig(durable_name=durable, filter_subject=subject,
                                                 ack_policy=AckPolicy.EXPLICIT,
                                                 max_ack_pending=in_.BATCH * 4))
    pull = await js.pull_subscribe_bind(durable, stream)
    ready.set()
    got = 0
    while got < count:
        try:
            messages = await pull.fetch(in_.BATCH, timeout=in_.FETCH_WAIT)
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            continue
        for m in messages:
            await m.ack()
        got += len(messages)
    done.put(time.perf_counter())
    await client.close()


def _run(coroutine_function: Callable[..., Coroutine[Any, Any, None]], *args: object) -> None:
    asyncio.run(coroutine_function(*args))


def direct(url: str, size: int, count: int, subject: str) -> float:
    """Seconds for nats-py alone to move the same messages."""
    stream = default_stream(subject)

    async def make_stream() -> None:
        client = await nats.connect(url)
        await client.jetstream().add_stream(StreamConfig(
            name=stream, subjects=[subject], storage=StorageType.FILE, duplicate_window=120))
        await client.close()
    asyncio.run(make_stream())
    ready = multiprocessing.Event()
    done: multiprocessing.queues.Queue[float] = multiprocessing.Queue()
    consumer = multiprocessing.Process(target=_run, args=(_consume_direct, url, subject, stream,
                                                          count, ready, done))
    consumer.start()
    ready.wait(30)
    start = time.perf_counter()
    publisher = multiprocessing.Process(target=_run, args=(_publish_direct, url, subject, size,
                                                           count, ready))
    publisher.start()
    end = done.get(timeout=600)
    publisher.join()
    consumer.join()
    return end - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count-64", type=int, default=100_000, help="64 B messages")
    parser.add_argument("--count-64k", type=int, default=5_000, help="64 KiB messages")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each, alternating; the best is kept (default 3)")
    args = parser.parse_args()
    counts = {"64 B": args.count_64, "64 KiB": args.count_64k}
    with tempfile.TemporaryDirectory() as store:
        server = NatsServer(store).start()
        try:
            rows = []
            for label, size in SIZES.items():
                count = counts[label]
                tag = label.replace(" ", "")
                direct_s, bridged_s = [], []
                for run in range(args.repeats):
                    direct_s.append(direct(server.url, size, count, f"bench.direct.{tag}{run}"))
                    bridged_s.append(bridged(server.url, size, count,
                                             f"bench.bridged.{tag}{run}"))
                rows.append((label, count, count / min(direct_s), count / min(bridged_s)))
        finally:
            server.kill()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}, "
          f"Python {platform.python_version()}, {nats_server_version()}")
    print(f"{'size':>7} {'messages':>9} {'nats-py direct':>15} {'bridged A->B':>13} {'ratio':>6}")
    for label, count, direct_rate, bridged_rate in rows:
        print(f"{label:>7} {count:>9,} {direct_rate:>11,.0f} /s {bridged_rate:>9,.0f} /s "
              f"{bridged_rate / direct_rate:>6.2f}")


def nats_server_version() -> str:
    done = subprocess.run(["nats-server", "--version"], capture_output=True, text=True)
    return done.stdout.strip()


if __name__ == "__main__":
    main()
