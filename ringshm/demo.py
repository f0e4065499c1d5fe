"""``ringshm demo``: a pipeline across processes, timed against multiprocessing.Queue.

A producer sends small jobs (an 8-byte id) into a ring, N workers take them,
compute an answer and send 16-byte results (id, answer) into a second ring,
and a collector checks every result: each id exactly once, with the right
answer. The same pipeline then runs over ringshm.Queue and over
multiprocessing.Queue (one put per job, the way a Queue is used), with fewer
jobs so the whole demo stays within a minute on two cores.
"""

from __future__ import annotations

import functools
import multiprocessing
import multiprocessing.connection
import multiprocessing.context
import multiprocessing.queues
import multiprocessing.synchronize
import os
import queue as pyqueue
import signal
import struct
import sys
import threading
import time
from collections.abc import Iterable
from types import FrameType
from typing import TYPE_CHECKING, Callable, Optional, Protocol, TypeVar, Union

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from ._ring import process_alive
from .errors import ShutDown
from .queue import Queue
from .ring import Ring

__all__ = ["run", "work"]

JOB = struct.Struct("<Q")       # a job: its id
RESULT = struct.Struct("<QQ")   # a result: the id and the worker's answer
BATCH = 1024                    # messages per put_many / get_many
RING_CAPACITY = 4 << 20
POLL = 1.0                      # seconds a child waits before checking that the parent lives
START_TIMEOUT = 60.0            # seconds for every child to start

_T = TypeVar("_T")
# What a collector reports when it is done: (received, bad, end time).
_Report = tuple[int, int, float]
# The queues compared: a job or result per item, None to end a worker's input.
_ObjectQueue = Union["Queue[Optional[bytes]]", "multiprocessing.queues.Queue[Optional[bytes]]"]
# A process of a pipeline: its function and the arguments after ``parent``.
_Target = tuple[Callable[..., None], tuple[object, ...]]
# What signal.signal returns and takes (typeshed's private _HANDLER).
_SignalHandler = Union[Callable[[int, Optional[FrameType]], object], int, signal.Handlers, None]
if TYPE_CHECKING:
    # The collector's end of the report pipe (Connection is generic in typeshed only).
    _ReportSender = multiprocessing.connection.Connection[_Report, object]


class _Counter(Protocol):
    """The collector's progress, shared with the parent (a raw ``ctx.Value``)."""

    value: int


class DemoError(Exception):
    """A process of the pipeline failed, or a result did not check out."""


def work(job_id: int) -> int:
    """The job: a multiplicative hash of its id (cheap: the demo measures transport)."""
    return (job_id * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF


def _receive(get: Callable[..., _T], parent: int, *args: int) -> _T:
    """``get(*args)`` that gives up, ending the process, once the parent is gone."""
    while True:
        try:
            return get(*args, timeout=POLL)
        except pyqueue.Empty:   # ringshm.Empty or multiprocessing.Queue's
            if not process_alive(parent):
                raise SystemExit(1) from None


def _count_bad(seen: bytearray, pairs: Iterable[tuple[int, int]]) -> int:
    """Mark each (job id, answer) in ``seen``; return how many were wrong or repeated."""
    bad = 0
    total = len(seen)
    for job_id, answer in pairs:
        if job_id < total and not seen[job_id] and answer == work(job_id):
            seen[job_id] = 1
        else:
            bad += 1
    return bad


def _child(target: Callable[..., None], parent: int,
           barrier: multiprocessing.synchronize.Barrier, *args: object) -> None:
    """Entry point of every demo process: leave Ctrl-C to the parent, start
    together, and take a shut-down channel as the end of the run."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    barrier.wait(START_TIMEOUT)
    try:
        target(parent, *args)
    except ShutDown:
        pass  # normal end of a worker's input, or the parent stopping the run


# -- the ring pipeline: raw bytes messages, batched ----------------------------

def ring_producer(parent: int, jobs: Ring, n: int) -> None:
    """Send jobs 0..n-1 in batches, then shut ``jobs`` down."""
    pack = JOB.pack
    for start in range(0, n, BATCH):
        jobs.put_many([pack(i) for i in range(start, min(n, start + BATCH))])
    jobs.shutdown()  # workers drain what is left, then see ShutDown


def ring_worker(parent: int, jobs: Ring, results: Ring) -> None:
    """Answer batches of jobs until ``jobs`` is shut down and drained."""
    pack = RESULT.pack
    while True:
        batch = _receive(jobs.get_many, parent, BATCH)
        results.put_many([pack(i, work(i)) for (i,) in JOB.iter_unpack(b"".join(batch))])


def ring_collector(parent: int, results: Ring, n: int, progress: _Counter,
                   report: _ReportSender) -> None:
    """Check n results; report (received, bad, end time) through ``report``."""
    seen = bytearray(n)
    received = bad = 0
    while received < n:
        batch = _receive(results.get_many, parent, BATCH)
        bad += _count_bad(seen, RESULT.iter_unpack(b"".join(batch)))
        received += len(batch)
        progress.value = received
    report.send((received, bad, time.monotonic()))


# -- the queue pipeline: one object per put, for ringshm.Queue and mp.Queue -----

def queue_producer(parent: int, jobs: _ObjectQueue, n: int, workers: int) -> None:
    """Put jobs 0..n-1 one by one, then one None per worker."""
    pack = JOB.pack
    for i in range(n):
        jobs.put(pack(i))
    for _ in range(workers):
        jobs.put(None)


def queue_worker(parent: int, jobs: _ObjectQueue, results: _ObjectQueue) -> None:
    """Answer jobs one by one until None; then pass a None on."""
    while (job := _receive(jobs.get, parent)) is not None:
        (i,) = JOB.unpack(job)
        results.put(RESULT.pack(i, work(i)))
    results.put(None)


def queue_collector(parent: int, results: _ObjectQueue, n: int, workers: int, progress: _Counter,
                    report: _ReportSender) -> None:
    """Check results until every worker's None; report as ring_collector."""
    seen = bytearray(n)
    received = bad = finished = 0
    while finished < workers:
        item = _receive(results.get, parent)
        if item is None:
            finished += 1
            continue
        bad += _count_bad(seen, (RESULT.unpack(item),))
        received += 1
        if not received % BATCH:
            progress.value = received
    progress.value = received
    report.send((received, bad, time.monotonic()))


# -- running one pipeline ------------------------------------------------------

class RateColumn(ProgressColumn):
    """Messages per second of a task: the measured rate once it is done."""

    def render(self, task: Task) -> Text:
        speed = task.fields.get("rate") or task.speed
        return Text("" if speed is None else f"{speed:>10,.0f} msg/s", style="progress.data.speed")


def _run_pipeline(
        ctx: multiprocessing.context.DefaultContext, ui: Progress, label: str, n: int,
        make_targets: Callable[[_Counter, _ReportSender], list[_Target]],
        stop_channels: Callable[[], None]) -> tuple[int, int, float]:
    """Run one pipeline of processes and return (received, bad, seconds).

    ``make_targets(progress, report)`` lists (function, args) for each process,
    the collector last; ``stop_channels()`` wakes every blocked process when
    the run ends early.
    """
    parent = os.getpid()
    progress: _Counter = ctx.Value("q", 0, lock=False)  # one writer: the collector
    results_end: multiprocessing.connection.Connection[object, _Report]
    report: _ReportSender
    results_end, report = ctx.Pipe(duplex=False)
    targets = make_targets(progress, report)
    barrier = ctx.Barrier(len(targets) + 1)
    processes = [ctx.Process(target=_child, args=(fn, parent, barrier) + args, daemon=True)
                 for fn, args in targets]
    task = ui.add_task(label, total=n)
    finished = False
    try:
        for process in processes:
            process.start()
        barrier.wait(START_TIMEOUT)
        started = time.monotonic()
        ui.reset(task, total=n)
        while not results_end.poll(0.1):
            ui.update(task, completed=progress.value, refresh=True)
            failed = any(p.exitcode not in (None, 0) for p in processes)
            collector_gone = processes[-1].exitcode is not None and not results_end.poll()
            if failed or collector_gone:
                raise DemoError(f"{label}: a process exited early (exit codes "
                                f"{[p.exitcode for p in processes]})")
        received, bad, ended = results_end.recv()
        ui.update(task, completed=received, rate=received / max(ended - started, 1e-9),
                  refresh=True)
        finished = True
        return received, bad, ended - started
    finally:
        if not finished:
            stop_channels()
        for process in processes:
            process.join(None if finished else 0.5)
            if process.exitcode is None:
                process.terminate()
                process.join()
        results_end.close()
        report.close()


def _ring_run(ctx: multiprocessing.context.DefaultContext, ui: Progress, label: str, n: int,
              workers: int) -> tuple[int, int, float]:
    jobs = Ring.create(capacity=RING_CAPACITY)
    try:
        results = Ring.create(capacity=RING_CAPACITY)
        try:
            def targets(progress: _Counter, report: _ReportSender) -> list[_Target]:
                return ([(ring_producer, (jobs, n))]
                        + [(ring_worker, (jobs, results))] * workers
                        + [(ring_collector, (results, n, progress, report))])

            def stop() -> None:
                jobs.shutdown()
                results.shutdown()

            return _run_pipeline(ctx, ui, label, n, targets, stop)
        finally:
            results.close()
    finally:
        jobs.close()


def _queue_run(ctx: multiprocessing.context.DefaultContext, ui: Progress, label: str, n: int,
               workers: int, make_queue: Callable[[], _ObjectQueue]) -> tuple[int, int, float]:
    jobs, results = make_queue(), make_queue()
    try:
        def targets(progress: _Counter, report: _ReportSender) -> list[_Target]:
            return ([(queue_producer, (jobs, n, workers))]
                    + [(queue_worker, (jobs, results))] * workers
                    + [(queue_collector, (results, n, workers, progress, report))])

        def stop() -> None:
            for q in (jobs, results):
                if isinstance(q, Queue):
                    q.shutdown()   # multiprocessing.Queue's processes are terminated

        return _run_pipeline(ctx, ui, label, n, targets, stop)
    finally:
        jobs.close()
        results.close()


def _ringshm_queue() -> Queue[Optional[bytes]]:
    return Queue(capacity=RING_CAPACITY)


def run(messages: int = 2_000_000, workers: int = 2, compare_messages: int = 200_000,
        console: Optional[Console] = None) -> int:
    """Run the demo and print its summary; returns the exit status (0: all checked).

    ``messages`` jobs go through the ring pipeline, ``compare_messages`` through
    each queue pipeline (none when 0).

    Raises:
        ringshm.RingError, OSError: a ring could not be created.
    """
    console = console or Console()
    ctx = multiprocessing.get_context()
    runs = [("ringshm.Ring, batched", messages, _ring_run)]
    if compare_messages:
        runs.append(("ringshm.Queue", compare_messages,
                     functools.partial(_queue_run, make_queue=_ringshm_queue)))
        runs.append(("multiprocessing.Queue", compare_messages,
                     functools.partial(_queue_run, make_queue=ctx.Queue)))
    console.print(f"[bold]ringshm demo[/]: producer -> {workers} workers -> collector, "
                  f"{JOB.size}-byte jobs, {RESULT.size}-byte results, every result checked")
    rows = []
    previous_sigterm = _exit_on_sigterm()
    try:
        with Progress(TextColumn("{task.description:<22}"), BarColumn(bar_width=24),
                      TaskProgressColumn(),
                      RateColumn(), TimeElapsedColumn(), console=console,
                      speed_estimate_period=2.0, auto_refresh=False) as ui:
            # auto_refresh=False: no display thread, so forking the pipeline is safe;
            # the polling loop of _run_pipeline refreshes instead.
            for label, n, pipeline in runs:
                received, bad, seconds = pipeline(ctx, ui, label, n, workers)
                rows.append((label, n, received, bad, seconds))
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]: rings removed")
        return 130
    except DemoError as exc:
        console.print(f"[red]demo failed[/]: {exc}")
        return 1
    finally:
        _restore_sigterm(previous_sigterm)
    return _summary(console, rows)


def _summary(console: Console, rows: list[tuple[str, int, int, int, float]]) -> int:
    table = Table(title="ringshm demo: summary")
    for column in ("pipeline", "messages", "MB", "seconds", "msg/s", "checked"):
        table.add_column(column, justify="left" if column == "pipeline" else "right")
    rates = {}
    status = 0
    for label, n, received, bad, seconds in rows:
        ok = received == n and bad == 0
        status = status or (0 if ok else 1)
        rates[label] = received / seconds if seconds > 0 else float("inf")
        megabytes = received * (JOB.size + RESULT.size) / 1e6
        table.add_row(label, f"{received:,}", f"{megabytes:,.1f}", f"{seconds:.2f}",
                      f"{rates[label]:,.0f}", "ok" if ok else f"[red]{bad:,} bad, "
                      f"{n - received + bad:,} missing[/]")
    console.print(table)
    console.print(f"Ring: put_many/get_many of {BATCH} raw messages at a time. Queues: one "
                  f"pickled job per put() and get(). MB: payload of both hops.")
    queue_rates = [rate for label, rate in rates.items() if "Queue" in label]
    if len(queue_rates) == 2 and queue_rates[1] > 0:
        console.print(f"ringshm.Queue moved {queue_rates[0] / queue_rates[1]:.1f}x as many "
                      f"messages per second as multiprocessing.Queue; batching with a Ring, "
                      f"{list(rates.values())[0] / queue_rates[1]:.0f}x.")
    return status


def _exit_on_sigterm() -> _SignalHandler:
    """Turn SIGTERM into SystemExit so that the finally blocks remove the rings."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _restore_sigterm(previous: _SignalHandler) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)
