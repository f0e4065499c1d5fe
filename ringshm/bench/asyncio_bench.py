"""asyncio figures: ringshm.asyncio beside pyzmq's zmq.asyncio, in one run.

    python -m ringshm.bench.asyncio_bench [--messages N] [--round-trips N]
    ringshm bench --asyncio          (the same table after the main report)

Two cases, 64 B messages, the asyncio end in this process and a plain
blocking end in a forked one:

- round trip: the coroutine sends, the blocking process echoes, the
  coroutine awaits the echo (p50 and p99 of every trip after a warm-up);
- receive throughput: the blocking process sends as fast as it can, the
  coroutine receives with ``await get()`` (a waiter thread wakes the loop
  whenever it runs dry), and, for comparison, with a busy ``get_nowait()``
  loop that never yields to the loop (what the async machinery costs).

pyzmq runs the same over ipc:// (PAIR for the round trip, PUSH/PULL for the
throughput; ``await recv()`` on a zmq.asyncio socket, ``recv(NOBLOCK)`` on a
plain one).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Coroutine, Optional, Sequence, cast

from ringshm import Empty, Full, Queue, Ring
from ringshm.asyncio import AsyncQueue, AsyncRing

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess
    from multiprocessing.synchronize import Event

    import zmq
    import zmq.asyncio

SIZE = 64
CAPACITY = 1 << 20
WARMUP = 1000
_fork = multiprocessing.get_context("fork")
PAYLOAD = b"x" * SIZE


# -- the blocking ends (forked) ------------------------------------------------

def _ring_echo(inbound: Ring, outbound: Ring, count: int) -> None:
    for _ in range(count):
        outbound.put(inbound.get())


def _trickle(send_nowait: Callable[[], object], again: type[BaseException], done: Event
             ) -> None:
    # After the timed messages, one more every millisecond until the
    # receiver is done: zmq.asyncio can miss the wake-up of the last
    # messages of a burst (pyzmq's GitHub issues 1065 and 2173) and a new arrival
    # unsticks it.  Every transport gets the same tail.
    while not done.is_set():
        try:
            send_nowait()
        except again:
            pass
        time.sleep(0.001)


def _ring_send(ring: Ring, count: int, go: Event, done: Event) -> None:
    go.wait()
    for _ in range(count):
        ring.put(PAYLOAD)
    _trickle(lambda: ring.put_nowait(PAYLOAD), Full, done)


def _queue_send(queue: Queue[bytes], count: int, go: Event, done: Event) -> None:
    go.wait()
    for _ in range(count):
        queue.put(PAYLOAD)
    _trickle(lambda: queue.put_nowait(PAYLOAD), Full, done)


def _zmq_connected(kind: int, address: str, linger: int
                   ) -> tuple[zmq.Context[zmq.Socket[bytes]], zmq.Socket[bytes]]:
    import zmq
    context = zmq.Context()
    sock = context.socket(kind)
    sock.setsockopt(zmq.LINGER, linger)
    sock.connect(address)
    return context, sock


def _zmq_echo(address: str, count: int) -> None:
    import zmq
    context, sock = _zmq_connected(zmq.PAIR, address, -1)   # deliver every echo
    for _ in range(count):
        sock.send(sock.recv())
    sock.close()
    context.term()


def _zmq_send(address: str, count: int, go: Event, done: Event) -> None:
    import zmq
    # The receiver stops after `count`: what the tail left unread is dropped.
    context, sock = _zmq_connected(zmq.PUSH, address, 0)
    go.wait()
    for _ in range(count):
        sock.send(PAYLOAD)
    _trickle(lambda: sock.send(PAYLOAD, zmq.NOBLOCK), zmq.Again, done)
    sock.close()
    context.term()


# -- the asyncio ends ------------------------------------------------------------

def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_us": statistics.median(ordered) * 1e6,
            "p99_us": ordered[int(len(ordered) * 0.99) - 1] * 1e6}


async def _ring_round_trips(count: int) -> dict[str, float]:
    with Ring.create(capacity=CAPACITY) as out, Ring.create(capacity=CAPACITY) as back:
        peer = _fork.Process(target=_ring_echo, args=(out, back, count + WARMUP))
        peer.start()
        sender, receiver = AsyncRing(out), AsyncRing(back)
        try:
            samples: list[float] = []
            for i in range(count + WARMUP):
                start = time.perf_counter()
                await sender.put(PAYLOAD)
                await receiver.get()
                if i >= WARMUP:
                    samples.append(time.perf_counter() - start)
        finally:
            sender.close()
            receiver.close()
            peer.join()
    return _percentiles(samples)


async def _zmq_round_trips(address: str, count: int) -> dict[str, float]:
    import zmq
    import zmq.asyncio
    context = zmq.asyncio.Context()
    sock = context.socket(zmq.PAIR)
    sock.bind(address)
    peer = _fork.Process(target=_zmq_echo, args=(address, count + WARMUP))
    peer.start()
    try:
        samples: list[float] = []
        for i in range(count + WARMUP):
            start = time.perf_counter()
            await sock.send(PAYLOAD)
            await sock.recv()
            if i >= WARMUP:
                samples.append(time.perf_counter() - start)
    finally:
        peer.join()
        sock.close()
        context.term()
    return _percentiles(samples)


async def _receive(start_peer: Callable[[Event, Event], BaseProcess],
                   receive_one: Callable[[], Awaitable[object]], count: int) -> dict[str, float]:
    """Messages a second: start the sender, time ``count`` receptions."""
    go, done = _fork.Event(), _fork.Event()
    peer = start_peer(go, done)
    try:
        start = time.perf_counter()
        go.set()
        for _ in range(count):
            await receive_one()
        return {"msgs_per_s": count / (time.perf_counter() - start)}
    finally:
        done.set()
        peer.join()


def _started(target: Callable[..., None], *args: Any) -> BaseProcess:
    peer = _fork.Process(target=target, args=args)
    peer.start()
    return peer


def _busy(get_nowait: Callable[[], object], again: type[BaseException]
          ) -> Callable[[], Awaitable[object]]:
    """A coroutine function that spins on a non-blocking receive."""
    async def receive_one() -> object:
        while True:
            try:
                return get_nowait()
            except again:
                pass
    return receive_one


async def _ring_throughput(count: int, how: str) -> dict[str, float]:
    with Ring.create(capacity=CAPACITY) as ring:
        aring = AsyncRing(ring)
        try:
            receive = aring.get if how == "await" else _busy(ring.get_nowait, Empty)
            return await _receive(lambda go, done: _started(_ring_send, ring, count, go, done),
                                  receive, count)
        finally:
            aring.close()


async def _queue_throughput(count: int, how: str) -> dict[str, float]:
    queue: Queue[bytes]
    with Queue(capacity=CAPACITY) as queue:
        aqueue: AsyncQueue[bytes] = AsyncQueue(queue=queue)
        try:
            receive = aqueue.get if how == "await" else _busy(queue.get_nowait, Empty)
            return await _receive(lambda go, done: _started(_queue_send, queue, count, go, done),
                                  receive, count)
        finally:
            aqueue.close()


async def _zmq_throughput(address: str, count: int, how: str) -> dict[str, float]:
    import zmq
    import zmq.asyncio
    context = zmq.asyncio.Context() if how == "await" else zmq.Context()
    sock = context.socket(zmq.PULL)
    sock.bind(address)
    try:
        receive: Callable[[], Awaitable[object]]
        if how == "await":
            # A zmq.asyncio socket (the context above): recv() is awaitable.
            receive = cast("zmq.asyncio.Socket", sock).recv
        else:
            receive = _busy(lambda: sock.recv(zmq.NOBLOCK), zmq.Again)
        return await _receive(lambda go, done: _started(_zmq_send, address, count, go, done),
                              receive, count)
    finally:
        sock.close()
        context.term()


# -- the run and its table ---------------------------------------------------------

def run(messages: int = 200_000, round_trips: int = 20_000,
        log: Callable[[str], object] = print) -> list[dict[str, Any]]:
    """Every case once; returns a list of rows (dicts)."""
    try:
        import zmq  # noqa: F401
        have_zmq = True
    except ImportError:
        have_zmq = False
        log("pyzmq is not installed (pip install pyzmq): its rows are skipped")
    directory = tempfile.mkdtemp(prefix="ringshm-bench-asyncio-")
    address = f"ipc://{os.path.join(directory, 'bench.sock')}"
    cases: list[tuple[str, str, Callable[[], Coroutine[Any, Any, dict[str, float]]]]] = [
        ("round trip", "ringshm AsyncRing", lambda: _ring_round_trips(round_trips)),
        ("await get()", "ringshm AsyncRing", lambda: _ring_throughput(messages, "await")),
        ("get_nowait() loop", "ringshm Ring", lambda: _ring_throughput(messages, "busy")),
        ("await get()", "ringshm AsyncQueue", lambda: _queue_throughput(messages, "await")),
        ("get_nowait() loop", "ringshm Queue", lambda: _queue_throughput(messages, "busy")),
    ]
    if have_zmq:
        cases += [
            ("round trip", "zmq.asyncio PAIR ipc", lambda: _zmq_round_trips(address, round_trips)),
            ("await get()", "zmq.asyncio PULL ipc",
             lambda: _zmq_throughput(address, messages, "await")),
            ("get_nowait() loop", "zmq PULL ipc recv(NOBLOCK)",
             lambda: _zmq_throughput(address, messages, "busy")),
        ]
    rows: list[dict[str, Any]] = []
    try:
        for case, transport, measure in cases:
            row = {"case": case, "transport": transport, "size": SIZE,
                   **asyncio.run(measure())}
            log(f"{case:18} {transport:28} {_figure(row)}")
            rows.append(row)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return rows


def _figure(row: dict[str, Any]) -> str:
    if "p50_us" in row:
        return f"p50 {row['p50_us']:7.1f} µs   p99 {row['p99_us']:7.1f} µs"
    return f"{row['msgs_per_s'] / 1e3:9.0f} k msg/s"


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    lines = [f"asyncio, {SIZE} B messages, the other end a blocking process",
             "", "| case | transport | figure |", "|---|---|---|"]
    lines += [f"| {r['case']} | {r['transport']} | {_figure(r).strip()} |" for r in rows]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m ringshm.bench.asyncio_bench``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m ringshm.bench.asyncio_bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--round-trips", type=int, default=20_000)
    args = parser.parse_args(argv)
    rows = run(args.messages, args.round_trips,
               log=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
