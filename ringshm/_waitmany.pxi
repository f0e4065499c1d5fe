# Waiting on many rings and subscriptions at once (rs_wait,
# libringshm/src/waitmany.c): wait_many() for ringshm.wait and
# ringshm.asyncio's helper thread, and the Poke that ends a wait when the set
# changes.  Included into _ring.pyx after _topic.pxi (it needs RingCore's and
# SubscriptionCore's handles).

cdef class Poke:
    """A word another thread bumps to end a wait_many() early (the set of
    rings it waits on changed): see rs_poke in ringshm.h."""
    cdef rs_poke poke

    def __cinit__(self):
        rs_poke_init(&self.poke)

    def seen(self):
        """The count to pass to wait_many(): read it before deciding the set."""
        return rs_poke_seen(&self.poke)

    def send(self):
        """End a wait_many() given this Poke (from any thread)."""
        rs_poke_send(&self.poke)


def wait_many(list rings, list rooms, timeout=None, Poke poke=None, seen=0):
    """Sleep (GIL released, no lock held, one futex_waitv) until one of
    `rings` can be taken from (its `rooms` entry None) or has room for that
    many payload bytes, or is shut down; returns the indices of those ready,
    [] on timeout or when `poke` was sent after `seen` was read.  Takes
    nothing.  An entry is a RingCore or a SubscriptionCore (room None): a
    subscription is ready when its subscriber has a message to take (or a
    Lagged to report), or its topic is shut down and it has taken
    everything.

    Raises:
        ValueError: a ring or subscription is closed (before or during the
            wait), or a bad timeout.  MessageTooLarge: a room that never
            comes.  TypeError: an entry of another type, or a room for a
            subscription.  RuntimeError: a forked copy of a subscription.
        KeyboardInterrupt (or what a signal handler raises).
    """
    cdef Py_ssize_t count = len(rings), i, entered = 0
    cdef rs_waiter *items
    cdef int64_t wait_ns = relative_ns(deadline_from(True, timeout))
    cdef rs_poke *p = NULL if poke is None else &poke.poke
    cdef uint32_t poke_seen = seen
    cdef object entry
    cdef int rc
    if len(rooms) != count:
        raise ValueError("rings and rooms differ in length")
    for i in range(count):
        entry = rings[i]
        if isinstance(entry, SubscriptionCore):
            if rooms[i] is not None:
                raise TypeError("a subscription is waited on for data only (room None)")
        elif isinstance(entry, RingCore):
            (<RingCore>entry)._check_open()
        else:
            raise TypeError(f"wait_many() takes RingCore and SubscriptionCore objects, "
                            f"not {type(entry).__name__}")
    items = <rs_waiter *>malloc(count * sizeof(rs_waiter) + 1)
    if items == NULL:
        raise MemoryError()
    try:
        for i in range(count):
            items[i].ready = 0
            items[i].sub = NULL
            if rooms[i] is None:
                items[i].events = RS_WAIT_DATA
                items[i].room = 0
            else:
                items[i].events = RS_WAIT_ROOM
                items[i].room = check_nonnegative_int(rooms[i], "room")
        try:
            # Entered, each handle stays (a close in another thread ends the
            # wait with RS_CLOSED instead of freeing it under us).
            for i in range(count):
                entry = rings[i]
                if isinstance(entry, SubscriptionCore):
                    (<SubscriptionCore>entry)._enter()
                    items[i].ring = NULL
                    items[i].sub = (<SubscriptionCore>entry).sub
                else:
                    (<RingCore>entry)._enter()
                    items[i].ring = (<RingCore>entry).ring
                entered += 1
            with nogil:
                rc = rs_wait(items, count, p, poke_seen, wait_ns)
        finally:
            for i in range(entered):
                entry = rings[i]
                if isinstance(entry, SubscriptionCore):
                    (<SubscriptionCore>entry)._leave()
                else:
                    (<RingCore>entry)._leave()
        if rc == RS_EMPTY or rc == RS_POKED:
            return []
        if rc < 0:
            if rc == RS_CLOSED:
                raise ValueError("a ring or subscription was closed while waiting")
            for i in range(count):
                if isinstance(rings[i], SubscriptionCore):
                    return (<SubscriptionCore>rings[i])._raise(rc, 0)
            return (<RingCore>rings[0])._raise(rc, False) if count else None
        return [i for i in range(count) if items[i].ready != 0]
    finally:
        free(items)


def wait_uses_futex_waitv():
    """True when wait_many() sleeps in futex_waitv; False when it polls."""
    return rs_wait_uses_futex_waitv() != 0
