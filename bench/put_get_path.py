"""The cost of the uncontended put()+get() path in one process (no waits,
no other process): best of 7 runs of 200 000 x (2 puts, 2 gets) of 64 bytes.
Compares two builds' hot paths without the scheduler's noise.

Run: .venv/bin/python bench/put_get_path.py
"""

import time

from ringshm import Ring


def main() -> None:
    ring = Ring.anonymous(1 << 20)
    put, get, message = ring.put, ring.get, b"x" * 64
    best = float("inf")
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(200_000):
            put(message)
            put(message)
            get()
            get()
        best = min(best, time.perf_counter() - start)
    print(f"{best / 400_000 * 1e9:.1f} ns per put+get")


if __name__ == "__main__":
    main()
