"""Ping-pong round trip of 64-byte messages between two processes, as a
distribution: two anonymous rings, a forked echo, perf_counter_ns around
each put()+get().  Steadier than the suite's ping-pong for comparing two
builds run after run (put one first on PYTHONPATH).

Run: .venv/bin/python bench/pingpong.py [ROUND_TRIPS]   (default 100000)
"""

import os
import sys
import time

from ringshm import Ring

WARM_UP = 1000


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    there, back = Ring.anonymous(1 << 16), Ring.anonymous(1 << 16)
    pid = os.fork()
    if pid == 0:
        get, put = there.get, back.put
        for _ in range(WARM_UP + rounds):
            put(get())
        os._exit(0)
    message = b"x" * 64
    put, get, clock = there.put, back.get, time.perf_counter_ns
    for _ in range(WARM_UP):
        put(message)
        get()
    took = []
    for _ in range(rounds):
        start = clock()
        put(message)
        get()
        took.append(clock() - start)
    os.waitpid(pid, 0)
    took.sort()
    print(f"p50 {took[len(took) // 2] / 1e3:.3f} µs  p90 {took[len(took) * 9 // 10] / 1e3:.3f} µs"
          f"  ({rounds} round trips)")


if __name__ == "__main__":
    main()
