"""The same ring on each backing: 64-byte messages 1 -> 1 between a forked
producer and this process, best of 5 runs of 500 000, for a POSIX name, a
file in /dev/shm, an anonymous memfd and a System V segment.  The ring code
above the mapping is one code (docs/DESIGN.md, "Backings"): the figures
should differ by the noise only.

Run: .venv/bin/python bench/backings.py
"""

import os
import tempfile
import time
from typing import Callable, Dict

from ringshm import Ring

COUNT = 500_000
MESSAGE = b"x" * 64
KEY = 0x52425300 | (os.getpid() & 0xFF)


def exchange(ring: Ring) -> float:
    """Seconds for COUNT messages from a forked producer to this process."""
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            put = ring.put
            for _ in range(COUNT):
                put(MESSAGE)
            status = 0
        finally:
            os._exit(status)
    get = ring.get
    start = time.perf_counter()
    for _ in range(COUNT):
        get()
    took = time.perf_counter() - start
    os.waitpid(pid, 0)
    return took


def main() -> None:
    folder = tempfile.mkdtemp(dir="/dev/shm", prefix="ringshm-bench-")
    makers: Dict[str, Callable[[], Ring]] = {
        "shm": lambda: Ring.create(capacity=1 << 20),
        "file": lambda: Ring.create(path=os.path.join(folder, "ring"), capacity=1 << 20),
        "anonymous": lambda: Ring.anonymous(capacity=1 << 20),
        "sysv": lambda: Ring.create(sysv_key=KEY, capacity=1 << 20),
    }
    try:
        for kind, make in makers.items():
            with make() as ring:
                best = min(exchange(ring) for _ in range(5))
            print(f"{kind:10} {COUNT / best / 1e6:6.2f} M msg/s")
    finally:
        os.rmdir(folder)


if __name__ == "__main__":
    main()
