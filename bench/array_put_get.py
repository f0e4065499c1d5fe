"""A 64 KiB float32 array's Queue.put()+get() in one process (no waits,
no other process): best of 7 x 3000. The Python and lock rounds of the
array record's path, without the scheduler's noise.

Run: .venv/bin/python bench/array_put_get.py
"""

import timeit

import numpy as np

from ringshm import Queue


def main() -> None:
    with Queue(capacity=4 << 20) as queue:
        array = np.ones(16384, np.float32)

        def once() -> None:
            queue.put(array)
            queue.get()

        best = min(timeit.repeat(once, number=3000, repeat=7)) / 3000
        print(f"{best * 1e6:.2f} µs per put()+get() of a 64 KiB float32 array")


if __name__ == "__main__":
    main()
