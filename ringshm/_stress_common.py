"""What the two stress modes share (``ringshm stress``: ringshm/stress.py,
and ``ringshm stress --topic``: ringshm/stress_topic.py): the message
format and its checksum, batches, the worker processes and their killing,
the supervisor's clock, the report's table, and argument types."""

from __future__ import annotations

import argparse
import contextlib
import mmap
import os
import random
import signal
import struct
import sys
import traceback
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

# A message: producer id, sequence number, payload length, crc32 of the
# payload; then the payload.
HEADER = struct.Struct("<IIII")


# A worker's blocking calls wake this often to check that the supervisor lives.
POLL = 1.0


TICK = 0.005              # the supervisor's loop


DRAIN_TIMEOUT = 60.0      # after the run: producers to finish, the ring to drain


# Worker exit codes.
EXIT_OK = 0


EXIT_RETIRED = 3          # a producer that used up its sequence numbers


EXIT_ERROR = 70           # an exception (its traceback is on stderr)


def _page_round(n: int) -> int:
    return -(-n // mmap.PAGESIZE) * mmap.PAGESIZE


def messages_of(rng: random.Random, slot: int, sizes: tuple[int, int]) -> Callable[[int], bytes]:
    """A maker of worker `slot`'s message number n: HEADER, then a payload
    of random size in `sizes` (a slice of random bytes)."""
    low, high = sizes
    pool = rng.randbytes(2 * high + 4096)

    def message(n: int) -> bytes:
        size = rng.randint(low, high)
        start = rng.randrange(len(pool) - size + 1)
        payload = pool[start:start + size]
        return HEADER.pack(slot, n, size, zlib.crc32(payload)) + payload
    return message


def next_batch(rng: random.Random, max_batch: int, message: Callable[[int], bytes],
               seq: int) -> tuple[float, list[bytes]]:
    """(how, messages seq, seq + 1...): how < 0.1, a batch of 2..max_batch;
    else one message, to put zero-copy if how < 0.4."""
    how = rng.random()
    count = rng.randint(2, max_batch) if how < 0.1 and max_batch >= 2 else 1
    return how, [message(seq + i) for i in range(count)]


@dataclass
class Worker:
    kind: str        # "producer" or "consumer"
    slot: int


W = TypeVar("W")


def fork_worker(body: Callable[[], int], workers: dict[int, W], worker: W) -> int:
    """Fork a worker that runs `body` (its return value the exit code, an
    exception EXIT_ERROR with the traceback on stderr) and put it on the
    books (`workers[pid] = worker`); returns its pid."""
    sys.stdout.flush()
    sys.stderr.flush()
    # A Ctrl-C between fork() and the bookkeeping below would leave a
    # worker that kill_all() does not know: hold the signals until the
    # worker is on the books (and, in the worker, until it ignores SIGINT).
    with _signals_held() as mask:
        pid = os.fork()
        if pid == 0:
            code = EXIT_ERROR
            try:
                # Ctrl-C goes to the whole process group: the supervisor ends
                # the workers itself, in order.
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                code = body()
            except BaseException:  # noqa: BLE001 - any failure of a worker is reported
                traceback.print_exc()
            finally:
                os._exit(code)
        workers[pid] = worker
    return pid


def kill_worker(pid: int, workers: dict[int, W]) -> W:
    """SIGKILL and reap worker `pid`, taking it off the books; returns it."""
    # Off the books, killed and reaped as one step: a Ctrl-C in between
    # would leave a worker (or a zombie) that kill_all() does not know.
    with _signals_held():
        worker = workers.pop(pid)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)   # at once: a dead process is a zombie until reaped
    return worker


def kill_all(workers: dict[int, W]) -> None:
    """SIGKILL and reap every worker on the books (stopped ones too)."""
    for pid in list(workers):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in list(workers):
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        del workers[pid]


class OutOfSlots(Exception):
    pass


def kill_note(every: float) -> str:
    return f"a SIGKILL every {every * 1000:g} ms" if every else "no kills"


def print_table(ended_early: str | None, rows: Sequence[tuple[str, object, str]],
                broken: Sequence[str]) -> None:
    """The table under a run's title line (tests/test_stress.py reads it)."""
    if ended_early:
        print(f"  (ended early: {ended_early})")
    for name, value, note in rows:
        print(f"  {name:<24}{value!s:>15}" + (f"   ({note})" if note else ""))
    for problem in broken:
        print(f"  broken: {problem}")
    sys.stdout.flush()


def _size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("B")
    scale = units.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in units else text
    try:
        value = int(number) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (say 65536 or 64K)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _sizes(text: str) -> tuple[int, int]:
    low, colon, high = text.partition(":")
    try:
        sizes = (int(low), int(high if colon else low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX, not {text!r}") from None
    if not 0 <= sizes[0] <= sizes[1]:
        raise argparse.ArgumentTypeError(f"need 0 <= MIN <= MAX, not {text!r}")
    return sizes


Number = TypeVar("Number", int, float)


def _positive(kind: Callable[[str], Number]) -> Callable[[str], Number]:
    def convert(text: str) -> Number:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, not {text}")
        return value
    return convert


def _nonnegative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {text}")
    return value


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _signals_held() -> Iterator[set[int | signal.Signals]]:
    """Hold SIGINT and SIGTERM (they are delivered on leaving); yields the
    mask to restore, for a child forked inside."""
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield mask
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
