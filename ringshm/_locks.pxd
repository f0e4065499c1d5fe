# The put and get locks: a 64-bit word holding the owner's token, taken by
# one compare-and-swap.  Waiting for a lock, and taking over a dead owner's,
# is RingCore._lock_slow (it needs the liveness check, _liveness.h).

from libc.stdint cimport uint64_t

from ringshm._ring cimport rs_lock, rs_cas, rs_exchange
from ringshm._waitq cimport wake


cdef inline bint try_lock(rs_lock *lk, uint64_t token) noexcept nogil:
    return rs_cas(&lk.owner, 0, token)


cdef inline void unlock(rs_lock *lk) noexcept nogil:
    # An exchange, not a store: it orders the release before the read of
    # `wanted` (a release store would let that read pass it).
    rs_exchange(&lk.owner, 0)
    wake(&lk.waitq, 1)
