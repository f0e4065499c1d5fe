"""The helper thread of each event loop for ringshm.asyncio (see its
docstring): one thread per loop sleeps, in one ``wait_many()`` call, on
every ring (and topic subscription) that loop's coroutines wait on, and
resolves their futures on the loop.

``wait_on(owner, core, room, timeout)`` is a coroutine's wait; ``owner`` is
the async object waiting (its ``_closed`` and ``_helpers``, see Owner),
``core`` what wait_many() sleeps on: a RingCore (data, or ``room`` bytes of
room) or a SubscriptionCore (data only).  ``withdraw(owner)`` is close().
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from typing import Optional, Protocol, Union

from ringshm._ring import Poke, RingCore, SubscriptionCore, wait_many

__all__ = ["IDLE_EXIT", "WAIT_SLICE", "LoopWaiter", "Owner", "wait_on", "withdraw"]

#: The longest a loop's helper thread sleeps in one wait before it looks
#: whether its loop was closed.
WAIT_SLICE = 0.25
#: A helper thread with nothing to wait for ends after this many seconds.
IDLE_EXIT = 1.0
#: What wait_many() sleeps on for a wait.
Core = Union[RingCore, SubscriptionCore]
#: What the helper sleeps on for a wait: (id of the core, True for room).
_Key = tuple[int, bool]


class Owner(Protocol):
    """An async object whose coroutines wait through a loop's helper."""

    _closed: bool
    _helpers: weakref.WeakSet[_LoopWaiter]


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


def _over(core: Core) -> bool:
    """True when ``core`` is shut down or closed (every wait on it ends)."""
    try:
        return core.closed or (isinstance(core, RingCore) and core.is_shutdown)
    except ValueError:
        return True


class _Wait:
    """One coroutine's wait: for data (room None) or room on one ring."""

    __slots__ = ("owner", "core", "room", "key")

    def __init__(self, owner: Owner, core: Core, room: Optional[int]) -> None:
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
                raise ValueError(f"operation on a closed {type(wait.owner).__name__}")
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

    def withdraw(self, owner: Owner) -> None:
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

    def _plan(self) -> tuple[list[Core], list[Optional[int]], list[_Key]]:
        """Under cond: one entry per ring and kind, with the smallest room."""
        need: dict[_Key, _Wait] = {}
        for wait in self.waits.values():
            have = need.get(wait.key)
            if have is None or (wait.room is not None and have.room is not None
                                and wait.room < have.room):
                need[wait.key] = wait
        keys = list(need)
        return [w.core for w in need.values()], [w.room for w in need.values()], keys

    def _take(self, ready: list[int], rings: list[Core], rooms: list[Optional[int]],
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
        plan: Optional[tuple[list[Core], list[Optional[int]], list[_Key]]] = None
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


def _helper(loop: asyncio.AbstractEventLoop, owner: Owner) -> _LoopWaiter:
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


async def wait_on(owner: Owner, core: Core, room: Optional[int],
                  timeout: Optional[float]) -> bool:
    """Until ``core`` may hold a message (``room`` None) or room for
    ``room`` bytes (True), or ``timeout`` expired (False).  Takes nothing.

    Raises:
        ValueError: ``owner`` is closed.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[bool] = loop.create_future()
    wait = _Wait(owner, core, room)
    while True:
        helper = _helper(loop, owner)
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


def withdraw(owner: Owner) -> None:
    """``owner``'s close(): wake its waits (their next try raises
    ValueError) in every loop of this process it waited in; end each
    helper that this leaves with nothing to wait for."""
    with _registry_lock:
        helpers = [h for h in owner._helpers if h.pid == os.getpid()]
    for helper in helpers:
        helper.withdraw(owner)


#: The helper's type, for the owners' ``_helpers`` annotations.
LoopWaiter = _LoopWaiter
