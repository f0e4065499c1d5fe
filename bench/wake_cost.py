"""What one put() costs when N consumers sleep in get() on an empty ring.

For N = 1, 4, 16 sleeping consumers (forked, sharing an anonymous ring),
each round waits until every consumer is asleep, then puts one 8-byte
message and measures:

  put      how long the producer's put() took (its wake-up system calls),
  deliver  from just before the put() to the moment a consumer's get()
           returned it (CLOCK_MONOTONIC is one clock for all processes).

Run: .venv/bin/python bench/wake_cost.py [--rounds 300] [--sleepers 1,4,16]
Prints a table of medians and 90th percentiles, in microseconds.  A
benchmark, not a test: figures move with the machine's load.
"""

import argparse
import os
import signal
import statistics
import struct
import time

from ringshm import Ring

STAMP = struct.Struct("<q")
STOP = b""
SETTLE_S = 0.02   # > the 50 µs spin: every consumer is asleep on a futex


def consumer(work: Ring, results: Ring) -> None:
    while True:
        msg = work.get()
        got = time.monotonic_ns()
        if msg == STOP:
            os._exit(0)
        results.put(STAMP.pack(got))


def measure(sleepers: int, rounds: int) -> tuple[list[float], list[float]]:
    work = Ring.anonymous(1 << 16)
    results = Ring.anonymous(1 << 16)
    pids = []
    for _ in range(sleepers):
        pid = os.fork()
        if pid == 0:
            try:
                consumer(work, results)
            finally:
                os._exit(1)
        pids.append(pid)
    put_us, deliver_us = [], []
    try:
        for _ in range(rounds):
            time.sleep(SETTLE_S)
            t0 = time.monotonic_ns()
            work.put(b"12345678")
            t1 = time.monotonic_ns()
            (got,) = STAMP.unpack(results.get(timeout=10))
            put_us.append((t1 - t0) / 1e3)
            deliver_us.append((got - t0) / 1e3)
        for _ in pids:
            work.put(STOP)
        for pid in pids:
            os.waitpid(pid, 0)
    except BaseException:
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        raise
    return put_us, deliver_us


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--sleepers", default="1,4,16")
    args = parser.parse_args()
    print(f"{'sleepers':>8}  {'put p50':>8} {'put p90':>8}  {'deliver p50':>11} "
          f"{'deliver p90':>11}   (µs, {args.rounds} rounds)")
    for n in (int(s) for s in args.sleepers.split(",")):
        put_us, deliver_us = measure(n, args.rounds)
        print(f"{n:>8}  {statistics.median(put_us):8.1f} {percentile(put_us, 90):8.1f}  "
              f"{statistics.median(deliver_us):11.1f} {percentile(deliver_us, 90):11.1f}")


if __name__ == "__main__":
    main()
