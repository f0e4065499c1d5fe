# Waiting on many rings at once (rs_wait, libringshm/src/waitmany.c):
# wait_many() for ringshm.wait and ringshm.asyncio's helper thread, and the
# Poke that ends a wait when the set of rings changes.  Included into
# _ring.pyx (it needs RingCore's handle).

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
    `rings` (RingCore objects) can be taken from (its `rooms` entry None) or
    has room for that many payload bytes, or is shut down; returns the
    indices of those ready, [] on timeout or when `poke` was sent after
    `seen` was read.  Takes nothing.

    Raises:
        ValueError: a ring is closed (before or during the wait), or a bad
            timeout.  MessageTooLarge: a room that never comes.
        KeyboardInterrupt (or what a signal handler raises).
    """
    cdef Py_ssize_t count = len(rings), i
    cdef rs_waiter *items
    cdef int64_t wait_ns = relative_ns(deadline_from(True, timeout))
    cdef rs_poke *p = NULL if poke is None else &poke.poke
    cdef uint32_t poke_seen = seen
    cdef RingCore ring
    cdef int rc
    if len(rooms) != count:
        raise ValueError("rings and rooms differ in length")
    items = <rs_waiter *>malloc(count * sizeof(rs_waiter) + 1)
    if items == NULL:
        raise MemoryError()
    try:
        for i in range(count):
            ring = rings[i]
            ring._check_open()
            items[i].ring = ring.ring
            items[i].ready = 0
            if rooms[i] is None:
                items[i].events = RS_WAIT_DATA
                items[i].room = 0
            else:
                items[i].events = RS_WAIT_ROOM
                items[i].room = check_nonnegative_int(rooms[i], "room")
        for i in range(count):
            (<RingCore>rings[i])._enter()
        try:
            with nogil:
                rc = rs_wait(items, count, p, poke_seen, wait_ns)
        finally:
            for i in range(count):
                (<RingCore>rings[i])._leave()
        if rc == RS_EMPTY or rc == RS_POKED:
            return []
        if rc < 0:
            if rc == RS_CLOSED:
                raise ValueError("a ring was closed while waiting")
            return (<RingCore>rings[0])._raise(rc, False) if count else None
        return [i for i in range(count) if items[i].ready != 0]
    finally:
        free(items)


def wait_uses_futex_waitv():
    """True when wait_many() sleeps in futex_waitv; False when it polls."""
    return rs_wait_uses_futex_waitv() != 0
