"""ringshm.wait: wait on many rings, queues and subscriptions at once.

As multiprocessing.connection.wait: the objects that have something to take
(or are shut down), in the order given; [] on timeout.  One system call
sleeps on all of them (futex_waitv, Linux 5.16; more than 128 objects are
split among helper threads; without futex_waitv a documented fallback
polls every 2 ms, see docs/DESIGN.md, "Waiting on many").  The wait takes
nothing and holds no lock: a get_nowait() after it may still find a ring
empty, when another consumer was faster.
"""

from __future__ import annotations

import threading
from typing import Any, Iterable, List, Optional, TypeVar

from ringshm._ring import RingCore, SubscriptionCore, wait_many

__all__ = ["wait"]

W = TypeVar("W")


def _core(obj: Any) -> RingCore | SubscriptionCore:
    """The ring under a Ring or a queue of the Queue family; the
    subscription under a Subscription or an ObjectSubscription."""
    if isinstance(obj, (RingCore, SubscriptionCore)):
        return obj
    for attribute in ("_ring", "subscription"):
        core = getattr(obj, attribute, None)
        if isinstance(core, (RingCore, SubscriptionCore)):
            return core
    raise TypeError(f"wait() takes Ring, Queue and Subscription objects, "
                    f"not {type(obj).__name__}")


def wait(objects: Iterable[W], timeout: Optional[float] = None) -> List[W]:
    """Block until at least one of `objects` (Ring, Queue, JoinableQueue,
    SimpleQueue, Subscription, ObjectSubscription, mixed) holds a message
    or is shut down (and drained: its next get raises ShutDown), and return
    those that do (in the order given); [] when `timeout` seconds pass
    first.  A subscription is ready when its subscriber has a message to
    take or a Lagged to report (its next get does not wait), or its topic
    is shut down and it has taken everything.  Takes nothing.

    Raises:
        TypeError: an object that is not a ring, a queue or a subscription,
            or a bad timeout.
        ValueError: an object is closed (before or during the wait), or a
            negative timeout.
        RuntimeError: a forked child's copy of a subscription.
        KeyboardInterrupt (or what a signal handler raises) during the wait.
    """
    given = list(objects)
    cores = [_core(obj) for obj in given]
    if not cores:
        # Nothing can become ready: sleep out the timeout (interruptibly).
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                raise TypeError(f"timeout must be a number or None, not {type(timeout).__name__}")
            if not timeout >= 0:
                raise ValueError(f"timeout must be a non-negative number, not {timeout!r}")
        threading.Event().wait(timeout)
        return []
    ready = wait_many(cores, [None] * len(cores), timeout)
    return [given[i] for i in ready]
