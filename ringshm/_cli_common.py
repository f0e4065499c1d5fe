"""What the ``ringshm`` command's modules share (ringshm/cli.py and
ringshm/cli_topic.py): argument types, the one-line errors, `info`'s output
and sending a stream of records.  Imports nothing compiled at import time:
`ringshm --help` works without the core."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, BinaryIO, Callable, Protocol

from ._typing import Buffer
from .census import human_size
from .errors import Empty, MessageTooLarge, ShutDown

PROG = "ringshm"
_SIZE_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
# Bytes one stdin read may return; a put_many batch stays below a quarter of
# the ring as well, so a batch always fits once the consumer catches up.
_READ_SIZE = 1 << 16
_MAX_BATCH_BYTES = 1 << 20
_RECORD_HEADER = 8


class Sink(Protocol):
    """What send_stream writes to: a Ring, or a topic's publisher."""

    @property
    def capacity(self) -> int: ...
    @property
    def max_message_size(self) -> int: ...
    @property
    def name(self) -> Any: ...
    def put(self, data: bytes) -> None: ...
    def put_many(self, messages: list[bytes]) -> None: ...


# -- argument types ----------------------------------------------------------

def parse_size(text: str) -> int:
    """``"64M"`` -> 67108864. Suffixes K, M, G (powers of 1024), optionally
    followed by ``B`` or ``iB``; no suffix means bytes.

    Raises:
        argparse.ArgumentTypeError: not a positive size.
    """
    spec = text.strip().upper()
    for tail in ("IB", "B"):
        if spec.endswith(tail) and spec[:-len(tail)][-1:] in ("K", "M", "G"):
            spec = spec[:-len(tail)]
            break
    suffix = spec[-1:] if spec[-1:] in _SIZE_SUFFIXES else ""
    number = spec[:-1] if suffix else spec
    try:
        value = int(float(number) * _SIZE_SUFFIXES[suffix])
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(
            f"invalid size {text!r} (try 4096, 64K, 64M, 1G)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, not {text!r}")
    return value


def parse_mode(text: str) -> int:
    """``"600"`` or ``"0o600"`` -> 0o600.

    Raises:
        argparse.ArgumentTypeError: not an octal permission mode.
    """
    try:
        mode = int(text[2:] if text.lower().startswith("0o") else text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid mode {text!r} (octal, e.g. 600)") from None
    if not 0 <= mode <= 0o777:
        raise argparse.ArgumentTypeError(f"mode {text!r} is out of range 000..777")
    return mode


def parse_count(text: str) -> int:
    """A positive integer.

    Raises:
        argparse.ArgumentTypeError: not a positive integer.
    """
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}")
    return value


def parse_seconds(text: str) -> float:
    """A non-negative number of seconds.

    Raises:
        argparse.ArgumentTypeError: not a non-negative number.
    """
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, not {text!r}")
    return value


def parse_history(text: str) -> int:
    """A topic's history: an integer from 0 to 65536.

    Raises:
        argparse.ArgumentTypeError: not such an integer.
    """
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65536:
        raise argparse.ArgumentTypeError(f"expected a history from 0 to 65536, not {text!r}")
    return value


def parse_sysv_key(text: str) -> int:
    """``"0x5201abcd"`` or ``"1375841229"`` -> the key (as ipcs -m prints it).

    Raises:
        argparse.ArgumentTypeError: not a non-zero 32-bit key.
    """
    from ._backing import check_sysv_key
    try:
        return check_sysv_key(int(text, 0))
    except (ValueError, TypeError):
        raise argparse.ArgumentTypeError(
            f"invalid System V key {text!r} (0x... or decimal, not 0)") from None


# -- output ------------------------------------------------------------------

def _shown(name: str) -> str:
    """A ring's name as messages show it: quoted, escaped as `ls` prints it."""
    from .census import escape_name
    return f"'{escape_name(name)}'"


def _describe(exc: BaseException) -> str:
    """An error as one line: the message, or the class name when there is none."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror + (f": {exc.filename!r}" if exc.filename is not None else "")
    else:
        text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def print_info(info: dict[str, Any], as_json: bool) -> None:
    """`ringshm info`'s output: JSON, or one aligned line per key."""
    if as_json:
        print(json.dumps(info, indent=2, default=str))
        return
    width = max(len(key) for key in info)
    for key, value in info.items():
        if key == "created" and isinstance(value, (int, float)):
            value = f"{value} ({datetime.datetime.fromtimestamp(value).isoformat(' ', 'seconds')})"
        print(f"{key.ljust(width)}  {value}")


def subscriber_text(sub: dict[str, Any]) -> str:
    """One subscriber (census.subscriber_row) on one line."""
    return (f"subscriber {sub['entry']}: pid {sub['pid']} "
            f"{'alive' if sub['alive'] else 'dead'}, {sub['link']}, "
            f"lag {sub['lag_messages']} messages ({_bytes(sub['lag_bytes'])}), "
            f"received {sub['received']}, missed {sub['missed']}")


def _bytes(n: int) -> str:
    return f"{n} bytes" if n < 1024 else human_size(n)


# -- sending a stream ----------------------------------------------------------

def _batches(ring: Sink, messages: Iterable[bytes]) -> Iterator[list[bytes]]:
    """Split ``messages`` into put_many batches that always fit in ``ring``."""
    limit = min(ring.capacity // 4, _MAX_BATCH_BYTES)
    batch: list[bytes] = []
    size = 0
    for message in messages:
        record = _RECORD_HEADER + ((len(message) + 7) & ~7)
        if batch and size + record > limit:
            yield batch
            batch, size = [], 0
        batch.append(message)
        size += record
    if batch:
        yield batch


def _put_all(ring: Sink, messages: Sequence[bytes]) -> int:
    for batch in _batches(ring, messages):
        if len(batch) == 1:
            ring.put(batch[0])
        else:
            ring.put_many(batch)
    return len(messages)


def send_stream(ring: Sink, stream: BinaryIO, separator: bytes) -> int:
    """Send each ``separator``-terminated record of ``stream`` as one message.

    Reads whatever is available (never waits for a full buffer), so a slow
    writer's lines reach the ring at once. A last record without a separator
    is sent too. Returns the number of messages sent.

    Raises:
        ringshm.MessageTooLarge: a record longer than the ring's max_message_size.
    """
    fd = stream.fileno()
    pending: list[bytes] = []  # pieces of the record not yet terminated
    pending_size = 0
    sent = 0
    while True:
        chunk = os.read(fd, _READ_SIZE)
        if not chunk:
            break
        cut = chunk.rfind(separator)
        if cut < 0:
            pending.append(chunk)
            pending_size += len(chunk)
            if pending_size > ring.max_message_size:
                raise MessageTooLarge(
                    f"a record of more than {ring.max_message_size} bytes does not fit "
                    f"in ring {ring.name!r}")
            continue
        head = b"".join(pending) + chunk[:cut] if pending else chunk[:cut]
        sent += _put_all(ring, head.split(separator))
        pending = [chunk[cut + 1:]] if cut + 1 < len(chunk) else []
        pending_size = len(chunk) - cut - 1
    if pending:
        sent += _put_all(ring, [b"".join(pending)])
    return sent


def print_messages(take: Callable[[Callable[[Buffer], None]], None], args: argparse.Namespace,
                   skip: Callable[[BaseException], bool] = lambda exc: False) -> int:
    """recv's and sub's loop: ``take(write)`` takes one message and writes
    it, one per line (``--null``: NUL), until shutdown, ``--count`` or
    ``--timeout``.  An exception for which ``skip`` is true (and which it
    reported) is passed over; a reader that went away ends it quietly.
    Returns the exit status."""
    separator = b"\0" if args.null else b"\n"
    out = sys.stdout.buffer

    def write(message: Buffer) -> None:
        out.write(message)
        out.write(separator)
        out.flush()

    received = 0
    while args.count is None or received < args.count:
        try:
            take(write)
        except ShutDown:
            break
        except Empty:
            if args.count is not None:
                _error(f"timed out after {received} of {args.count} messages")
                return 1
            break
        except OSError as exc:
            # Nothing more reaches stdout: keep Python's own flush at exit
            # from failing (and printing) again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
            if isinstance(exc, BrokenPipeError):
                return 128 + signal.SIGPIPE   # the reader left, as `| head` does
            raise
        except Exception as exc:
            if skip(exc):
                continue
            raise
        received += 1
    return 0
