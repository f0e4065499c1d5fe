"""1 MiB messages between two processes, put/get against put_many/get_many
(one message a batch, as `ringshm bench` sends them at 1 MiB): 3,000
messages through an 8 MiB ring, two rounds each, MB/s and waits per
message.

Run: .venv/bin/python bench/put_many_ab.py
"""

import os
import time

from ringshm import Ring

SIZE = 1 << 20
COUNT = 3000


def run(many: bool) -> str:
    ring = Ring.create(capacity=8 << 20)
    message = b"x" * SIZE
    pid = os.fork()
    if pid == 0:
        for _ in range(COUNT):
            if many:
                ring.put_many([message])
            else:
                ring.put(message)
        os._exit(0)
    started, got = time.perf_counter(), 0
    while got < COUNT:
        got += len(ring.get_many()) if many else len(ring.get()) // SIZE
    elapsed = time.perf_counter() - started
    os.waitpid(pid, 0)
    stats = ring.stats()
    ring.close()
    return (f"{'put_many/get_many' if many else 'put/get':18} {COUNT * SIZE / elapsed / 1e6:8,.0f}"
            f" MB/s, waits per message: put {stats['put_waits'] / COUNT:.2f}, "
            f"get {stats['get_waits'] / COUNT:.2f}")


def main() -> None:
    for _ in range(2):
        for many in (False, True):
            print(run(many))


if __name__ == "__main__":
    main()
