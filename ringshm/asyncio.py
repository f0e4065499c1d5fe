"""ringshm.asyncio: AsyncRing and AsyncQueue, rings and queues for coroutines.

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

This module is named like the standard library's: inside the package every
import is absolute, and ``import asyncio`` below is the standard library.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from typing import Any, AsyncIterator, Awaitable, Callable, Generic, Iterable, Optional, TypeVar

from ringshm._ring import RECORD_HEADER, Poke, RingCore, wait_many
from ringshm._typing import Buffer
from ringshm.errors import Empty, Full, ShutDown
from ringshm.queue import Queue, T
from ringshm.ring import Ring

__all__ = ["AsyncRing", "AsyncQueue"]

#: The longest a loop's helper thread sleeps in one wait before it looks
#: whether its loop was closed.
WAIT_SLICE = 0.25
#: A helper thread with nothing to wait for ends after this many seconds.
IDLE_EXIT = 1.0
#: When the condition held but the non-blocking call still failed (another
#: consumer was faster, a batch needs more than one message's room), the
#: next try backs off from this many seconds, doubling up to BACKOFF_MAX.
BACKOFF_MIN = 0.0005
BACKOFF_MAX = 0.01

R = TypeVar("R")
#: What the helper sleeps on for a wait: (id of the RingCore, True for room).
_Key = tuple[int, bool]


def _wake(future: asyncio.Future[bool], ready: bool) -> None:
    if not future.done():
        future.set_result(ready)


def _wake_all(futures: list[asyncio.Future[bool]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(True)


def _resolve(loop: asyncio.AbstractEventLoop, futures: list[asyncio.Future[bool]]) -> bool:
    """From any thread: resolve ``futures`` (True) on ``loop``; False when
    the loop is closed (nobody waits there any more)."""
    if not futures:
        return True
    try:
        loop.call_soon_threadsafe(_wake_all, futures)
    except RuntimeError:
        return False
    return True


def _check_timeout(timeout: Optional[float]) -> Optional[float]:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number or None, not {type(timeout).__name__}")
    if not timeout >= 0:   # also rejects NaN
        raise ValueError(f"timeout must be a non-negative number, not {timeout!r}")
    return float(timeout)


def _over(core: RingCore) -> bool:
    """True when ``core`` is shut down or closed (every wait on it ends)."""
    try:
        return core.closed or core.is_shutdown
    except ValueError:
        return True


class _Wait:
    """One coroutine's wait: for data (room None) or room on one ring."""

    __slots__ = ("owner", "core", "room", "key")

    def __init__(self, owner: AsyncRing, core: RingCore, room: Optional[int]) -> None:
        self.owner = owner
        self.core = core
        self.room = room
        self.key: _Key = (id(core), room is not None)


class _LoopWaiter:
    """The helper of one event loop: one thread that sleeps in wait_many()
    on every ring the loop's coroutines wait on, re-armed through a Poke
    when that set changes, and resolves their futures on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pid = os.getpid()
        self.cond = threading.Condition()
        self.poke = Poke()
        # Guarded by cond:
        self.waits: dict[asyncio.Future[bool], _Wait] = {}
        self.armed: Optional[dict[_Key, Optional[int]]] = None   # what the thread sleeps on
        self.thread: Optional[threading.Thread] = None
        self.stop = False   # end as soon as there is nothing to wait for
        self.gone = False   # out of the registry: the loop's next wait makes another

    # -- the loop's side (and close()'s) ---------------------------------------

    def add(self, future: asyncio.Future[bool], wait: _Wait) -> bool:
        """Register ``wait``; False when this helper is gone (ask again).

        Raises:
            ValueError: the AsyncRing is closed.
        """
        with self.cond:
            if self.gone:
                return False
            if wait.owner._closed:
                raise ValueError("operation on a closed AsyncRing")
            self.waits[future] = wait
            self.stop = False
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="ringshm-wait",
                                               daemon=True)
                self.thread.start()
            elif self.armed is None:
                self.cond.notify_all()   # idle, or about to look at the waits anyway
            elif not self._covered(wait):
                self._rearm()
        return True

    def _covered(self, wait: _Wait) -> bool:
        assert self.armed is not None
        if wait.key not in self.armed:
            return False
        armed = self.armed[wait.key]
        return armed is None or (wait.room is not None and armed <= wait.room)

    def _rearm(self) -> None:
        # Under cond: the set the thread sleeps on is stale.  Once poked, it
        # reads the waits afresh, so later changes need no poke of their own.
        self.armed = None
        self.poke.send()

    def discard(self, future: asyncio.Future[bool]) -> None:
        """Forget ``future`` (resolved, cancelled or timed out)."""
        with self.cond:
            wait = self.waits.pop(future, None)
            if wait is None or self.armed is None:
                return
            # Poke when the set shrinks: the ring's last wait, or perhaps the
            # smallest room.
            if (wait.room is not None and wait.room == self.armed.get(wait.key)) or \
                    not any(w.key == wait.key for w in self.waits.values()):
                self._rearm()

    def withdraw(self, owner: AsyncRing) -> None:
        """close(): wake the waits of ``owner`` (their next try raises
        ValueError); end the thread if that leaves it nothing to wait for."""
        with self.cond:
            taken = [f for f, w in self.waits.items() if w.owner is owner]
            for future in taken:
                del self.waits[future]
            thread = self.thread
            ending = thread is not None and not self.waits
            if ending:
                self.stop = True
                self.cond.notify_all()
            if (taken or ending) and self.armed is not None:
                self._rearm()
        _resolve(self.loop, taken)
        if not ending or thread is threading.current_thread():
            return
        assert thread is not None
        with self.cond:
            # Unless a new wait came meanwhile, the thread ends within a poke.
            self.cond.wait_for(lambda: self.thread is not thread or bool(self.waits))
            ended = self.thread is not thread
        if ended:
            thread.join()

    # -- the thread --------------------------------------------------------------

    def _plan(self) -> tuple[list[RingCore], list[Optional[int]], list[_Key]]:
        """Under cond: one entry per ring and kind, with the smallest room."""
        need: dict[_Key, _Wait] = {}
        for wait in self.waits.values():
            have = need.get(wait.key)
            if have is None or (wait.room is not None and have.room is not None
                                and wait.room < have.room):
                need[wait.key] = wait
        keys = list(need)
        return [w.core for w in need.values()], [w.room for w in need.values()], keys

    def _take(self, ready: list[int], rings: list[RingCore], rooms: list[Optional[int]],
              keys: list[_Key], failed: bool) -> list[asyncio.Future[bool]]:
        """Under cond: remove and return the futures to resolve."""
        if failed:
            # A ring was closed (by another thread): wake its waits, whose
            # next try raises; the others wait on.  Any other failure wakes
            # everyone, as a failed wait always did: their tries tell.
            dead = {id(core) for core in rings if core.closed}
            taken = [f for f, w in self.waits.items() if not dead or id(w.core) in dead]
        else:
            # A ring with room for the smallest room armed: the waits for
            # that much (the others wait on, re-armed with the next
            # smallest).  Shut down (or closed): every wait on the ring.
            fits: dict[_Key, int] = {}
            for i in ready:
                room = rooms[i]
                fits[keys[i]] = -1 if room is None or _over(rings[i]) else room
            taken = []
            for future, wait in self.waits.items():
                room = fits.get(wait.key)
                if room is not None and (room < 0 or wait.room is None or wait.room <= room):
                    taken.append(future)
        for future in taken:
            del self.waits[future]
        return taken

    def _run(self) -> None:
        idle_since: Optional[float] = None
        plan: Optional[tuple[list[RingCore], list[Optional[int]], list[_Key]]] = None
        seen = 0
        while True:
            closed = self.loop.is_closed()
            if plan is None and not closed:
                seen = self.poke.seen()   # before deciding the set
                with self.cond:
                    if self.waits:
                        idle_since = None
                        plan = self._plan()
                        self.armed = dict(zip(plan[2], plan[1]))
                    elif not self.stop:
                        now = time.monotonic()
                        if idle_since is None:
                            idle_since = now
                        if now - idle_since < IDLE_EXIT:
                            self.cond.wait(min(WAIT_SLICE, IDLE_EXIT - (now - idle_since)))
                            continue
            if plan is None or closed:
                if self._end(closed):
                    return
                plan = None
                continue
            rings, rooms, keys = plan
            failed = False
            try:
                ready = wait_many(rings, rooms, WAIT_SLICE, self.poke, seen)
            except Exception:
                ready, failed = [], True
            if not ready and not failed and self.poke.seen() == seen:
                continue   # a slice passed, nothing changed: same set, same seen
            with self.cond:
                self.armed = None
                taken = self._take(ready, rings, rooms, keys, failed)
            plan = None
            if not _resolve(self.loop, taken):
                self._end(True)
                return

    def _end(self, loop_closed: bool) -> bool:
        """End the thread unless a wait came meanwhile (the loop closed: end
        anyway, its waits are dead)."""
        with _registry_lock:
            with self.cond:
                if self.waits and not loop_closed:
                    return False
                self.waits.clear()
                self.armed = None
                self.gone = True
                self.thread = None
                if _registry.get(self.loop) is self:
                    del _registry[self.loop]
                self.cond.notify_all()
        return True


_registry_lock = threading.Lock()
_registry: dict[asyncio.AbstractEventLoop, _LoopWaiter] = {}


def _helper(loop: asyncio.AbstractEventLoop, owner: AsyncRing) -> _LoopWaiter:
    """The helper of ``loop``, noted as one ``owner`` has waited with."""
    with _registry_lock:
        waiter = _registry.get(loop)
        if waiter is None:
            waiter = _registry[loop] = _LoopWaiter(loop)
        owner._helpers.add(waiter)
        return waiter


def _after_fork_in_child() -> None:
    # The parent's helper threads do not exist here: start afresh.
    global _registry_lock, _registry
    _registry_lock = threading.Lock()
    _registry = {}


os.register_at_fork(after_in_child=_after_fork_in_child)


async def _retry(attempt: Callable[[], R], failure: type[Exception], owner: AsyncRing,
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
        self._helpers: weakref.WeakSet[_LoopWaiter] = weakref.WeakSet()

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
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        if room is not None:
            room = min(room, self._ring.max_message_size)
        wait = _Wait(self, self._ring, room)
        while True:
            helper = _helper(loop, self)
            if helper.add(future, wait):
                break
        timer = None if timeout is None else loop.call_later(timeout, _wake, future, False)
        try:
            return await future
        finally:
            # Cancelled or timed out: forget the future, nothing was taken.
            if timer is not None:
                timer.cancel()
            helper.discard(future)

    def close(self) -> None:
        """Wake the coroutines waiting on this object (they raise
        ValueError) and end each loop's helper thread that this leaves with
        nothing to wait for; the ring stays open.  Idempotent; waits started
        afterwards raise ValueError."""
        self._closed = True
        with _registry_lock:
            helpers = [h for h in self._helpers if h.pid == os.getpid()]
        for helper in helpers:
            helper.withdraw(self)

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
