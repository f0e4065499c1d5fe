"""One measurement in fresh processes.

The parent opens the channel, forks the producers and consumers, and only
collects what they report: it takes no part in the traffic. Every child
builds its endpoint, waits on a common barrier, then reads the clock; the
run lasts from the earliest start to the last consumer's end, so process
start-up and the drain after the producers stop are both accounted for.
"""

from __future__ import annotations

import math
import multiprocessing
import queue
import time

from . import loops
from .transport import Unsupported, capacity_for

_fork = multiprocessing.get_context("fork")

# Setting up endpoints (zmq contexts, ring attach) must not take longer.
BARRIER_TIMEOUT = 30.0
# After the time budget: the drain of a full channel plus slow process exits.
GRACE = 30.0
# Once one child failed, how long the others get to notice before a kill.
ABORT_GRACE = 2.0


def _child(role, transport, channel, index, args, barrier, results):
    endpoint = None
    try:
        if role == "producer":
            endpoint = transport.producer(channel, index)
        else:
            endpoint = transport.consumer(channel, index, args["size"])
        barrier.wait(BARRIER_TIMEOUT)
        start = time.perf_counter()
        if role == "producer":
            count = transport.produce(endpoint, b"x" * args["size"],
                                      start + args["seconds"], args["limit"])
            transport.end(endpoint, args["consumers"])
        else:
            count = transport.drain(endpoint, args["producers"], args["size"])
        results.put((role, index, count, start, time.perf_counter(), None))
    except BaseException as exc:  # noqa: BLE001 -- reported, never a silent hang
        barrier.abort()
        results.put((role, index, 0, 0.0, 0.0, f"{role} {index}: {type(exc).__name__}: {exc}"))
    finally:
        if endpoint is not None:
            endpoint.close()


def _run_children(targets, results, barrier, deadline):
    """Start the children, collect one report from each, reap them."""
    processes = [_fork.Process(target=target, args=args, daemon=True) for target, args in targets]
    for process in processes:
        process.start()
    reports, errors = [], []
    try:
        while len(reports) < len(processes):
            try:
                report = results.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                errors.append("timed out waiting for the children")
                break
            reports.append(report)
            if report[-1] is not None:
                errors.append(report[-1])
                barrier.abort()
                deadline = min(deadline, time.monotonic() + ABORT_GRACE)
    finally:
        for process in processes:
            process.join(timeout=max(0.1, deadline - time.monotonic()) if not errors else 0.5)
            if process.is_alive():
                process.kill()
                process.join()
    if errors:
        raise RuntimeError("; ".join(errors))
    return reports


def throughput(transport, size, producers, consumers, seconds, limit=math.inf, capacity=None):
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
    channel = transport.open(size, capacity, producers, consumers)
    try:
        barrier = _fork.Barrier(producers + consumers)
        results = _fork.Queue()
        args = {"size": size, "seconds": seconds, "limit": limit,
                "producers": producers, "consumers": consumers}
        targets = [(_child, ("producer", transport, channel, i, args, barrier, results))
                   for i in range(producers)]
        targets += [(_child, ("consumer", transport, channel, i, args, barrier, results))
                    for i in range(consumers)]
        reports = _run_children(targets, results, barrier,
                                time.monotonic() + BARRIER_TIMEOUT + seconds + GRACE)
    finally:
        transport.close(channel)
    sent = sum(r[2] for r in reports if r[0] == "producer")
    received = sum(r[2] for r in reports if r[0] == "consumer")
    start = min(r[3] for r in reports)
    end = max(r[4] for r in reports if r[0] == "consumer")
    return {"sent": sent, "received": received, "seconds": end - start}


def _pinger(transport, there, back, args, barrier, results):
    ends = []
    try:
        ends = [transport.producer(there, 0), transport.consumer(back, 0, args["size"])]
        barrier.wait(BARRIER_TIMEOUT)
        times, wrong = loops.ping(ends[0].put, ends[1].get, b"x" * args["size"], args["count"],
                                  args["warmup"], time.perf_counter() + args["seconds"])
        results.put(("pinger", summarize(times, wrong), None))
    except BaseException as exc:  # noqa: BLE001 -- reported, never a silent hang
        barrier.abort()
        results.put(("pinger", None, f"pinger: {type(exc).__name__}: {exc}"))
    finally:
        for end in ends:
            end.close()


def _ponger(transport, there, back, args, barrier, results):
    ends = []
    try:
        ends = [transport.consumer(there, 0, args["size"]), transport.producer(back, 0)]
        barrier.wait(BARRIER_TIMEOUT)
        loops.pong(ends[1].put, ends[0].get)
        results.put(("ponger", None, None))
    except BaseException as exc:  # noqa: BLE001 -- reported, never a silent hang
        barrier.abort()
        results.put(("ponger", None, f"ponger: {type(exc).__name__}: {exc}"))
    finally:
        for end in ends:
            end.close()


def summarize(times_ns, wrong):
    """Percentiles of round-trip times, indexed as cring.c does."""
    times = sorted(times_ns)
    count = len(times)
    if not count:
        raise RuntimeError("no round trip completed")
    return {"count": count, "received": count - wrong,
            "p50_us": times[count // 2] / 1e3, "p99_us": times[count * 99 // 100] / 1e3,
            "min_us": times[0] / 1e3, "mean_us": sum(times) / count / 1e3}


def round_trips(transport, size, count, warmup, seconds):
    """One ping-pong run over two channels. Returns summarize()'s dict.

    Raises:
        Unsupported: the transport cannot echo (no get returning the message).
        RuntimeError: a child failed or the run did not finish in time.
    """
    if not transport.pingpong:
        raise Unsupported("cannot echo: its get does not return the message")
    if transport.external:
        return transport.round_trips(size, count, warmup, timeout=seconds + GRACE)
    capacity = capacity_for(size)
    there = transport.open(size, capacity, 1, 1)
    try:
        back = transport.open(size, capacity, 1, 1)
        try:
            barrier = _fork.Barrier(2)
            results = _fork.Queue()
            args = {"size": size, "count": count, "warmup": warmup, "seconds": seconds}
            reports = _run_children(
                [(_pinger, (transport, there, back, args, barrier, results)),
                 (_ponger, (transport, there, back, args, barrier, results))],
                results, barrier, time.monotonic() + BARRIER_TIMEOUT + seconds + GRACE)
        finally:
            transport.close(back)
    finally:
        transport.close(there)
    return next(r[1] for r in reports if r[0] == "pinger")
