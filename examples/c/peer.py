"""The Python side of the C examples: produce or consume COUNT messages on a
ring found by name, path or System V key, and check every one.

    python3 peer.py consume --name jobs --count 10000     # creates the ring
    python3 peer.py produce --name jobs --count 10000     # opens it

The same rule as the C programs: the consumer creates the ring (and removes
it when it closes) and prints "ready" once it can be opened; the producer
opens it (waiting up to 10 s for it to appear), puts COUNT messages, then
shuts the ring down: the end of the stream.  The consumer takes messages
until the shutdown and checks each against message(producer, i), the same
bytes example.h makes: any loss, duplicate, reordering or damage exits 1.
"""

import argparse
import sys
import time
from typing import Any

from ringshm import Ring, RingNotFound, ShutDown

TIMEOUT = 10.0          # seconds for any one put or get (EX_TIMEOUT_NS)
CAPACITY = 16384        # EX_CAPACITY


def message(producer: int, i: int) -> bytes:
    """Message i of producer p, byte for byte example.h's ex_message()."""
    filler = (i * 37 + producer * 11) % 151
    return b"%d.%d:" % (producer, i) + bytes([ord("a") + (i + producer) % 26]) * filler


def where(args: argparse.Namespace) -> "dict[str, Any]":
    if args.name is not None:
        return {"name": args.name}
    if args.path is not None:
        return {"path": args.path}
    return {"sysv_key": args.sysv_key}


def produce(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            ring = Ring.open(**where(args))
            break
        except RingNotFound:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    with ring:
        for i in range(args.count):
            ring.put(message(args.producer, i), timeout=TIMEOUT)
        ring.shutdown()
    print(f"produced {args.count}")
    return 0


def consume(args: argparse.Namespace) -> int:
    with Ring.create(capacity=CAPACITY, **where(args)) as ring:
        print("ready", flush=True)
        expected = 0
        while True:
            try:
                data = ring.get(timeout=TIMEOUT)
            except ShutDown:
                break
            want = message(args.producer, expected)
            if data != want:
                print(f"message {expected}: expected {want[:16]!r}... of {len(want)} bytes, "
                      f"got {data[:16]!r}... of {len(data)}", file=sys.stderr)
                return 1
            expected += 1
    if expected != args.count:
        print(f"received {expected} messages, expected {args.count}", file=sys.stderr)
        return 1
    print(f"consumed {expected}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", choices=["produce", "consume"])
    found = parser.add_mutually_exclusive_group(required=True)
    found.add_argument("--name", help="a POSIX shared-memory name (/dev/shm/ringshm.NAME)")
    found.add_argument("--path", help="a regular file")
    found.add_argument("--sysv-key", type=lambda s: int(s, 0),
                       help="a System V key (0x... or decimal)")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--producer", type=int, default=0,
                        help="the producer number in the messages (default 0)")
    args = parser.parse_args()
    return produce(args) if args.role == "produce" else consume(args)


if __name__ == "__main__":
    sys.exit(main())
