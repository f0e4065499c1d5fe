"""1 MiB messages between two processes, put/get against put_many/get_many
(one message a batch, as `ringshm bench` sends them at 1 MiB): 3,000
messages through an 8 MiB ring, MB/s and waits per message, three rounds.

The third row keeps each batch while asking for the next, as
`batch = ring.get_many()` in a loop does: the next batch's bytes then
cannot reuse the memory of the one still held, and the consumer's copy
writes outside the L2 cache (docs/PERFORMANCE.md, "1 MiB put_many").

Run: .venv/bin/python bench/put_many_ab.py
"""

import os
import time

from ringshm import Ring

SIZE = 1 << 20
COUNT = 3000
MODES = ("put/get", "put_many/get_many", "get_many, batch kept")


def run(mode: str) -> str:
    ring = Ring.create(capacity=8 << 20)
    message = b"x" * SIZE
    many = mode != "put/get"
    pid = os.fork()
    if pid == 0:
        for _ in range(COUNT):
            if many:
                ring.put_many([message])
            else:
                ring.put(message)
        os._exit(0)
    started, got = time.perf_counter(), 0
    if mode == "put/get":
        while got < COUNT:
            got += len(ring.get()) // SIZE
    elif mode == "put_many/get_many":
        while got < COUNT:
            got += len(ring.get_many())   # the list is gone before the next call
    else:
        while got < COUNT:
            batch = ring.get_many()       # the previous batch is held until now
            got += len(batch)
    elapsed = time.perf_counter() - started
    os.waitpid(pid, 0)
    stats = ring.stats()
    ring.close()
    return (f"{mode:22} {COUNT * SIZE / elapsed / 1e6:8,.0f} MB/s, waits per message: "
            f"put {stats['put_waits'] / COUNT:.2f}, get {stats['get_waits'] / COUNT:.2f}")


def main() -> None:
    for _ in range(3):
        for mode in MODES:
            print(run(mode))


if __name__ == "__main__":
    main()
