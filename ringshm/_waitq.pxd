# Wait queues: where a process sleeps until another one changes something
# in the segment, and how it is woken.  A queue is a `wanted` flag and a
# futex word (_layout.h, rs_waitq); docs/DESIGN.md says why neither a sem_t
# nor a sleeper count.  cdef inline: costless on the hot path.

from libc.errno cimport EAGAIN, EINTR, ETIMEDOUT
from libc.stdint cimport uint32_t, uint64_t, int64_t

from ringshm._clock cimport now_ns, deadline_timespec
from ringshm._ring cimport (
    rs_waitq, timespec, nanosleep, rs_add32, rs_add_relaxed, rs_cpu_relax, rs_exchange,
    rs_futex_wait, rs_futex_wake, rs_load32_seq, rs_load_seq, rs_store_seq, RS_WAKE_ALL,
    PyErr_CheckSignals, RS_OK, RS_TIMEOUT, RS_CLOSED, RS_PYERR,
)

cdef enum:
    # While spinning, the clock is read once every SPIN_CLOCK_MASK + 1 looks.
    SPIN_CLOCK_MASK = 15
    # Back-off while spinning: one more PAUSE per look every 2**SHIFT looks,
    # up to MAX (the first looks come fast: a peer that answers at once is
    # seen at once; a long wait polls the shared line less).
    SPIN_BACKOFF_SHIFT = 3
    SPIN_MAX_PAUSES = 32


cdef struct Wait:
    int64_t deadline
    int64_t spin_until
    bint armed
    uint32_t futex_seen   # the queue's futex word when armed
    uint32_t spins
    int64_t check_at      # wake by then at the latest (0: a slice)


cdef inline void wait_init(Wait *w, int64_t deadline, int64_t spin_ns) noexcept nogil:
    cdef int64_t now = now_ns()
    w.deadline = deadline
    w.spin_until = 0
    if spin_ns > 0 and deadline > now:
        w.spin_until = min(now + spin_ns, deadline)
    w.spins = 0
    w.armed = False
    w.check_at = 0


cdef inline void start_wait(Wait *w, int64_t deadline, int64_t spin_ns,
                            uint64_t *waits) noexcept nogil:
    # A non-blocking call that finds no room or no message did not wait.
    if deadline != 0:
        rs_add_relaxed(waits, 1)
    wait_init(w, deadline, spin_ns)


cdef inline int wait_turn(rs_waitq *q, Wait *w, bint baton, int64_t slice_ns,
                          const bint *closing) noexcept nogil:
    """One step of a wait whose condition the caller just found false.

    Spins first; then arms the queue (sets `wanted`, notes the futex
    word) and returns so the caller re-checks its condition; then sleeps
    one slice on the futex word.  The flag is set before the re-check and
    the waker publishes before it reads the flag, both sequentially
    consistent; a wake between the re-check and the sleep has changed the
    futex word, so the sleep returns at once: no wake-up is lost.

    Returns RS_OK to re-check, RS_TIMEOUT, RS_CLOSED when *closing is set
    (the object is being closed), or RS_PYERR when a signal handler raised.
    `baton`: several may sleep here (a lock queue), so a woken sleeper
    re-arms at once, and its own release wakes the next.
    """
    cdef int64_t now, until
    cdef timespec ts
    cdef int rc
    if w.spin_until != 0:
        # Spinning: a few PAUSEs between two looks at the condition, more
        # as the wait goes on (a look pulls the peer's cache line away
        # from it), the clock now and then.
        for _ in range(1 + min(w.spins >> SPIN_BACKOFF_SHIFT, SPIN_MAX_PAUSES - 1)):
            rs_cpu_relax()
        w.spins += 1
        if (w.spins & SPIN_CLOCK_MASK) != 0 or now_ns() < w.spin_until:
            return RS_OK
        w.spin_until = 0
    if closing[0]:
        return RS_CLOSED
    now = now_ns()
    if now >= w.deadline:
        return RS_TIMEOUT
    if not w.armed:
        rs_store_seq(&q.wanted, 1)
        w.futex_seen = rs_load32_seq(&q.futex)
        w.armed = True
        return RS_OK
    until = min(w.deadline, now + slice_ns)
    if w.check_at != 0 and w.check_at < until:
        until = max(w.check_at, now)
    deadline_timespec(until, &ts)
    rc = rs_futex_wait(&q.futex, w.futex_seen, &ts)
    if rc == 0 or rc == EAGAIN:
        if baton:
            rs_store_seq(&q.wanted, 1)
            w.futex_seen = rs_load32_seq(&q.futex)
        else:
            w.armed = False
        return RS_OK
    if rc != EINTR and rc != ETIMEDOUT:
        # The kernel refused the wait: never spin hot, poll instead.
        ts.tv_sec = 0
        ts.tv_nsec = 1000000
        nanosleep(&ts, NULL)
    w.armed = False
    with gil:
        if PyErr_CheckSignals() < 0:
            return RS_PYERR
    return RS_OK


cdef inline void wake(rs_waitq *q, int count) noexcept nogil:
    """Wake up to `count` sleepers of `q` if any may sleep there.  Only a
    sleeper sets `wanted`; the waker clears it, so a sleeper that died
    costs one wake at most, and a busy ring makes no system call.  With
    several sleepers the flag says only "somebody": data and space queues
    wake them all (RS_WAKE_ALL), each re-checks and re-arms; a lock queue
    wakes one, which re-arms at once (see wait_turn's `baton`)."""
    if rs_load_seq(&q.wanted) != 0 and rs_exchange(&q.wanted, 0) != 0:
        rs_add32(&q.futex, 1)
        rs_futex_wake(&q.futex, count)


cdef inline void wake_all(rs_waitq *q) noexcept nogil:
    # Unconditionally (shutdown, close): whatever the flag says.
    rs_store_seq(&q.wanted, 0)
    rs_add32(&q.futex, 1)
    rs_futex_wake(&q.futex, RS_WAKE_ALL)
