"""Wake-up latency of waiting on many: ringshm.wait over N rings against
multiprocessing.connection.wait over N pipes and a selectors-based poll of
N pyzmq PAIR sockets, in one run.

For N = 1, 16, 128, a producer process puts one message (its send time,
CLOCK_MONOTONIC, one clock for all processes) on a random one of the N
channels; the consumer waits on all N, takes the message, and records the
time from the send to the moment its wait returned; then it answers on a
separate pipe, and the producer waits a moment (so the consumer is asleep
again: a wake-up, not a spin) before the next round.

Run: .venv/bin/python bench/wait_latency.py [--rounds 2000] [--counts 1,16,128]
Prints p50 and p99 in microseconds, and ringshm's ratio to each peer.  A
benchmark, not a test: figures move with the machine's load.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import selectors
import statistics
import struct
import tempfile
import time
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as mp_wait
from typing import Any, Callable

from ringshm import Ring, wait

STAMP = struct.Struct("<q")
SETTLE_S = 0.002   # > the 50 µs spin: the consumer is asleep when the next message comes


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def produce(send: Callable[[int, bytes], None], count: int, rounds: int,
            ack: Connection) -> None:
    rng = random.Random(1)
    for _ in range(rounds):
        time.sleep(SETTLE_S)
        send(rng.randrange(count), STAMP.pack(time.monotonic_ns()))
        ack.recv_bytes()


def run(kind: str, count: int, rounds: int) -> list[float]:
    """Latencies in microseconds of `rounds` wake-ups of a waiter on
    `count` channels of `kind`."""
    ctx = multiprocessing.get_context("fork")
    ack_read, ack_write = ctx.Pipe(duplex=False)
    latencies: list[float] = []
    cleanup: list[Callable[[], Any]] = []
    if kind == "ringshm":
        rings = [Ring.create(capacity=4096) for _ in range(count)]
        cleanup += [ring.close for ring in rings]
        names = [ring.name for ring in rings]

        def child() -> None:
            opened = [Ring.open(name) for name in names]
            produce(lambda i, m: opened[i].put(m), count, rounds, ack_read)

        def take() -> bytes:
            ready = wait(rings)
            woke = time.monotonic_ns()
            message = ready[0].get_nowait()
            latencies.append((woke - STAMP.unpack(message)[0]) / 1e3)
            return message
    elif kind == "pipes":
        pipes = [ctx.Pipe(duplex=False) for _ in range(count)]

        def child() -> None:
            produce(lambda i, m: pipes[i][1].send_bytes(m), count, rounds, ack_read)

        def take() -> bytes:
            ready = mp_wait([reader for reader, _ in pipes])
            woke = time.monotonic_ns()
            message = ready[0].recv_bytes()   # type: ignore[union-attr]
            latencies.append((woke - STAMP.unpack(message)[0]) / 1e3)
            return message
    else:
        import zmq

        directory = tempfile.mkdtemp(prefix="ringshm-wait-bench-")
        addresses = [f"ipc://{directory}/{i}" for i in range(count)]
        context = zmq.Context()
        sockets = []
        for address in addresses:
            socket = context.socket(zmq.PAIR)
            socket.bind(address)
            sockets.append(socket)
        selector = selectors.DefaultSelector()
        for socket in sockets:
            selector.register(socket.getsockopt(zmq.FD), selectors.EVENT_READ, socket)
        cleanup.append(lambda: os.rmdir(directory) if not os.listdir(directory) else None)

        def child() -> None:
            child_context = zmq.Context()
            peers = []
            for address in addresses:
                peer = child_context.socket(zmq.PAIR)
                peer.connect(address)
                peers.append(peer)
            produce(lambda i, m: peers[i].send(m), count, rounds, ack_read)

        def take() -> bytes:
            # zmq's descriptor is edge-triggered: look at EVENTS before
            # sleeping, and after every wake-up.
            while True:
                for socket in sockets:
                    if socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                        woke = time.monotonic_ns()
                        message = socket.recv()
                        latencies.append((woke - STAMP.unpack(message)[0]) / 1e3)
                        return bytes(message)
                selector.select()

        def close_zmq() -> None:
            selector.close()
            for socket in sockets:
                socket.close(linger=0)
            context.term()

        cleanup.insert(0, close_zmq)
    producer = ctx.Process(target=child)
    producer.start()
    try:
        for _ in range(rounds):
            take()
            ack_write.send_bytes(b"k")
        producer.join(30)
    finally:
        if producer.is_alive():
            producer.kill()
            producer.join()
        for step in cleanup:
            step()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--counts", default="1,16,128")
    args = parser.parse_args()
    kinds = ["ringshm", "pipes"]
    try:
        import zmq  # noqa: F401

        kinds.append("zmq")
    except ImportError:
        print("pyzmq is not installed: its column is left out")
    print(f"wake-up latency, microseconds (p50 / p99), {args.rounds} rounds; "
          f"load {os.getloadavg()[0]:.2f}")
    print(f"{'channels':>8}  " + "  ".join(f"{k:>17}" for k in kinds)
          + "  ringshm/pipes p50  ringshm/zmq p50")
    for count in (int(c) for c in args.counts.split(",")):
        figures = {kind: run(kind, count, args.rounds) for kind in kinds}
        p50 = {k: statistics.median(v) for k, v in figures.items()}
        row = "  ".join(f"{p50[k]:8.1f} / {percentile(figures[k], 0.99):6.1f}" for k in kinds)
        ratios = f"{p50['ringshm'] / p50['pipes']:17.2f}"
        if "zmq" in p50:
            ratios += f"  {p50['ringshm'] / p50['zmq']:15.2f}"
        print(f"{count:>8}  {row}  {ratios}")


if __name__ == "__main__":
    main()
