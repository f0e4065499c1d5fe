"""ringshm.asyncio: AsyncRing and AsyncQueue, rings and queues for
coroutines; AsyncTopic and AsyncSubscription, topics for coroutines.

A futex cannot be polled by an event loop, so each event loop has at most
one helper thread ("ringshm-wait") that sleeps, in one ``wait_many()`` call
(one futex_waitv), on everything that loop's coroutines wait for: data or
room, of any number of AsyncRing and AsyncQueue objects, mixed.  A
coroutine whose non-blocking call failed registers a future with its
loop's helper; when that changes what the helper must sleep on (a ring it
does not watch, a smaller room, the last wait on a ring withdrawn) it also
pokes it (a ``Poke``), and the helper rebuilds its set and sleeps again.
When rings become ready the helper resolves their futures through
``call_soon_threadsafe``, and each coroutine then takes its item (or
publishes it) with a non-blocking call on the loop's own thread.  A
cancelled coroutine was only ever waiting on a future, so cancellation
never loses an item nor publishes half of one.

The helper starts on a loop's first wait and ends after IDLE_EXIT seconds
with nothing to wait for, once its loop is closed (seen within
WAIT_SLICE), or when close() leaves it nothing to wait for.  A ring closed
under the wait (by another thread) ends it: the coroutines waiting on that
ring wake (their next call raises ValueError), the others wait on.

The helper is ringshm/_aiohelper.py's (wait_on, withdraw).  A subscription
waits through the same helper (wait_many takes subscriptions): a thousand
AsyncSubscription gets of one loop cost that loop's one thread.  A topic's
room cannot be slept on (rs_wait waits for a subscriber's data, never for
a topic's room): AsyncTopic.publish tries again after BACKOFF_MIN seconds,
doubling up to BACKOFF_MAX, until the publish fits (docs/DESIGN.md,
"Topics for coroutines").

This module is named like the standard library's: inside the package every
import is absolute, and ``import asyncio`` below is the standard library.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import (
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Generic,
    Iterable,
    Optional,
    Protocol,
    TypeVar,
)

from ringshm._aiohelper import LoopWaiter, wait_on, withdraw
from ringshm._ring import RECORD_HEADER
from ringshm._typing import Buffer
from ringshm.errors import Empty, Full, ShutDown
from ringshm.queue import Queue, T
from ringshm.ring import Ring
from ringshm.topic import ObjectSubscription, ObjectTopic, Subscription, Topic

__all__ = ["AsyncRing", "AsyncQueue", "AsyncTopic", "AsyncSubscription"]

#: When the condition held but the non-blocking call still failed (another
#: consumer was faster, a batch needs more than one message's room), the
#: next try backs off from this many seconds, doubling up to BACKOFF_MAX.
BACKOFF_MIN = 0.0005
BACKOFF_MAX = 0.01

R = TypeVar("R")


def _check_timeout(timeout: Optional[float]) -> Optional[float]:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number or None, not {type(timeout).__name__}")
    if not timeout >= 0:   # also rejects NaN
        raise ValueError(f"timeout must be a non-negative number, not {timeout!r}")
    return float(timeout)


class _Waits(Protocol):
    """What _retry waits through: AsyncRing._wait, AsyncSubscription._wait."""

    async def _wait(self, room: Optional[int], timeout: Optional[float]) -> bool: ...


async def _retry(attempt: Callable[[], R], failure: type[Exception], owner: _Waits,
                 room: Optional[Callable[[], int]], timeout: Optional[float]) -> R:
    """``attempt()`` (non-blocking) until it does not raise ``failure``,
    waiting for data (``room`` None) or ``room()`` bytes of room between
    tries; ``failure`` again once ``timeout`` expired."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    backoff = 0.0
    while True:
        try:
            return attempt()
        except failure:
            if deadline is not None and loop.time() >= deadline:
                raise
        if backoff:
            await asyncio.sleep(backoff)
        remaining = None if deadline is None else max(0.0, deadline - loop.time())
        if await owner._wait(None if room is None else room(), remaining):
            backoff = min(max(2 * backoff, BACKOFF_MIN), BACKOFF_MAX)
        else:
            backoff = 0.0


async def _until_shut_down(get: Callable[[], Awaitable[R]]) -> AsyncIterator[R]:
    while True:
        try:
            yield await get()
        except ShutDown:
            return


def _room_for(sizes: Iterable[int], limit: int) -> int:
    """The payload of one message that needs the room of these messages."""
    span = sum((RECORD_HEADER + n + 7) & ~7 for n in sizes) - RECORD_HEADER
    return max(0, min(span, limit))


class AsyncRing:
    """A Ring for coroutines: ``await put()``, ``await get()``, batches and
    ``async for``.  Wraps an open Ring, which stays usable (and open: close
    it yourself); the other end may be any Ring or Queue, blocking or not,
    in any process.

    Raises:
        TypeError: ``ring`` is not a Ring.
    """

    def __init__(self, ring: Ring) -> None:
        if not isinstance(ring, Ring):
            raise TypeError(f"AsyncRing wraps a Ring, not {type(ring).__name__}")
        self._ring = ring
        self._closed = False
        # The helpers of the loops whose coroutines waited on this object.
        self._helpers: weakref.WeakSet[LoopWaiter] = weakref.WeakSet()

    @property
    def ring(self) -> Ring:
        """The Ring this object wraps."""
        return self._ring

    def __repr__(self) -> str:
        return f"<AsyncRing {self._ring!r}>"

    async def put(self, data: Buffer, timeout: Optional[float] = None) -> None:
        """Append one message, waiting (without blocking the loop) for room.

        Cancelled, it has published the message or not, never part of it.

        Raises:
            ringshm.Full: no room within ``timeout`` seconds.
            ringshm.ShutDown: the ring was shut down.
            ringshm.MessageTooLarge: larger than max_message_size.
            TypeError: ``data`` is not bytes-like.  ValueError: a bad timeout,
                or the ring is closed.
        """
        timeout = _check_timeout(timeout)
        size = memoryview(data).nbytes
        await _retry(lambda: self._ring.put_nowait(data), Full, self, lambda: size, timeout)

    def put_nowait(self, data: Buffer) -> None:
        """The Ring's put_nowait().

        Raises:
            ringshm.Full: no room now.  Otherwise as put().
        """
        self._ring.put_nowait(data)

    async def put_many(self, messages: Iterable[Buffer], timeout: Optional[float] = None) -> None:
        """Append a batch, all or nothing (see Ring.put_many).

        Raises:
            ringshm.Full: the whole batch did not fit in time; nothing was put.
            Otherwise as put() (MessageTooLarge: the batch can never fit).
        """
        timeout = _check_timeout(timeout)
        batch = list(messages)
        need = _room_for((memoryview(m).nbytes for m in batch), self._ring.max_message_size)
        await _retry(lambda: self._ring.put_many(batch, block=False), Full, self,
                     lambda: need, timeout)

    async def get(self, timeout: Optional[float] = None) -> bytes:
        """Remove and return the oldest message, waiting without blocking the
        loop.  Cancelled, it has taken nothing.

        Raises:
            ringshm.Empty: nothing within ``timeout`` seconds.
            ringshm.ShutDown: the ring was shut down and is drained.
            ValueError: a bad timeout, or the ring is closed.
        """
        timeout = _check_timeout(timeout)
        return await _retry(self._ring.get_nowait, Empty, self, None, timeout)

    def get_nowait(self) -> bytes:
        """The Ring's get_nowait().

        Raises:
            ringshm.Empty: nothing now.  Otherwise as get().
        """
        return self._ring.get_nowait()

    async def get_many(self, max_messages: int = 1024, max_bytes: Optional[int] = 256 * 1024,
                       timeout: Optional[float] = None) -> list[bytes]:
        """Wait for at least one message, then take as many as are ready, up
        to the limits (see Ring.get_many).  Cancelled, it has taken nothing.

        Raises:
            As get(); TypeError, ValueError: a bad limit.
        """
        timeout = _check_timeout(timeout)
        return await _retry(
            lambda: self._ring.get_many(max_messages, max_bytes, block=False),
            Empty, self, None, timeout)

    def __aiter__(self) -> AsyncIterator[bytes]:
        """``await get()`` until the ring is shut down and drained."""
        return _until_shut_down(self.get)

    async def _wait(self, room: Optional[int], timeout: Optional[float]) -> bool:
        """Until the ring may hold a message (``room`` None) or room for
        ``room`` bytes (True), or ``timeout`` expired (False).  Takes nothing.

        Raises:
            ValueError: this object is closed.
        """
        if room is not None:
            room = min(room, self._ring.max_message_size)
        return await wait_on(self, self._ring, room, timeout)

    def close(self) -> None:
        """Wake the coroutines waiting on this object (they raise
        ValueError) and end each loop's helper thread that this leaves with
        nothing to wait for; the ring stays open.  Idempotent; waits started
        afterwards raise ValueError."""
        self._closed = True
        withdraw(self)

    async def __aenter__(self) -> AsyncRing:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


class AsyncQueue(Generic[T]):
    """A Queue for coroutines.

    ``AsyncQueue(maxsize=0, **Queue options)`` makes a new Queue (closed by
    close()); ``AsyncQueue(queue=q)`` wraps an existing Queue (any of its
    subclasses, left open by close()).  The other end may be a plain
    blocking Queue in another process (pass it ``aq.queue``).

    Raises:
        TypeError: ``queue`` is not a Queue, or options given with it.
        Otherwise as Queue().
    """

    def __init__(self, maxsize: int = 0, *, queue: Optional[Queue[T]] = None,
                 **options: Any) -> None:
        self._owned = queue is None
        if queue is None:
            queue = Queue(maxsize, **options)
        elif not isinstance(queue, Queue):
            raise TypeError(f"queue must be a ringshm Queue, not {type(queue).__name__}")
        elif maxsize or options:
            raise TypeError("give either queue= or the options of a new Queue, not both")
        self._queue: Queue[T] = queue
        self._async_ring = AsyncRing(queue._open_ring())

    @property
    def queue(self) -> Queue[T]:
        """The Queue behind this object (picklable: pass it to a child)."""
        return self._queue

    def __repr__(self) -> str:
        return f"<AsyncQueue {self._queue!r}>"

    def _room_needed(self, objs: Iterable[T]) -> int:
        # Asked only once a put found no room: serialising a second time is
        # the price of waiting for the right amount of it.
        dumps = self._queue._dumps
        return _room_for((memoryview(dumps(obj)).nbytes for obj in objs),
                         self._async_ring.ring.max_message_size)

    async def put(self, obj: T, timeout: Optional[float] = None) -> None:
        """Put ``obj`` at the end, waiting without blocking the loop.
        Cancelled, it has put the item or not; putting it again after the
        cancellation neither loses nor duplicates it.

        Raises:
            ringshm.Full: no room within ``timeout``.  Otherwise as Queue.put().
        """
        timeout = _check_timeout(timeout)
        await _retry(lambda: self._queue.put_nowait(obj), Full, self._async_ring,
                     _once(lambda: self._room_needed([obj])), timeout)

    def put_nowait(self, obj: T) -> None:
        """The Queue's put_nowait().

        Raises:
            ringshm.Full: no room now.  Otherwise as Queue.put().
        """
        self._queue.put_nowait(obj)

    async def put_many(self, objs: Iterable[T], timeout: Optional[float] = None) -> None:
        """Put every object in order, all or nothing (see Queue.put_many).

        Raises:
            ringshm.Full: no room for the whole batch in time.  Otherwise as
                Queue.put_many().
        """
        timeout = _check_timeout(timeout)
        batch = list(objs)
        await _retry(lambda: self._queue.put_many(batch, block=False), Full,
                     self._async_ring, _once(lambda: self._room_needed(batch)), timeout)

    async def get(self, timeout: Optional[float] = None) -> T:
        """Remove and return the oldest item, waiting without blocking the
        loop.  Cancelled, it has taken nothing.

        Raises:
            ringshm.Empty: nothing within ``timeout``.  Otherwise as Queue.get().
        """
        timeout = _check_timeout(timeout)
        return await _retry(self._queue.get_nowait, Empty, self._async_ring, None, timeout)

    def get_nowait(self) -> T:
        """The Queue's get_nowait().

        Raises:
            ringshm.Empty: nothing now.  Otherwise as Queue.get().
        """
        return self._queue.get_nowait()

    async def get_many(self, max_messages: int = 1024,
                       timeout: Optional[float] = None) -> list[T]:
        """Wait for at least one item, then take up to ``max_messages`` ready
        ones.  Cancelled, it has taken nothing.

        Raises:
            As get(); ValueError: ``max_messages`` < 1.
        """
        timeout = _check_timeout(timeout)
        return await _retry(lambda: self._queue.get_many(max_messages, block=False),
                            Empty, self._async_ring, None, timeout)

    def qsize(self) -> int:
        """The Queue's qsize() (a snapshot).

        Raises:
            ValueError: the queue is closed.
        """
        return self._queue.qsize()

    def empty(self) -> bool:
        """The Queue's empty() (a snapshot).

        Raises:
            ValueError: the queue is closed.
        """
        return self._queue.empty()

    def full(self) -> bool:
        """The Queue's full() (a snapshot).

        Raises:
            ValueError: the queue is closed.
        """
        return self._queue.full()

    @property
    def is_shutdown(self) -> bool:
        """True once the queue was shut down, in any process.

        Raises:
            ValueError: the queue is closed.
        """
        return self._queue.is_shutdown

    def shutdown(self, immediate: bool = False) -> None:
        """The Queue's shutdown(): waiting coroutines wake and raise ShutDown
        once the queue is drained.

        Raises:
            ValueError: the queue is closed.
        """
        self._queue.shutdown(immediate)

    def __aiter__(self) -> AsyncIterator[T]:
        """``await get()`` until the queue is shut down and drained."""
        return _until_shut_down(self.get)

    def close(self) -> None:
        """As AsyncRing.close(); also close the Queue if this object made it.
        Idempotent."""
        self._async_ring.close()
        if self._owned:
            self._queue.close()

    async def __aenter__(self) -> AsyncQueue[T]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


def _once(compute: Callable[[], int]) -> Callable[[], int]:
    """``compute`` called on first use only, its result remembered."""
    result: list[int] = []

    def value() -> int:
        if not result:
            result.append(compute())
        return result[0]

    return value


class AsyncSubscription:
    """A topic subscription for coroutines: ``await get()``, ``get_many``,
    ``async for``.  Wraps a Subscription (bytes) or an ObjectSubscription
    (objects), made by ``AsyncTopic.subscribe()`` or by you; close() closes
    it.  Waits join the loop's one helper thread, as AsyncRing's do.

    Raises:
        TypeError: ``subscription`` is neither.
    """

    def __init__(self, subscription: Any) -> None:
        if isinstance(subscription, Subscription):
            core = subscription
        elif isinstance(subscription, ObjectSubscription):
            core = subscription.subscription
        else:
            raise TypeError(f"AsyncSubscription wraps a Subscription or an ObjectSubscription, "
                            f"not {type(subscription).__name__}")
        self._subscription = subscription
        self._core: Subscription = core
        self._closed = False
        self._helpers: weakref.WeakSet[LoopWaiter] = weakref.WeakSet()

    @property
    def subscription(self) -> Any:
        """The Subscription or ObjectSubscription this object wraps."""
        return self._subscription

    def __repr__(self) -> str:
        return f"<AsyncSubscription {self._core!r}>"

    async def get(self, timeout: Optional[float] = None) -> Any:
        """The next message (an object for an ObjectSubscription), waiting
        without blocking the loop.  Cancelled, it has taken nothing.

        Raises:
            ringshm.Empty: nothing within ``timeout`` seconds.
            ringshm.ShutDown: the topic was shut down and this subscriber
                has taken everything.
            ringshm.Lagged: (untethered) overrun; the next get continues
                with the oldest message held.
            ValueError: a bad timeout, or closed.
        """
        timeout = _check_timeout(timeout)
        return await _retry(self._get_nowait, Empty, self, None, timeout)

    def _get_nowait(self) -> Any:
        if self._closed:
            raise ValueError("operation on a closed AsyncSubscription")
        item: Any = self._subscription.get_nowait()
        return item

    def get_nowait(self) -> Any:
        """The subscription's get_nowait().

        Raises:
            ringshm.Empty: nothing now.  Otherwise as get().
        """
        return self._get_nowait()

    async def get_many(self, max_messages: int = 1024, max_bytes: Optional[int] = 256 * 1024,
                       timeout: Optional[float] = None) -> list[Any]:
        """Wait for at least one message, then take as many as are ready, up
        to the limits (``max_bytes``: a Subscription's only).  Cancelled, it
        has taken nothing.

        Raises:
            As get(); TypeError, ValueError: a bad limit.
        """
        timeout = _check_timeout(timeout)

        def attempt() -> list[Any]:
            if self._closed:
                raise ValueError("operation on a closed AsyncSubscription")
            if isinstance(self._subscription, ObjectSubscription):
                objects: list[Any] = self._subscription.get_many(max_messages, block=False)
                return objects
            batch: list[Any] = self._core.get_many(max_messages, max_bytes, block=False)
            return batch

        return await _retry(attempt, Empty, self, None, timeout)

    def __aiter__(self) -> AsyncIterator[Any]:
        """``await get()`` until the topic is shut down and this subscriber
        has taken everything (a Lagged ends the loop with the exception)."""
        return _until_shut_down(self.get)

    @property
    def tethered(self) -> bool:
        return bool(self._core.tethered)

    @property
    def lag(self) -> int:
        return int(self._core.lag)

    @property
    def closed(self) -> bool:
        return self._closed or bool(self._core.closed)

    async def _wait(self, room: Optional[int], timeout: Optional[float]) -> bool:
        """Until this subscriber may have something to take, or its topic is
        shut down and drained for it (True), or ``timeout`` expired (False).

        Raises:
            ValueError: this object is closed.
        """
        return await wait_on(self, self._core, None, timeout)

    def close(self) -> None:
        """Wake the coroutines waiting on this object (they raise
        ValueError), end each loop's helper this leaves with nothing to wait
        for, and close the subscription (leave the topic).  Idempotent."""
        self._closed = True
        withdraw(self)
        self._subscription.close()

    async def __aenter__(self) -> AsyncSubscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


class AsyncTopic:
    """A Topic (or ObjectTopic) for coroutines: ``await publish()``,
    ``publish_many``, ``subscribe()``.  Wraps an open topic, which stays
    usable and open (close it yourself).

    A full log (a tethered subscriber behind) cannot be slept on: publish
    tries again after BACKOFF_MIN seconds, doubling up to BACKOFF_MAX.

    Raises:
        TypeError: ``topic`` is neither a Topic nor an ObjectTopic.
    """

    def __init__(self, topic: Any) -> None:
        if not isinstance(topic, (Topic, ObjectTopic)):
            raise TypeError(f"AsyncTopic wraps a Topic or an ObjectTopic, "
                            f"not {type(topic).__name__}")
        self._topic: Any = topic
        self._closed = False

    @property
    def topic(self) -> Any:
        """The Topic or ObjectTopic this object wraps."""
        return self._topic

    def __repr__(self) -> str:
        return f"<AsyncTopic {self._topic!r}>"

    async def _publish(self, attempt: Callable[[], None], timeout: Optional[float]) -> None:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        backoff = BACKOFF_MIN
        while True:
            if self._closed:
                raise ValueError("operation on a closed AsyncTopic")
            try:
                return attempt()
            except Full:
                if deadline is not None and loop.time() >= deadline:
                    raise
            delay = backoff if deadline is None else \
                max(0.0, min(backoff, deadline - loop.time()))
            await asyncio.sleep(delay)
            backoff = min(2 * backoff, BACKOFF_MAX)

    async def publish(self, message: Any, timeout: Optional[float] = None) -> None:
        """Publish one message (an object for an ObjectTopic), waiting
        without blocking the loop while the log is full.  Cancelled, it has
        published the message or not, never part of it.

        Raises:
            ringshm.Full: no room within ``timeout`` seconds.
            ringshm.ShutDown, ringshm.MessageTooLarge, TypeError: as
                Topic.publish().  ValueError: a bad timeout, or closed.
        """
        timeout = _check_timeout(timeout)
        await self._publish(lambda: self._topic.publish_nowait(message), timeout)

    def publish_nowait(self, message: Any) -> None:
        """The topic's publish_nowait().

        Raises:
            ringshm.Full: no room now.  Otherwise as publish().
        """
        if self._closed:
            raise ValueError("operation on a closed AsyncTopic")
        self._topic.publish_nowait(message)

    async def publish_many(self, messages: Iterable[Any], timeout: Optional[float] = None) -> None:
        """Publish a batch, all or nothing, contiguous (see
        Topic.publish_many), waiting without blocking the loop.

        Raises:
            ringshm.Full: the whole batch did not fit in time; nothing was
                published.  Otherwise as publish().
        """
        timeout = _check_timeout(timeout)
        batch = list(messages)
        await self._publish(lambda: self._topic.publish_many(batch, block=False), timeout)

    def subscribe(self, *, tethered: bool = True,
                  stall_timeout: Optional[float] = None) -> AsyncSubscription:
        """A new subscriber (Topic.subscribe()), wrapped for coroutines.

        Raises:
            As Topic.subscribe().
        """
        if self._closed:
            raise ValueError("operation on a closed AsyncTopic")
        return AsyncSubscription(self._topic.subscribe(tethered=tethered,
                                                       stall_timeout=stall_timeout))

    def shutdown(self) -> None:
        """The topic's shutdown(): waiting subscribers take what is left,
        then raise ShutDown."""
        self._topic.shutdown()

    def close(self) -> None:
        """Later publishes raise ValueError; the topic stays open.
        Idempotent."""
        self._closed = True

    async def __aenter__(self) -> AsyncTopic:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
