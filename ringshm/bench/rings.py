"""ringshm itself, in the four ways a reader or writer can use it.

The parent creates a named ring (default options: what a user gets); each
child attaches with Ring.open(name), as an unrelated process would. A variant
whose methods the ring does not have (yet) is skipped with a note.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Callable, Optional

from . import loops
from .transport import BatchMixin, Endpoint, Transport

if TYPE_CHECKING:
    from ringshm import Ring


class RingPutGet(Transport):
    key = "ringshm"
    label = "ringshm put/get"
    needs: tuple[str, ...] = ("put", "get")

    def missing(self) -> Optional[str]:
        try:
            from ringshm import Ring
        except ImportError as exc:
            return f"ringshm.Ring is not importable ({exc})"
        absent = [name for name in self.needs if not hasattr(Ring, name)]
        return f"Ring has no {', '.join(absent)}" if absent else None

    def open(self, size: int, capacity: int, producers: int, consumers: int) -> Ring:
        from ringshm import Ring
        return Ring.create(capacity=capacity)

    def close(self, channel: Ring) -> None:
        channel.close()

    def _attach(self, channel: Ring) -> Ring:
        from ringshm import Ring
        return Ring.open(channel.name)

    def producer(self, channel: Ring, index: int) -> Endpoint:
        ring = self._attach(channel)
        return Endpoint(ring.close, put=ring.put, put_many=getattr(ring, "put_many", None))

    def consumer(self, channel: Ring, index: int, size: int) -> Endpoint:
        ring = self._attach(channel)
        return Endpoint(ring.close, put=ring.put, get=ring.get,
                        get_many=getattr(ring, "get_many", None),
                        get_into=getattr(ring, "get_into", None),
                        view=getattr(ring, "view", None))


class RingBatch(BatchMixin, RingPutGet):
    key = "ringshm-batch"
    label = "ringshm put_many/get_many"
    needs = ("put_many", "get_many")


def _drain_into(endpoint: Endpoint, producers: int, size: int) -> int:
    # One buffer for the whole run, as a reader that reuses one would.
    get = functools.partial(endpoint.get_into, bytearray(max(size, 1)))
    return loops.drain_items(get, producers)


def _drain_views(endpoint: Endpoint, producers: int, size: int) -> int:
    return loops.drain_views(endpoint.view, producers)


class RingReader(RingPutGet):
    """put(), then a reader that does not make a bytes object: get_into()
    into one reused buffer, or view() (zero-copy)."""

    pingpong = False

    def __init__(self, method: str, drain: Callable[[Endpoint, int, int], int]) -> None:
        self.key = f"ringshm-{method}"
        self.label = f"ringshm put/{method}"
        self.needs = ("put", method)
        self._drain = drain

    def drain(self, endpoint: Endpoint, producers: int, size: int) -> int:
        return self._drain(endpoint, producers, size)


TRANSPORTS = (RingPutGet(), RingBatch(), RingReader("get_into", _drain_into),
              RingReader("view", _drain_views))
