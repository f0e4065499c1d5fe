"""Instructions per Ring operation, counted by callgrind: repeatable on a
shared, noisy machine where timings are not (the Ring twin of
queue_instructions.py).

Each row runs its loop twice under `valgrind --tool=callgrind`, with N and
2N iterations; the difference divided by N is the cost of one iteration
(interpreter start-up, imports and the ring's creation cancel out). One
process, one ring: the uncontended path, no waits.

  put+get bytes        Ring.put(64 B bytes) + Ring.get()
  put+get bytearray    Ring.put(64 B bytearray) + Ring.get()
  put_many+get_many    put_many of 16 x 64 B + get_many() (per batch of 16)
  reserve+view         with reserve(64) as mv: mv[:] = msg; then with view() as mv: len(mv)

--annotate ROW writes the callgrind profile of that row's 2N run to
--out (default callgrind.out.ring) for callgrind_annotate.

Run: .venv/bin/python bench/ring_instructions.py [--iterations 2000]
     (the child mode: bench/ring_instructions.py --child ROW N)
"""

from __future__ import annotations

import argparse
import shutil
import sys
from typing import Callable

import callgrind_count  # bench/, beside this script

SIZE = 64
BATCH = 16
ROWS = ("put+get bytes", "put+get bytearray", "put_many+get_many", "reserve+view")


def _loop(row: str) -> Callable[[int], None]:
    from ringshm import Ring

    ring = Ring.anonymous(capacity=1 << 20)
    put, get = ring.put, ring.get
    if row == "put+get bytes":
        msg: object = b"x" * SIZE

        def run(n: int) -> None:
            for _ in range(n):
                put(msg)
                get()
    elif row == "put+get bytearray":
        msg = bytearray(b"x" * SIZE)

        def run(n: int) -> None:
            for _ in range(n):
                put(msg)
                get()
    elif row == "put_many+get_many":
        batch = [b"x" * SIZE] * BATCH
        put_many, get_many = ring.put_many, ring.get_many

        def run(n: int) -> None:
            for _ in range(n):
                put_many(batch)
                get_many()
    elif row == "reserve+view":
        data = b"x" * SIZE
        reserve, view = ring.reserve, ring.view

        def run(n: int) -> None:
            for _ in range(n):
                with reserve(SIZE) as mv:
                    mv[:] = data
                with view() as mv:
                    len(mv)
    else:
        raise SystemExit(f"unknown row {row!r}")
    run(50)   # warm: the liveness slot, the caches of the interpreter
    return run


def _child(row: str, iterations: int) -> None:
    _loop(row)(iterations)


def _instructions(row: str, iterations: int, out_file: str = "/dev/null") -> int:
    return callgrind_count.instructions(__file__, row, iterations, out_file)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--rows", default=",".join(ROWS),
                        help=f"comma-separated, of: {', '.join(ROWS)}")
    parser.add_argument("--annotate", metavar="ROW",
                        help="also keep the 2N run's profile of ROW in --out")
    parser.add_argument("--out", default="callgrind.out.ring")
    parser.add_argument("--child", nargs=2, metavar=("ROW", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], int(args.child[1]))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind not found (apt-get install valgrind)", file=sys.stderr)
        return 1
    n = args.iterations
    for row in args.rows.split(","):
        twice = _instructions(row, 2 * n, args.out if row == args.annotate else "/dev/null")
        per_call = (twice - _instructions(row, n)) / n
        print(f"{row:20} {per_call:8.0f} instructions per iteration")
    return 0


if __name__ == "__main__":
    sys.exit(main())
