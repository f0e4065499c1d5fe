# Exact counters across deaths: each side writes an intent (the position it
# is about to publish and the counters that implies) before it publishes,
# so whoever takes the lock from a holder that died half-way can finish the
# counters (docs/DESIGN.md, "Exact counters across deaths").

from libc.stdint cimport uint64_t

from ringshm._ring cimport rs_side, rs_load_relaxed, rs_store_relaxed, rs_store_seq


cdef inline void publish(rs_side *side, uint64_t position, uint64_t messages,
                         uint64_t nbytes) noexcept nogil:
    """Publish a side's new head or tail.  The intent is written first, so
    that whoever takes the lock from a holder that died here can finish the
    counters: position == intent.position means it was published."""
    cdef uint64_t total_messages = side.messages + messages
    cdef uint64_t total_bytes = side.bytes + nbytes
    side.intent.position = position
    side.intent.messages = total_messages
    side.intent.bytes = total_bytes
    # Sequentially consistent: it also orders the read of the peer's
    # `wanted` flag that follows (see wait_turn).
    rs_store_seq(&side.position, position)
    rs_store_relaxed(&side.messages, total_messages)
    rs_store_relaxed(&side.bytes, total_bytes)


cdef inline void repair(rs_side *side) noexcept nogil:
    """After taking a side's lock from a dead owner: finish the counters of
    a publish it made but did not count (see publish())."""
    if rs_load_relaxed(&side.position) == side.intent.position:
        rs_store_relaxed(&side.messages, side.intent.messages)
        rs_store_relaxed(&side.bytes, side.intent.bytes)
