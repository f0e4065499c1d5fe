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

from . import loops

MIN_CAPACITY = 4 << 20
GET_MANY_LIMIT = 1024


class Unsupported(Exception):
    """This transport cannot run this case; the message says why."""


class Endpoint:
    """One process's end of a channel: callables bound once, outside the
    timed loop. ``put(message)``, ``get() -> message``, and for some
    transports ``put_many``, ``get_many``, ``get_into``, ``view``."""

    def __init__(self, close=None, **calls):
        self._close = close
        self.__dict__.update(calls)

    def close(self):
        if self._close is not None:
            self._close()


def capacity_for(size):
    """Bytes in flight for messages of size bytes: at least 4 MiB, and room
    for four messages, as a power of two (what a ring rounds up to anyway)."""
    need = max(MIN_CAPACITY, 4 * (size + 8))
    return 1 << (need - 1).bit_length()


def batch_for(size):
    """Messages per put_many: about 64 KiB a batch, 1..256 messages."""
    return max(1, min(256, (64 << 10) // max(size, 1)))


def check_every(size):
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

    def missing(self):
        """Why this transport cannot run here at all (a package that is not
        installed, a method the ring does not have yet), or None."""

    def check(self, size, producers, consumers):
        """Raises Unsupported when this case cannot run."""
        if self.max_producers is not None and producers > self.max_producers:
            raise Unsupported(f"takes at most {self.max_producers} producer(s)")
        if self.max_consumers is not None and consumers > self.max_consumers:
            raise Unsupported(f"takes at most {self.max_consumers} consumer(s)")

    def open(self, size, capacity, producers, consumers):
        """Parent side: a channel the forked children inherit."""
        raise NotImplementedError

    def close(self, channel):
        """Parent side, after the children are gone."""

    def producer(self, channel, index):
        """Child side: an Endpoint with put."""
        raise NotImplementedError

    def consumer(self, channel, index, size):
        """Child side: an Endpoint with get."""
        raise NotImplementedError

    def produce(self, endpoint, message, stop_at, limit):
        return loops.pump(endpoint.put, message, 1, stop_at, check_every(len(message)), limit)

    def end(self, endpoint, consumers):
        """After the data: one sentinel per consumer."""
        for _ in range(consumers):
            endpoint.put(loops.SENTINEL)

    def drain(self, endpoint, producers, size):
        return loops.drain_items(endpoint.get, producers)


class BatchMixin:
    """put_many / get_many: batches of batch_for(size) messages out, up to
    GET_MANY_LIMIT in."""

    pingpong = False
    counterpart = "ringshm-batch"

    def produce(self, endpoint, message, stop_at, limit):
        batch = [message] * batch_for(len(message))
        every = max(1, check_every(len(message)) // len(batch))
        return loops.pump(endpoint.put_many, batch, len(batch), stop_at, every, limit)

    def drain(self, endpoint, producers, size):
        return loops.drain_batches(endpoint.get_many, endpoint.put, producers)
