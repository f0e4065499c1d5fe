/* Exact counters across deaths: each side writes an intent (the position it
 * is about to publish and the counters that implies) before it publishes,
 * so whoever takes the lock from a holder that died half-way can finish the
 * counters (docs/DESIGN.md, "Exact counters across deaths").
 *
 * A holder may die between any two instructions, so the order of the stores
 * is the protocol, and the compiler must not change it: every store is an
 * atomic one, each ordered after the one before (release stores: a plain
 * mov on x86, no fence, but neither the compiler nor the CPU may move an
 * earlier store past them). */
#ifndef RINGSHM_COUNTERS_H
#define RINGSHM_COUNTERS_H

#include "atomic.h"
#include "layout.h"

/* Publish a side's new head or tail with its counters.
 * 1. intent.position := the new position.  Until step 3 the intent names a
 *    position not yet published, so repair leaves the counters alone.
 * 2. intent.messages, intent.bytes := the new totals.
 * 3. position := the new position (sequentially consistent: it also orders
 *    the read of the peer's `wanted` flag that follows, see waits.c).  From
 *    here repair copies the intent's totals.
 * 4. messages, bytes := the new totals. */
static inline void rs__publish(rs_side *side, uint64_t position, uint64_t messages,
                               uint64_t nbytes) {
    uint64_t total_messages = rs_load_relaxed(&side->messages) + messages;
    uint64_t total_bytes = rs_load_relaxed(&side->bytes) + nbytes;
    rs_store_relaxed(&side->intent.position, position);
    rs_store_release(&side->intent.messages, total_messages);
    rs_store_release(&side->intent.bytes, total_bytes);
    rs_store_seq(&side->position, position);
    rs_store_release(&side->messages, total_messages);
    rs_store_release(&side->bytes, total_bytes);
}

/* After taking a side's lock from a dead owner: finish the counters of a
 * publish it made but did not count.  Idempotent: the repairer may die too. */
static inline void rs__repair(rs_side *side) {
    if (rs_load_acquire(&side->position) == rs_load_acquire(&side->intent.position)) {
        rs_store_release(&side->messages, rs_load_relaxed(&side->intent.messages));
        rs_store_release(&side->bytes, rs_load_relaxed(&side->intent.bytes));
    }
}

/* A tagged put (the in bridge's stream sequence) stores its tag with the
 * same discipline: the tag's intent before the head, the tag after it, so
 * the tag changes exactly when the put is published.  Untagged puts never
 * touch these words. */
static inline void rs__intend_tag(rs_side *side, uint64_t position, uint64_t tag) {
    rs_store_release(&side->tag.position, position);
    rs_store_release(&side->tag.value, tag);
}

static inline void rs__settle_tag(rs_side *side, uint64_t tag) {
    rs_store_release(&side->tag.last, tag);
}

/* After taking the put lock from a dead owner (following rs__repair): if it
 * published a tagged put, finish its tag; then forget the intent, so a later
 * put that ends at the same head cannot revive it (1 is no head: heads are
 * multiples of 8).  Idempotent. */
static inline void rs__repair_tag(rs_side *side) {
    if (rs_load_acquire(&side->position) == rs_load_acquire(&side->tag.position))
        rs_store_release(&side->tag.last, rs_load_relaxed(&side->tag.value));
    rs_store_release(&side->tag.position, 1);
}

#endif
