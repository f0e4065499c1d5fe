"""Many producers of big items (issue item 3): faster-fifo's multiprocessing
big-message test, made strict, through ringshm.Queue and faster-fifo.

20 producers each put 1,001 NumPy arrays (uint32, a random size from 1
element up to MAX_BYTES) through one queue of 1 MB (faster-fifo:
``Queue(1000 * 1000)``; ringshm: ``Queue(capacity=1 << 20)``) to 3
consumers; ``put(timeout=0.01)`` and ``get_many(timeout=0.01)`` are retried
until they succeed, as in faster-fifo's test. Every array carries its
producer and index in every element; each consumer checks every array on
arrival and the parent checks that every item came exactly once.

Reports, per transport, the wall time (median of --repeats runs), the Full
retries per item and the longest time one producer needed for one item;
for ringshm also the ring's put waits/timeouts. The last line is ringshm's
median over faster-fifo's (the target: at most 2).

Run: nice .venv/bin/python bench/big_items_many.py [--repeats 3] [--max-bytes 980000]
     [--producers 20] [--items 1001] [--consumers 3] [--only ringshm]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from queue import Empty, Full

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

QUEUE_BYTES = 1000 * 1000   # faster-fifo's buffer
RING_CAPACITY = 1 << 20     # the closest ringshm capacity (a power of two)


def make_queue(kind: str):
    if kind == "ringshm":
        import ringshm
        return ringshm.Queue(capacity=RING_CAPACITY)
    import faster_fifo
    return faster_fifo.Queue(QUEUE_BYTES)


def size_class(nbytes: int) -> str:
    """Which of three kinds of item this is for a ring of RING_CAPACITY."""
    if nbytes > RING_CAPACITY // 2 - 256:
        return "side file"
    if nbytes > RING_CAPACITY // 4:
        return "in ring, > 1/4"
    return "in ring, <= 1/4"


def producer(q, index: int, items: int, max_elements: int, seed: int, out) -> None:
    rng = np.random.default_rng(seed * 1000 + index)
    retries = 0
    longest = 0.0
    classes = {}   # size class: [items, retries, longest wait]
    for i in range(items):
        array = np.full(int(rng.integers(1, max_elements + 1)), index << 16 | i, np.uint32)
        started = time.perf_counter()
        tries = 0
        while True:
            try:
                q.put(array, timeout=0.01)
                break
            except Full:
                tries += 1
        retries += tries
        waited = time.perf_counter() - started
        longest = max(longest, waited)
        key = size_class(array.nbytes)
        row = classes.setdefault(key, [0, 0, 0.0])
        row[0] += 1
        row[1] += tries
        row[2] = max(row[2], waited)
    out.put((index, retries, longest, classes))


def consumer(q, total: int, done, out) -> None:
    seen = []
    while True:
        with done.get_lock():
            if done.value >= total:
                break
        try:
            batch = q.get_many(timeout=0.01)
        except Empty:
            continue
        for array in batch:
            first = int(array[0])
            if not (array == first).all():
                raise AssertionError(f"item {first:#x} arrived damaged")
            seen.append(first)
        with done.get_lock():
            done.value += len(batch)
    out.put(seen)


def space_wakes(name: str) -> int:
    """How many times consumers woke the producers sleeping for room: the
    space queue's futex word (docs/FORMAT.md: space_waitq at 768, its futex
    at +8), bumped once per wake of all its sleepers."""
    with open(f"/dev/shm/ringshm.{name}", "rb") as segment:
        segment.seek(768 + 8)
        return int.from_bytes(segment.read(4), "little")


def run_once(kind: str, producers: int, items: int, consumers: int, max_bytes: int,
             seed: int) -> dict:
    ctx = multiprocessing.get_context("fork")
    q = make_queue(kind)
    total = producers * items
    done = ctx.Value("q", 0)
    out = ctx.Queue()
    max_elements = max_bytes // 4
    procs = [ctx.Process(target=consumer, args=(q, total, done, out)) for _ in range(consumers)]
    procs += [ctx.Process(target=producer, args=(q, p, items, max_elements, seed, out))
              for p in range(producers)]
    started = time.perf_counter()
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    elapsed = time.perf_counter() - started
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"{kind}: a process failed ({p.exitcode})")
    seen = [x for r in results if isinstance(r, list) for x in r]
    expected = {p << 16 | i for p in range(producers) for i in range(items)}
    if len(seen) != total or set(seen) != expected:
        raise SystemExit(f"{kind}: {len(seen)} items of {total}, "
                         f"{len(set(seen))} distinct: lost or duplicated")
    stats = [r for r in results if isinstance(r, tuple)]
    row = {"seconds": elapsed, "retries": sum(r[1] for r in stats) / total,
           "longest": max(r[2] for r in stats)}
    classes: dict = {}
    for r in stats:
        for key, (n, tries, longest) in r[3].items():
            c = classes.setdefault(key, [0, 0, 0.0])
            c[0] += n
            c[1] += tries
            c[2] = max(c[2], longest)
    row["classes"] = classes
    if kind == "ringshm":
        s = q._ring.stats()
        row["put_waits"] = s["put_waits"] / total
        row["put_timeouts"] = s["put_timeouts"] / total
        row["put_wakes"] = space_wakes(q._ring.name) / total
        q.close()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--producers", type=int, default=20)
    ap.add_argument("--items", type=int, default=1001)
    ap.add_argument("--consumers", type=int, default=3)
    ap.add_argument("--max-bytes", type=int, default=980_000,
                    help="largest array in bytes (faster-fifo's buffer is 1,000,000)")
    ap.add_argument("--only", choices=("ringshm", "faster-fifo"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--classes", action="store_true",
                    help="retries and the longest wait by kind of item")
    args = ap.parse_args()
    kinds = [args.only] if args.only else ["faster-fifo", "ringshm"]
    medians = {}
    runs: dict[str, list] = {kind: [] for kind in kinds}
    # Interleaved (one of each, then again): the machine's load moves.
    for r in range(args.repeats):
        for kind in kinds:
            row = run_once(kind, args.producers, args.items, args.consumers, args.max_bytes,
                           args.seed + r)
            runs[kind].append(row)
            extra = "".join(f", {k} {v:.3f}/item" for k, v in row.items()
                            if k.startswith("put_"))
            print(f"{kind:>11} run {r + 1}: {row['seconds']:7.2f} s, Full retries "
                  f"{row['retries']:.2f}/item, longest item {row['longest']:.2f} s{extra}",
                  flush=True)
            if args.classes:
                for key, (n, tries, longest) in sorted(row["classes"].items()):
                    print(f"{'':>13}{key:>16}: {n:6} items, {tries / n:6.2f} retries/item, "
                          f"longest {longest:.2f} s", flush=True)
    for kind in kinds:
        medians[kind] = statistics.median(row["seconds"] for row in runs[kind])
        print(f"{kind:>11} median: {medians[kind]:.2f} s", flush=True)
    if len(medians) == 2:
        print(f"ringshm / faster-fifo: {medians['ringshm'] / medians['faster-fifo']:.2f} "
              f"(target <= 2)")


if __name__ == "__main__":
    main()
