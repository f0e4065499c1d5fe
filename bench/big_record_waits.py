"""Waits per message of big records between two processes: one producer
(reserve()) and one consumer (view() + a copy of its own), 20,000 arrays of
64 KiB through a 4 MiB ring and 200 frames of 6.2 MB through 32 MiB. The
waits per message tell whether producer and consumer copy at the same time
(few waits) or take turns (about one each): how the early wrap's room was
chosen (docs/DESIGN.md, "Early wraps"); wall time is reported too, but on a
shared machine only the waits repeat.

Run: .venv/bin/python bench/big_record_waits.py
"""

import os
import time

import numpy as np

from ringshm import Ring


def run(nbytes: int, capacity: int, count: int) -> str:
    ring = Ring.create(capacity=capacity)
    source = np.ones(nbytes, np.uint8)
    pid = os.fork()
    if pid == 0:
        data = memoryview(source)
        for _ in range(count):
            with ring.reserve(nbytes) as space:
                space[:] = data
        os._exit(0)
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        with ring.view() as message:
            np.frombuffer(message, np.uint8).copy()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    os.waitpid(pid, 0)
    stats = ring.stats()
    ring.close()
    return (f"{nbytes:>8} B: {count / elapsed:9,.0f}/s, consumer CPU {cpu / count * 1e6:7.1f} "
            f"µs/msg, waits per message: put {stats['put_waits'] / count:.2f}, "
            f"get {stats['get_waits'] / count:.2f}, laps {stats['head'] // capacity}")


def main() -> None:
    for nbytes, capacity, count in ((64 << 10, 4 << 20, 20_000), (6_220_800, 32 << 20, 200)):
        print(run(nbytes, capacity, count))


if __name__ == "__main__":
    main()
