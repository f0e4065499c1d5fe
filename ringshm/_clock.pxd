# The clock and deadlines of the core: every wait measures time here, on
# CLOCK_MONOTONIC (the wall clock may jump).  cdef inline: costless on the
# hot path.

from libc.stdint cimport int64_t

from ringshm._ring cimport timespec, clock_gettime, CLOCK_MONOTONIC

cdef enum:
    NS = 1000000000
    # Even a non-blocking call waits this long for a lock (see lock_deadline).
    LOCK_PATIENCE_NS = 1000000

cdef extern from "<stdint.h>" nogil:
    int64_t NO_DEADLINE "INT64_MAX"


cdef inline int64_t now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * NS + ts.tv_nsec


cdef inline int64_t deadline_from(object block, object timeout) except? -2:
    """The monotonic deadline in ns: 0 for non-blocking (already passed),
    NO_DEADLINE for no timeout.

    Raises:
        TypeError: timeout is not a number.  ValueError: it is negative or NaN.
    """
    cdef double t
    if not block:
        return 0
    if timeout is None:
        return NO_DEADLINE
    try:
        t = timeout
    except TypeError:
        raise TypeError(f"timeout must be a number or None, not {type(timeout).__name__}") from None
    if not (t >= 0):   # also rejects NaN
        raise ValueError(f"timeout must be a non-negative number, not {timeout!r}")
    if t > 1e9:
        return NO_DEADLINE
    return now_ns() + <int64_t>(t * 1e9)


cdef inline int64_t fast_deadline(object block, object timeout) except? -2:
    # put()/get() with the defaults, without deadline_from's checks.
    if timeout is None and block is True:
        return NO_DEADLINE
    return deadline_from(block, timeout)


cdef inline int64_t lock_deadline(int64_t deadline) noexcept nogil:
    # Even a non-blocking call waits a moment for a lock: it is held for the
    # length of a copy, and failing then would report Full/Empty wrongly.
    cdef int64_t soon = now_ns() + LOCK_PATIENCE_NS
    return deadline if deadline > soon else soon


cdef inline void deadline_timespec(int64_t until, timespec *ts) noexcept nogil:
    ts.tv_sec = until // NS
    ts.tv_nsec = until % NS
