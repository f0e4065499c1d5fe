"""4 producers -> 1 consumer of 64-byte messages through a 64 KiB ring,
and how often the queues were woken: the rate, then each wait queue's
futex word (every wake adds one to it, docs/FORMAT.md) and the put/get
waits of stats().  Shows what waking every producer waiting for room costs.

Run: .venv/bin/python bench/room_wakes.py [MESSAGES]   (default 200000)
"""

import mmap
import os
import struct
import sys
import time

from ringshm import Ring

PRODUCERS = 4
QUEUES = {"put lock": 384 + 16, "get lock": 512 + 16, "data": 640, "space": 768}
FUTEX = 8   # the futex word inside a wait queue


def wakes(path: str) -> dict[str, int]:
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 4096, prot=mmap.PROT_READ) as header:
        return {q: struct.unpack_from("<I", header, at + FUTEX)[0] for q, at in QUEUES.items()}


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    ring = Ring.create(capacity=1 << 16)
    pids = []
    for _ in range(PRODUCERS):
        pid = os.fork()
        if pid == 0:
            mine, message = Ring.open(ring.name), b"x" * 64
            for _ in range(count // PRODUCERS):
                mine.put(message)
            os._exit(0)
        pids.append(pid)
    start = time.perf_counter()
    get = ring.get
    for _ in range(count // PRODUCERS * PRODUCERS):
        get()
    took = time.perf_counter() - start
    for pid in pids:
        os.waitpid(pid, 0)
    stats = ring.stats()
    print(f"{count / took / 1e6:.2f} M msg/s  wakes {wakes(f'/dev/shm/ringshm.{ring.name}')}"
          f"  put_waits {stats['put_waits']}  get_waits {stats['get_waits']}")
    ring.close()


if __name__ == "__main__":
    main()
