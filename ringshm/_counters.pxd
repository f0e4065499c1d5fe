# Exact counters across deaths: each side writes an intent (the position it
# is about to publish and the counters that implies) before it publishes,
# so whoever takes the lock from a holder that died half-way can finish the
# counters (docs/DESIGN.md, "Exact counters across deaths").
#
# A holder may die between any two instructions, so the order of the stores
# is the protocol, and the compiler must not change it: every store is an
# atomic one, each ordered after the one before (release stores: a plain
# mov on x86, no fence, but neither gcc nor the CPU may move an earlier
# store past them).  Plain stores were reordered: gcc wrote intent.bytes
# before intent.position (tests/test_counters.py kills at each instruction).

from libc.stdint cimport uint64_t

from ringshm._ring cimport (
    rs_side, rs_load_acquire, rs_load_relaxed, rs_store_relaxed, rs_store_release, rs_store_seq,
)


cdef inline void publish(rs_side *side, uint64_t position, uint64_t messages,
                         uint64_t nbytes) noexcept nogil:
    """Publish a side's new head or tail with its counters.

    1. intent.position := the new position.  From here until step 3 the
       intent names a position not yet published, so repair() leaves the
       counters alone: they are still right.
    2. intent.messages, intent.bytes := the new totals.
    3. position := the new position (sequentially consistent: it also
       orders the read of the peer's `wanted` flag that follows, see
       wait_turn).  From here repair() copies the intent's totals.
    4. messages, bytes := the new totals.
    """
    cdef uint64_t total_messages = side.messages + messages
    cdef uint64_t total_bytes = side.bytes + nbytes
    rs_store_relaxed(&side.intent.position, position)
    rs_store_release(&side.intent.messages, total_messages)
    rs_store_release(&side.intent.bytes, total_bytes)
    rs_store_seq(&side.position, position)
    rs_store_release(&side.messages, total_messages)
    rs_store_release(&side.bytes, total_bytes)


cdef inline void repair(rs_side *side) noexcept nogil:
    """After taking a side's lock from a dead owner: finish the counters of
    a publish it made but did not count (see publish()).  Idempotent: the
    repairer may die too."""
    if rs_load_acquire(&side.position) == rs_load_acquire(&side.intent.position):
        rs_store_release(&side.messages, rs_load_relaxed(&side.intent.messages))
        rs_store_release(&side.bytes, rs_load_relaxed(&side.intent.bytes))


# A tagged put (put_many(..., tag=T); the in bridge's stream sequence) stores
# its tag with the same discipline: the tag's intent before the head, the
# tag after it, so that the tag changes exactly when the put is published,
# even if the producer dies between any two stores.  Untagged puts never
# touch these words: the hot path pays nothing.

cdef inline void intend_tag(rs_side *side, uint64_t position, uint64_t tag) noexcept nogil:
    """Before publish(): name the head the tag goes with, then the tag.  The
    position goes first: until publish() stores the head, it names a head
    not yet published, so repair_tag() ignores a half-written value."""
    rs_store_release(&side.tag.position, position)
    rs_store_release(&side.tag.value, tag)


cdef inline void settle_tag(rs_side *side, uint64_t tag) noexcept nogil:
    """After publish(): the put is published, its tag is the last one."""
    rs_store_release(&side.tag.last, tag)


cdef inline void repair_tag(rs_side *side) noexcept nogil:
    """After taking the put lock from a dead owner (following repair()): if
    it published a tagged put, finish its tag; then forget the intent, so a
    later put that happens to end at the same head (the dead one's was never
    published) cannot revive it: 1 is no head (heads are multiples of 8).
    Idempotent, like repair()."""
    if rs_load_acquire(&side.position) == rs_load_acquire(&side.tag.position):
        rs_store_release(&side.tag.last, rs_load_relaxed(&side.tag.value))
    rs_store_release(&side.tag.position, 1)
