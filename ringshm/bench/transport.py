"""What every benchmarked transport provides, and the defaults most share.

A transport is used in two places:

- the parent process opens a channel (``open``) before it forks the
  producers and consumers, and closes it (``close``) once they are gone;
- each child turns the inherited channel into its own ``Endpoint``
  (``producer`` / ``consumer``) and runs ``produce`` or ``drain`` on it.

Sizing is shared so that every bounded transport holds the same amount of
data in flight (``capacity_for``) and every batching transport sends the same
batches (``batch_for``).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from . import loops

MIN_CAPACITY = 4 << 20
GET_MANY_LIMIT = 1024


class Unsupported(Exception):
    """This transport cannot run this case; the message says why."""


class Endpoint:
    """One process's end of a channel: callables bound once, outside the
    timed loop. ``put(message)``, ``get() -> message``, and for some
    transports ``put_many``, ``get_many``, ``get_into``, ``view``."""

    # Set per instance from **calls; each transport's own callables (a zmq
    # Frame, a list, a memoryview context...), so only their arity is known.
    put: Callable[[Any], object]
    put_many: Callable[[list[Any]], object]
    get: Callable[[], Any]
    get_many: Callable[[], list[Any]]
    get_into: Callable[[Any], int]
    view: Callable[[], Any]

    def __init__(self, close: Optional[Callable[[], object]] = None,
                 **calls: object) -> None:
        self._close = close
        self.__dict__.update(calls)

    def close(self) -> None:
        if self._close is not None:
            self._close()


def capacity_for(size: int) -> int:
    """Bytes in flight for messages of size bytes: at least 4 MiB, and room
    for four messages, as a power of two (what a ring rounds up to anyway)."""
    need = max(MIN_CAPACITY, 4 * (size + 8))
    return 1 << (need - 1).bit_length()


def batch_for(size: int) -> int:
    """Messages per put_many: about 64 KiB a batch, 1..256 messages."""
    return max(1, min(256, (64 << 10) // max(size, 1)))


def check_every(size: int) -> int:
    """Messages between two reads of the clock: about 4 MiB of traffic,
    1..1024 messages (an early stop costs less than a clock read per put)."""
    return max(1, min(1024, (4 << 20) // max(size, 1)))


class Transport:
    """A transport driven from Python by the loops in loops.py.

    Subclasses set the class attributes and implement open/close/producer/
    consumer; the batch and zero-copy variants override produce/drain.
    """

    key = ""                 # the id used on the command line and in JSON
    label = ""               # the row name in the table and the plots
    max_producers: int | None = None  # None: any number
    max_consumers: int | None = None
    pingpong = True          # get() returns the message, so it can echo
    external = False         # measured by its own program (the C ring)
    counterpart = "ringshm"  # the ringshm row the table compares this one with

    def missing(self) -> Optional[str]:
        """Why this transport cannot run here at all (a package that is not
        installed, a method the ring does not have yet), or None."""

    def check(self, size: int, producers: int, consumers: int) -> None:
        """Raises Unsupported when this case cannot run."""
        if self.max_producers is not None and producers > self.max_producers:
            raise Unsupported(f"takes at most {self.max_producers} producer(s)")
        if self.max_consumers is not None and consumers > self.max_consumers:
            raise Unsupported(f"takes at most {self.max_consumers} consumer(s)")

    def open(self, size: int, capacity: int, producers: int, consumers: int) -> Any:
        """Parent side: a channel the forked children inherit."""
        raise NotImplementedError

    def close(self, channel: Any) -> None:
        """Parent side, after the children are gone."""

    def producer(self, channel: Any, index: int) -> Endpoint:
        """Child side: an Endpoint with put."""
        raise NotImplementedError

    def consumer(self, channel: Any, index: int, size: int) -> Endpoint:
        """Child side: an Endpoint with get."""
        raise NotImplementedError

    def produce(self, endpoint: Endpoint, message: bytes, stop_at: float, limit: float) -> int:
        return loops.pump(endpoint.put, message, 1, stop_at, check_every(len(message)), limit)

    def end(self, endpoint: Endpoint, consumers: int) -> None:
        """After the data: one sentinel per consumer."""
        for _ in range(consumers):
            endpoint.put(loops.SENTINEL)

    def drain(self, endpoint: Endpoint, producers: int, size: int) -> int:
        return loops.drain_items(endpoint.get, producers)

    # An external transport (the C ring) measures in its own program instead:
    def throughput(self, size: int, capacity: int, seconds: float, timeout: float
                   ) -> dict[str, Any]:
        """One run: {"sent", "received", "received_bytes", "seconds"}."""
        raise NotImplementedError

    def round_trips(self, size: int, count: int, warmup: int, timeout: float
                    ) -> dict[str, Any]:
        """One ping-pong run: {"count", "received", "p50_us", "p99_us", ...}."""
        raise NotImplementedError


class BatchMixin:
    """put_many / get_many: batches of batch_for(size) messages out, up to
    GET_MANY_LIMIT in."""

    pingpong = False
    counterpart = "ringshm-batch"

    def produce(self, endpoint: Endpoint, message: bytes, stop_at: float, limit: float) -> int:
        batch = [message] * batch_for(len(message))
        every = max(1, check_every(len(message)) // len(batch))
        return loops.pump(endpoint.put_many, batch, len(batch), stop_at, every, limit)

    def drain(self, endpoint: Endpoint, producers: int, size: int) -> int:
        return loops.drain_batches(endpoint.get_many, endpoint.put, producers)
