"""Instructions per Queue.put()+get() of one small object, counted by
callgrind: repeatable on a shared, noisy machine where timings are not.

The loop runs twice under `valgrind --tool=callgrind`, with N and 2N
iterations; the difference divided by N is the cost of one put()+get()
(interpreter start-up and imports cancel out).

Run: .venv/bin/python bench/queue_instructions.py [--iterations 2000]
     (the child mode: bench/queue_instructions.py --child KIND N)
"""

from __future__ import annotations

import argparse
import shutil
import sys

import callgrind_count  # bench/, beside this script

OBJECTS = {"bytes": b"x" * 64, "tuple": (1, "a", 2.0), "dict": {"k": 1, "v": [1, 2]}}


def _child(kind: str, iterations: int) -> None:
    from ringshm import Queue

    queue: Queue[object] = Queue(capacity=1 << 20)
    obj = OBJECTS[kind]
    for _ in range(iterations):
        queue.put(obj)
        queue.get()
    queue.close()


def _instructions(kind: str, iterations: int) -> int:
    return callgrind_count.instructions(__file__, kind, iterations)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], int(args.child[1]))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind not found (apt-get install valgrind)", file=sys.stderr)
        return 1
    n = args.iterations
    for kind in OBJECTS:
        per_call = (_instructions(kind, 2 * n) - _instructions(kind, n)) / n
        print(f"{kind:6} {per_call:8.0f} instructions per put()+get()")
    return 0


if __name__ == "__main__":
    sys.exit(main())
