# Timeouts as the library takes them: the Python arguments (block,
# timeout) checked and turned into an absolute CLOCK_MONOTONIC deadline in
# ns (what the library's internal entry points take), or a relative
# timeout (what its public calls take).  cdef inline: costless on the hot
# path, where timeout=None never reads the clock.

from libc.stdint cimport int64_t

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    cdef struct timespec:
        time_t tv_sec
        long tv_nsec
    int CLOCK_MONOTONIC
    int clock_gettime(int clk, timespec *ts)

cdef enum:
    NS = 1000000000

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


cdef inline int64_t relative_ns(int64_t deadline) noexcept nogil:
    # A deadline as the public calls' relative timeout: -1 (RS_FOREVER) for
    # none, 0 for one that passed.
    cdef int64_t left
    if deadline == NO_DEADLINE:
        return -1
    if deadline == 0:
        return 0
    left = deadline - now_ns()
    return left if left > 0 else 0
