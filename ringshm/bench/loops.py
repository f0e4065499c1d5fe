"""The timed loops that run inside the benchmark's child processes.

Every transport is driven by the same few loops, so a difference between two
rows of the table is a difference between the transports, not between the
loops. They are written for the interpreter: methods bound to locals before
the loop, ``itertools.repeat`` instead of ``range`` (no int objects), the
clock read once per block of messages, not once per message.

End of stream: an empty message is the sentinel. Each producer sends one per
consumer after its data; each consumer stops after one per producer. On a
transport with a single FIFO order this gives every consumer exactly its
share and every data message is taken before the last sentinel (transports
with one pipe per consumer send one sentinel down each pipe, see
transports.py).
"""

from __future__ import annotations

from itertools import repeat
from time import perf_counter, perf_counter_ns
from typing import Any, Callable, ContextManager, Sized

SENTINEL = b""


def pump(put: Callable[[Any], object], item: Any, per_call: int, stop_at: float,
         check_every: int, limit: float) -> int:
    """put(item) until the clock passes stop_at or limit messages went out
    (the futex count wants a fixed amount of work); returns how many went
    out. item is one message (per_call 1) or a put_many batch."""
    sent = 0
    per_check = per_call * check_every
    while True:
        for _ in repeat(None, check_every):
            put(item)
        sent += per_check
        if sent >= limit or perf_counter() >= stop_at:
            return sent


def drain_items(get: Callable[[], Any], sentinels: int) -> int:
    """get() returning a sized message (bytes, a zmq Frame) or, through
    functools.partial, get_into(buffer) returning a length."""
    received = 0
    seen = 0
    while True:
        if get():
            received += 1
        else:
            seen += 1
            if seen == sentinels:
                return received


def drain_views(view: Callable[[], ContextManager[Sized]], sentinels: int) -> int:
    """``with view() as mv``: zero-copy read; the payload is not touched, so
    this row measures what the ring itself costs a reader."""
    received = 0
    seen = 0
    while True:
        with view() as message:
            if len(message):
                received += 1
                continue
        seen += 1
        if seen == sentinels:
            return received


def drain_batches(get_many: Callable[[], list[Any]], put_back: Callable[[bytes], object],
                  sentinels: int) -> int:
    """get_many() returning a list. A batch can hold sentinels meant for
    another consumer; those are put back.

    Each batch is let go before the next get_many(), as drain_items lets go
    of each message before the next get(): kept, the next batch's bytes
    cannot reuse its memory, and at 1 MiB the copy then writes outside the
    L2 cache (0.71x the throughput here; docs/PERFORMANCE.md)."""
    received = 0
    seen = 0
    while True:
        batch = get_many()
        if all(batch):
            received += len(batch)
            del batch
            continue
        ends = batch.count(SENTINEL)
        received += len(batch) - ends
        seen += ends
        if seen >= sentinels:
            for _ in repeat(None, seen - sentinels):
                put_back(SENTINEL)
            return received


def ping(send: Callable[[Any], object], recv: Callable[[], Sized], message: bytes, count: int,
         warmup: int, stop_at: float) -> tuple[list[int], int]:
    """Round trips: send, wait for the echo. Returns (round-trip times in ns
    after the warm-up, echoes of the wrong length)."""
    size = len(message)
    times: list[int] = []
    record = times.append
    wrong = 0
    clock = perf_counter_ns
    stop_ns = int(stop_at * 1e9)
    for i in range(warmup + count):
        start = clock()
        send(message)
        reply = recv()
        end = clock()
        if len(reply) != size:
            wrong += 1
        if i >= warmup:
            record(end - start)
            if end >= stop_ns:
                break
    send(SENTINEL)
    return times, wrong


def pong(send: Callable[[Any], object], recv: Callable[[], Any]) -> None:
    """Echo every message until the sentinel."""
    while True:
        message = recv()
        if not message:
            return
        send(message)
