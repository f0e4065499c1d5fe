"""One measurement in fresh processes.

The parent opens the channel, forks the producers and consumers, and only
collects what they report: it takes no part in the traffic. Every child
builds its endpoints, waits on a common barrier, then reads the clock; a
throughput run lasts from the earliest start to the last consumer's end, so
the drain after the producers stop is accounted for.
"""

from __future__ import annotations

import functools
import math
import multiprocessing
import queue
import time
from typing import Any, Callable, Optional, Sequence

from . import loops
from .transport import Endpoint, Transport, Unsupported, capacity_for

#: What a child reports: (count, start, end) for throughput, summarize()'s
#: dict for a pinger, None for a ponger; it comes back through a queue.
Report = Any
#: (name, open_ends() -> endpoints, work(*endpoints) -> report)
Child = tuple[str, Callable[[], list[Endpoint]], Callable[..., Report]]

_fork = multiprocessing.get_context("fork")

# Setting up endpoints (zmq contexts, ring attach) must not take longer.
BARRIER_TIMEOUT = 30.0
# After the time budget: the drain of a full channel plus slow process exits.
GRACE = 30.0
# Once one child failed, how long the others get to notice before a kill.
ABORT_GRACE = 2.0


def _child(name: str, open_ends: Callable[[], list[Endpoint]], work: Callable[..., Report],
           barrier: Any, finished: Any, results: Any) -> None:
    """Body of every child: open_ends() -> endpoints, the barrier, then
    work(*endpoints) -> the report sent to the parent as (name, report, error).

    Endpoints stay open until every child has reported (finished): a zmq
    PUSH socket that closes while its PULL peer's queue is full loses what
    was still in flight, even with LINGER -1.
    """
    ends: list[Endpoint] = []
    try:
        ends = open_ends()
        barrier.wait(BARRIER_TIMEOUT)
        results.put((name, work(*ends), None))
    except BaseException as exc:  # noqa: BLE001 -- reported, never a silent hang
        barrier.abort()
        results.put((name, None, f"{name}: {type(exc).__name__}: {exc}"))
    finally:
        finished.wait(GRACE)
        for end in ends:
            end.close()


def _run_children(children: Sequence[Child], deadline: float) -> dict[str, Report]:
    """children: [(name, open_ends, work)]. Forks one process per child,
    collects {name: report}, reaps them all (killing any left behind).

    Raises:
        RuntimeError: a child failed, or the reports did not come in time.
    """
    barrier = _fork.Barrier(len(children))
    finished = _fork.Event()
    results = _fork.Queue()
    processes = [_fork.Process(target=_child, args=(*child, barrier, finished, results),
                               daemon=True) for child in children]
    for process in processes:
        process.start()
    reports: dict[str, Report] = {}
    errors: list[str] = []
    try:
        while len(reports) < len(processes):
            try:
                name, report, error = results.get(
                    timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                silent = [child[0] for child in children if child[0] not in reports]
                errors.append(f"timed out waiting for {', '.join(silent)}")
                break
            reports[name] = report
            if error is not None:
                errors.append(error)
                barrier.abort()
                deadline = min(deadline, time.monotonic() + ABORT_GRACE)
    finally:
        finished.set()
        for process in processes:
            process.join(timeout=0.5 if errors else max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
    if errors:
        raise RuntimeError("; ".join(errors))
    return reports


def _produce(transport: Transport, args: dict[str, Any], endpoint: Endpoint
             ) -> tuple[int, float, float]:
    start = time.perf_counter()
    count = transport.produce(endpoint, b"x" * args["size"], start + args["seconds"],
                              args["limit"])
    transport.end(endpoint, args["consumers"])
    return count, start, time.perf_counter()


def _drain(transport: Transport, args: dict[str, Any], endpoint: Endpoint
           ) -> tuple[int, float, float]:
    start = time.perf_counter()
    count = transport.drain(endpoint, args["producers"], args["size"])
    return count, start, time.perf_counter()


def throughput(transport: Transport, size: int, producers: int, consumers: int, seconds: float,
               limit: float = math.inf, capacity: Optional[int] = None) -> dict[str, Any]:
    """One run. Returns {"sent", "received", "seconds"}.

    Raises:
        Unsupported: the transport cannot run this case.
        RuntimeError: a child failed or the run did not finish in time.
    """
    transport.check(size, producers, consumers)
    capacity = capacity or capacity_for(size)
    if transport.external:
        run = transport.throughput(size, capacity, seconds, timeout=seconds + GRACE)
        return {"sent": run["sent"], "received": run["received"], "seconds": run["seconds"]}
    args = {"size": size, "seconds": seconds, "limit": limit,
            "producers": producers, "consumers": consumers}
    channel = transport.open(size, capacity, producers, consumers)
    try:
        def producer_ends(index: int) -> list[Endpoint]:
            return [transport.producer(channel, index)]

        def consumer_ends(index: int) -> list[Endpoint]:
            return [transport.consumer(channel, index, size)]
        children: list[Child] = [(f"producer {i}", functools.partial(producer_ends, i),
                     functools.partial(_produce, transport, args)) for i in range(producers)]
        children += [(f"consumer {i}", functools.partial(consumer_ends, i),
                      functools.partial(_drain, transport, args)) for i in range(consumers)]
        reports = _run_children(children, time.monotonic() + BARRIER_TIMEOUT + seconds + GRACE)
    finally:
        transport.close(channel)
    sent = sum(reports[f"producer {i}"][0] for i in range(producers))
    drained = [reports[f"consumer {i}"] for i in range(consumers)]
    start = min(report[1] for report in reports.values())
    return {"sent": sent, "received": sum(r[0] for r in drained),
            "seconds": max(r[2] for r in drained) - start}


def summarize(times_ns: list[int], wrong: int) -> dict[str, Any]:
    """Percentiles of round-trip times, indexed as cring.c does."""
    times = sorted(times_ns)
    count = len(times)
    if not count:
        raise RuntimeError("no round trip completed")
    return {"count": count, "received": count - wrong,
            "p50_us": times[count // 2] / 1e3, "p99_us": times[count * 99 // 100] / 1e3,
            "min_us": times[0] / 1e3, "mean_us": sum(times) / count / 1e3}


def _ping(args: dict[str, Any], there: Endpoint, back: Endpoint) -> dict[str, Any]:
    times, wrong = loops.ping(there.put, back.get, b"x" * args["size"], args["count"],
                              args["warmup"], time.perf_counter() + args["seconds"])
    return summarize(times, wrong)


def _pong(there: Endpoint, back: Endpoint) -> None:
    loops.pong(back.put, there.get)


def round_trips(transport: Transport, size: int, count: int, warmup: int, seconds: float
                ) -> dict[str, Any]:
    """One ping-pong run over two channels. Returns summarize()'s dict.

    Raises:
        Unsupported: the transport cannot echo (no get returning the message).
        RuntimeError: a child failed or the run did not finish in time.
    """
    if not transport.pingpong:
        raise Unsupported("cannot echo: its get does not return the message")
    if transport.external:
        return transport.round_trips(size, count, warmup, timeout=seconds + GRACE)
    args = {"size": size, "count": count, "warmup": warmup, "seconds": seconds}
    capacity = capacity_for(size)
    there = transport.open(size, capacity, 1, 1)
    try:
        back = transport.open(size, capacity, 1, 1)
        try:
            def pinger_ends() -> list[Endpoint]:
                return [transport.producer(there, 0), transport.consumer(back, 0, size)]

            def ponger_ends() -> list[Endpoint]:
                return [transport.consumer(there, 0, size), transport.producer(back, 0)]
            reports = _run_children(
                [("pinger", pinger_ends, functools.partial(_ping, args)),
                 ("ponger", ponger_ends, _pong)],
                time.monotonic() + BARRIER_TIMEOUT + seconds + GRACE)
        finally:
            transport.close(back)
    finally:
        transport.close(there)
    pinger: dict[str, Any] = reports["pinger"]
    return pinger
