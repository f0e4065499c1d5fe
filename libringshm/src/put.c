/* The put side: how a producer finds room at the head, lays records out,
 * and publishes them.  Under the put lock the ring is single-producer: the
 * holder writes its records, then publishes the head (counters.h) and wakes
 * consumers that sleep for data.  A producer that finds no room lets the
 * lock go and sleeps (waits.c) until a consumer frees some: a waiter holds
 * no lock.  A message (or batch) is at most half the ring, so with its
 * padding it fits an empty ring wherever the head stands: no wait depends
 * on anything but consumers taking messages. */
#define _GNU_SOURCE
#include <stdint.h>
#include <string.h>

#include "counters.h"
#include "internal.h"
#include "records.h"

/* A batch of at least this many bytes starts at the next lap's start when
 * the consumers have already freed room there for EARLY_WRAP_ROOM batches
 * of its size (see early_wrap). */
#define EARLY_WRAP_MIN_BYTES (32u * 1024u)
#define EARLY_WRAP_ROOM 3u
#define NO_WRAP SIZE_MAX

/* A claim on room (layout.h, rs_claim) holds this many slices
 * (recovery_interval) after its claimant last renewed it: the claimant
 * renews it at every wake-up of its wait, which comes within a slice. */
#define CLAIM_SLICES 2
/* ... and this long after the claimant's call gave up (Full): time for the
 * same put to be tried again (a loop of put(timeout=...)) and keep its
 * place, too short to hold up the others much if it is not. */
#define CLAIM_GRACE_NS 2000000

/* One put's working state: where its batch goes, what the consumers had
 * done when it last found no room, and its claim on room. */
typedef struct {
    uint64_t start;       /* the head where the batch starts */
    size_t wrap_index;    /* the record preceded by padding to the end, NO_WRAP: none */
    uint64_t wrap_pad;
    uint64_t seen_tail;
    uint64_t seen_got;
    uint64_t seen_claim;  /* the claim's ticket when it last found no room */
} put_plan;

static inline uint64_t tail_hint(rs_ring *r) {
    return rs_load_acquire(&r->cached_tail);
}

static inline uint64_t refresh_tail(rs_ring *r) {
    uint64_t tail = rs_load_acquire(&r->hdr->consumer.position);
    rs_store_release(&r->cached_tail, tail);
    return tail;
}

/* Would `need` bytes (and `messages` messages) fit between `head` and
 * `tail`?  Positions further apart than the capacity never have room: a
 * damaged header must not let a producer write over committed records. */
static inline int has_room(rs_ring *r, uint64_t head, uint64_t tail, uint64_t need,
                           uint64_t messages) {
    uint64_t used = head - tail;
    if (used > r->capacity || need > r->capacity - used)
        return 0;
    if (r->max_messages != 0)
        return rs_load_relaxed(&r->hdr->producer.messages) + messages
                   - rs_load_acquire(&r->hdr->consumer.messages) <= r->max_messages;
    return 1;
}

/* ---- claims: the producer waiting longest for room is next in line ------- */

static inline rs_claim *claim_of(rs_ring *r) {
    return &r->hdr->producer.claim;
}

/* A claim that no longer holds: expired (its claimant put, died or gave
 * up without renewing it), or impossible (damage: a need no batch has, an
 * expiry further than a claimant ever sets). */
static int claim_void(rs_ring *r, int64_t now) {
    rs_claim *c = claim_of(r);
    uint64_t need = rs_load_relaxed(&c->need);
    int64_t until = (int64_t)rs_load_relaxed(&c->until);
    return until <= now || until - now > CLAIM_SLICES * r->slice_ns || need == 0
           || need > r->capacity / 2
           || (r->max_messages != 0 && rs_load_relaxed(&c->messages) > r->max_messages);
}

/* Another producer's claim `ticket` is there: would a put that leaves the
 * head at `end` keep its claimant from fitting?  Its batch is taken as one
 * record (the most padding it can need at the new head).  With the put lock
 * held (`locked`), a void claim is cleared. */
static __attribute__((cold, noinline)) int claim_blocks_slow(rs_ring *r, uint64_t end, uint64_t messages,
                                      uint64_t ticket, int locked) {
    rs_claim *c = claim_of(r);
    uint64_t tail, used, need, pos;
    if (claim_void(r, rs__now())) {
        if (locked)
            rs_cas(&c->ticket, ticket, 0);
        return 0;
    }
    tail = rs_load_acquire(&r->hdr->consumer.position);
    used = end - tail;
    need = rs_load_relaxed(&c->need);
    pos = end & r->mask;
    if (pos + need > r->capacity)
        need += r->capacity - pos;
    if (used > r->capacity || need > r->capacity - used)
        return 1;
    return r->max_messages != 0
           && rs_load_relaxed(&r->hdr->producer.messages) + messages
                  + rs_load_relaxed(&c->messages) - rs_load_acquire(&r->hdr->consumer.messages)
              > r->max_messages;
}

/* Was the claim there taken by this process?  A claim orders processes:
 * it never holds up its own process (a thread that gave up, a retried
 * put that now takes another size). */
static inline int claim_by_us(rs_ring *r) {
    return rs_load_relaxed(&claim_of(r)->owner)
           == __atomic_load_n(&r->presence->token, __ATOMIC_RELAXED);
}

/* ... and for this batch: the put that took it, or the same put retried
 * after a timeout (by what it claims, so that it keeps its place). */
static int claim_is_ours(rs_ring *r, uint64_t span, uint64_t messages) {
    rs_claim *c = claim_of(r);
    return claim_by_us(r) && rs_load_relaxed(&c->need) == span
           && rs_load_relaxed(&c->messages) == messages;
}

/* claim_blocks when there is a claim (four arguments: the hot path keeps
 * no more registers alive for it). */
static __attribute__((cold, noinline)) int claim_held(rs_ring *r, uint64_t end, uint64_t span,
                                                      uint64_t messages) {
    uint64_t ticket = rs_load_relaxed(&claim_of(r)->ticket);
    if (ticket == 0)
        return 0;
    if (claim_is_ours(r, span, messages)) {
        rs_cas(&claim_of(r)->ticket, ticket, 0);   /* served */
        return 0;
    }
    if (claim_by_us(r))
        return 0;
    return claim_blocks_slow(r, end, messages, ticket, 1);
}

/* With the put lock held, room found for a batch of `messages` (`span`
 * bytes of records) that ends at `end`: 1 when another process's claim
 * keeps it out.  The claimant's own batch goes, and its claim with it.
 * One load on the hot path: the claim sits on the producer side's block,
 * which only producers holding the put lock touch. */
RS__HOT int claim_blocks(rs_ring *r, uint64_t end, uint64_t span, uint64_t messages) {
    if (__builtin_expect(rs_load_relaxed(&claim_of(r)->ticket) == 0, 1))
        return 0;
    return claim_held(r, end, span, messages);
}

/* With the put lock held and no room: take the claim when there is none (or
 * a void one), or renew our own. */
static void claim_room(rs_ring *r, uint64_t span, size_t count) {
    rs_claim *c = claim_of(r);
    uint64_t ticket = rs_load_relaxed(&c->ticket);
    int64_t now = rs__now();
    uint64_t until = (uint64_t)(now + CLAIM_SLICES * r->slice_ns);
    if (ticket != 0 && !claim_void(r, now)) {
        if (claim_is_ours(r, span, count))
            rs_store_relaxed(&c->until, until);
        return;   /* ours, renewed; or another put is next in line */
    }
    /* A ticket that differs from the last one, so that waiters who saw that
     * one look again. */
    ticket = (uint64_t)now > ticket ? (uint64_t)now : ticket + 1;
    rs_store_relaxed(&c->owner, rs_load_relaxed(&r->hdr->put_lock.owner));
    rs_store_relaxed(&c->need, span);
    rs_store_relaxed(&c->messages, count);
    rs_store_relaxed(&c->until, until);
    rs_store_release(&c->ticket, ticket);
}

/* Without the lock: keep our claim alive while we wait (`leaving`: 0), or
 * cut it to CLAIM_GRACE_NS when the call gives up.  Only `until` is
 * written: at worst it lands on a claim that replaced ours a moment ago,
 * which its claimant renews within a slice. */
static void claim_renew(rs_ring *r, uint64_t span, size_t count, int leaving) {
    rs_claim *c = claim_of(r);
    int64_t now, until;
    if (rs_load_relaxed(&c->ticket) == 0 || !claim_is_ours(r, span, count))
        return;
    now = rs__now();
    until = now + (leaving ? CLAIM_GRACE_NS : CLAIM_SLICES * r->slice_ns);
    if (!leaving || until < (int64_t)rs_load_relaxed(&c->until))
        rs_store_relaxed(&c->until, (uint64_t)until);
}

/* Bytes from `head` to the end of the batch laid out there: records one
 * after another, each contiguous; the first record that would cross the end
 * of the data area is preceded by a PADDING record filling the lap.  Only
 * one wrap is possible: a batch is at most half the ring. */
static uint64_t lay_out(rs_ring *r, uint64_t head, const struct iovec *msgs, size_t count,
                        put_plan *plan) {
    uint64_t pos = head & r->mask, total = 0, span;
    size_t i;
    plan->wrap_index = NO_WRAP;
    for (i = 0; i < count; i++) {
        span = rs__record_span(msgs[i].iov_len);
        if (plan->wrap_index == NO_WRAP && pos + span > r->capacity) {
            plan->wrap_index = i;
            plan->wrap_pad = r->capacity - pos;
            total += plan->wrap_pad;
            pos = 0;
        }
        pos += span;
        total += span;
    }
    return total;
}

/* A big batch goes to the start of the next lap, after padding to the end,
 * when the consumers have freed room there for it and two more of its size:
 * the working set is then about what is in flight, not the whole capacity
 * (docs/DESIGN.md, "Early wraps").  Room for the batch alone is not enough:
 * the padding holds the rest of the lap until the consumer passes it. */
static inline int early_wrap(rs_ring *r, uint64_t head, uint64_t total_span, size_t count,
                             put_plan *plan) {
    uint64_t pos = head & r->mask, pad = r->capacity - pos, tail;
    /* Small batches never wrap early (the look at the tail would put the
     * consumers' line into every put); the room at the lap's start cannot
     * be free before the head is that far into the lap; the padding's
     * length field is 32 bits. */
    if (total_span < EARLY_WRAP_MIN_BYTES || pos < EARLY_WRAP_ROOM * total_span
            || (head & 7) != 0 || pad - RS_RECORD_HEADER > RS_MAX_PAYLOAD)
        return 0;
    tail = refresh_tail(r);
    if (!has_room(r, head, tail, pad + EARLY_WRAP_ROOM * total_span, count))
        return 0;   /* no room there yet (or damage, which find_room reports) */
    plan->start = head;
    plan->wrap_index = 0;
    plan->wrap_pad = pad;
    return 1;
}

/* The fast path: no wrap, room by the cached tail (refreshed once). */
RS__HOT int room_fast(rs_ring *r, size_t count, uint64_t total_span, put_plan *plan) {
    uint64_t head = rs_load_relaxed(&r->hdr->producer.position);
    uint64_t tail;
    if (early_wrap(r, head, total_span, count, plan))
        return !claim_blocks(r, head + plan->wrap_pad + total_span, total_span, count);
    if ((head & r->mask) + total_span <= r->capacity && (head & 7) == 0) {
        tail = tail_hint(r);
        if (!has_room(r, head, tail, total_span, count))
            tail = refresh_tail(r);
        if (has_room(r, head, tail, total_span, count)) {
            plan->start = head;
            plan->wrap_index = NO_WRAP;
            return !claim_blocks(r, head + total_span, total_span, count);
        }
    }
    return 0;
}

/* With the put lock held: lay the batch out at the head and check that it
 * fits now, and that no other producer's claim keeps it out.  RS__TIMEOUT
 * when it does not (the caller lets the lock go before it waits);
 * RS_CORRUPTED for impossible positions. */
static int find_room(rs_ring *r, const struct iovec *msgs, size_t count, uint64_t total_span,
                     put_plan *plan) {
    uint64_t head = rs_load_relaxed(&r->hdr->producer.position);
    uint64_t need, tail;
    if ((head & 7) != 0)
        return rs__fail(RS_CORRUPTED, "head is not 8-byte aligned");
    need = lay_out(r, head, msgs, count, plan);
    tail = refresh_tail(r);
    if (head - tail > r->capacity)
        return rs__fail(RS_CORRUPTED, "head and tail are further apart than the capacity "
                        "(head %llu, tail %llu)", (unsigned long long)head,
                        (unsigned long long)tail);
    if (!has_room(r, head, tail, need, count)
            || claim_blocks(r, head + need, total_span, count))
        return RS__TIMEOUT;
    plan->start = head;
    return 0;
}

/* With the put lock held: has the head gone back below one this handle
 * published (or found at attach)?  Heads only grow.  The room checks
 * cannot tell on their own: the cached tail is older than the real one, so
 * by it a head moved back behind the real tail looks like a head with
 * room, and the records after the tail would be written over. */
static int head_went_back(rs_ring *r) {
    uint64_t head = rs_load_relaxed(&r->hdr->producer.position);
    uint64_t seen = rs_load_relaxed(&r->put_seen);
    if ((int64_t)(head - seen) >= 0)
        return 0;
    return rs__fail(RS_CORRUPTED, "the head went back from %llu to %llu",
                    (unsigned long long)seen, (unsigned long long)head);
}

/* Consumers took something since we looked under the lock, and what is free
 * now could hold the batch's records (padding aside: the check under the
 * lock is exact).  The second half keeps waiting producers off the lock
 * when another one has already taken the room freed.  Also worth a look:
 * the claim changed (its claimant put, or the place is free to take), or
 * another producer's claim has expired. */
static int consumers_moved(rs_ring *r, uint64_t span, const put_plan *plan) {
    uint64_t tail = rs_load_seq(&r->hdr->consumer.position);
    uint64_t used, ticket = rs_load_relaxed(&claim_of(r)->ticket);
    if (rs__shut_down(r) || ticket != plan->seen_claim)
        return 1;
    if (ticket != 0 && (int64_t)rs_load_relaxed(&claim_of(r)->until) <= rs__now())
        return 1;
    if (tail == plan->seen_tail && rs_load_seq(&r->hdr->consumer.messages) == plan->seen_got)
        return 0;
    used = rs_load_acquire(&r->hdr->producer.position) - tail;
    return used > r->capacity || used + span <= r->capacity;   /* damage: look */
}

static inline void note_consumers(rs_ring *r, uint64_t tail, put_plan *plan) {
    plan->seen_tail = tail;
    plan->seen_got = rs_load_acquire(&r->hdr->consumer.messages);
    plan->seen_claim = rs_load_relaxed(&claim_of(r)->ticket);
}

/* The batch's records cannot fit (padding aside) by the tail as it is now:
 * worth waiting before taking the lock.  Never once shut down (the locked
 * path reports it) nor for damage. */
static int looks_full(rs_ring *r, size_t count, uint64_t total_span, put_plan *plan) {
    uint64_t head = rs_load_acquire(&r->hdr->producer.position);
    uint64_t tail = tail_hint(r);
    if (has_room(r, head, tail, total_span, count) || rs__shut_down(r))
        return 0;
    tail = refresh_tail(r);
    if (head - tail > r->capacity || has_room(r, head, tail, total_span, count))
        return 0;
    note_consumers(r, tail, plan);
    return 1;
}

static int wait_consumers(rs_ring *r, uint64_t span, size_t count, rs_wait_state *w,
                          int *waited, int64_t deadline, const put_plan *plan) {
    int rc;
    if (!*waited) {
        *waited = 1;
        /* No spin when another producer already sleeps for room: the ring
         * has been full longer than a spin, and with many producers on few
         * cores the spinning took the consumers' CPU (issue item 3). */
        rs__wait_start(w, deadline, rs_load_relaxed(&r->hdr->space_waitq.wanted) ? 0 : r->spin_ns,
                       &r->hdr->producer.waits);
    }
    while (!consumers_moved(r, span, plan)) {
        rc = rs__wait_turn(r, &r->hdr->space_waitq, w, 0);
        if (rc != 0)
            return rc;
        claim_renew(r, span, count, 0);
    }
    return 0;
}

static inline int put_failed(rs_ring *r, int rc) {
    if (rc == RS__TIMEOUT) {
        rs_add_relaxed(&r->hdr->producer.timeouts, 1);
        return RS_FULL;
    }
    return rc;
}

/* A call that waited gives up: its claim, if it holds one, only lasts long
 * enough for the same put to be tried again. */
static int put_gave_up(rs_ring *r, int rc, uint64_t span, size_t count, int waited) {
    if (waited)
        claim_renew(r, span, count, 1);
    return put_failed(r, rc);
}

/* Take the put lock and room for the batch (total_span: its records
 * without padding).  0 with the lock held and *plan set; else a status,
 * holding no lock (RS__AGAIN: try_only and it would wait). */
RS__HOT int begin_put(rs_ring *r, const struct iovec *msgs, size_t count, uint64_t total_span,
                    int64_t deadline, int try_only, put_plan *plan) {
    rs_wait_state w;
    int rc, waited = 0;
    for (;;) {
        if (!try_only && deadline != 0 && looks_full(r, count, total_span, plan)) {
            /* Wait for room before taking the lock: the lock would only be
             * let go again, and waiting producers would fight for it.  Not
             * inside this thread's own reserve() block: no consumer would
             * make room it could take.  (Elsewhere rs__lock says so when
             * its compare-and-swap fails: the thread's table of held locks
             * is read on that slow path only.) */
            if (rs__held_by_me(r, RS_PUT_LOCK))
                return rs__fail(RS_DEADLOCK, "put inside this thread's own reserve() block of "
                                "this ring would deadlock");
            rc = wait_consumers(r, total_span, count, &w, &waited, deadline, plan);
            if (rc != 0)
                return put_gave_up(r, rc, total_span, count, waited);
        }
        rc = rs__lock(r, RS_PUT_LOCK, deadline, try_only);
        if (rc != 0)
            return put_gave_up(r, rc, total_span, count, waited);
        rc = head_went_back(r);
        if (rc != 0) {
            rs__unlock(r, RS_PUT_LOCK);
            return rc;
        }
        if (room_fast(r, count, total_span, plan))
            return 0;
        rc = find_room(r, msgs, count, total_span, plan);
        if (rc == 0)
            return 0;
        /* No room: claim it (next in line), note what the consumers had
         * done when we looked, let the lock go, and sleep until they do
         * more.  A call that does not wait claims nothing. */
        if (rc == RS__TIMEOUT && !try_only && deadline != 0)
            claim_room(r, total_span, count);
        note_consumers(r, rs_load_acquire(&r->cached_tail), plan);
        rs__unlock(r, RS_PUT_LOCK);
        if (rc == RS__TIMEOUT && try_only)
            return RS__AGAIN;
        if (rc == RS__TIMEOUT && deadline != 0) {
            rc = wait_consumers(r, total_span, count, &w, &waited, deadline, plan);
            if (rc == 0)
                continue;
        }
        return put_gave_up(r, rc, total_span, count, waited);
    }
}

/* Write the header of record `index` of the batch at *at (after the wrap's
 * padding if it goes first), advance *at past it, return its payload. */
static inline char *place(rs_ring *r, const put_plan *plan, uint64_t *at, size_t index,
                          uint64_t length) {
    char *payload;
    if (index == plan->wrap_index) {
        rs__write_record(r->data, *at & r->mask, plan->wrap_pad - RS_RECORD_HEADER,
                         RS_KIND_PADDING);
        *at += plan->wrap_pad;
    }
    payload = rs__write_record(r->data, *at & r->mask, length, RS_KIND_DATA);
    *at += rs__record_span(length);
    return payload;
}

static inline void end_put(rs_ring *r, uint64_t end, uint64_t messages, uint64_t nbytes) {
    rs__publish(&r->hdr->producer, end, messages, nbytes);
    rs_store_relaxed(&r->put_seen, end);
    rs__wake(&r->hdr->data_waitq, RS_WAKE_ALL);
    rs__unlock(r, RS_PUT_LOCK);
}

static int too_large(rs_ring *r, size_t len) {
    return rs__fail(RS_TOO_LARGE, "message of %zu bytes exceeds max_message_size (%llu)", len,
                    (unsigned long long)r->max_payload);
}

int rs_put(rs_ring *r, const void *data, size_t len, int64_t timeout_ns) {
    rs_span span;
    int rc = rs__reserve(r, len, &span, rs__deadline(timeout_ns), RS__BRIEF);
    if (rc != 0)
        return rc;
    memcpy(span.data, data, len);
    return rs_commit(r, &span);
}

int rs__put_many(rs_ring *r, const struct iovec *msgs, size_t count, uint64_t tag,
                 int64_t deadline) {
    put_plan plan;
    uint64_t span = 0, nbytes = 0, at;
    size_t i;
    int rc;
    RS__REFUSE_TOPIC(r);
    if (count == 0)
        return 0;
    if (msgs == NULL)
        return rs__fail(RS_INVALID, "messages is NULL");
    for (i = 0; i < count; i++) {
        if (msgs[i].iov_len > r->max_payload)
            return rs__fail(RS_TOO_LARGE, "message %zu of %zu bytes exceeds max_message_size "
                            "(%llu)", i, msgs[i].iov_len, (unsigned long long)r->max_payload);
        span += rs__record_span(msgs[i].iov_len);
        nbytes += msgs[i].iov_len;
    }
    if (span > r->capacity / 2)
        /* At most half the ring, so an empty ring takes it wherever the
         * head stands. */
        return rs__fail(RS_TOO_LARGE, "batch of %zu messages needs %llu bytes, more than half "
                        "the ring's capacity (%llu)", count, (unsigned long long)span,
                        (unsigned long long)r->capacity);
    if (r->max_messages != 0 && count > r->max_messages)
        return rs__fail(RS_TOO_LARGE, "batch of %zu messages exceeds max_messages (%llu)",
                        count, (unsigned long long)r->max_messages);
    rc = rs__enter(r);
    if (rc != 0)
        return rc;
    rc = begin_put(r, msgs, count, span, deadline, 0, &plan);
    if (rc == 0) {
        at = plan.start;
        for (i = 0; i < count; i++)
            memcpy(place(r, &plan, &at, i, msgs[i].iov_len), msgs[i].iov_base,
                   msgs[i].iov_len);
        if (tag != 0) {
            rs__intend_tag(&r->hdr->producer, at, tag);
            rs__publish(&r->hdr->producer, at, count, nbytes);
            rs_store_relaxed(&r->put_seen, at);
            rs__wake(&r->hdr->data_waitq, RS_WAKE_ALL);
            rs__settle_tag(&r->hdr->producer, tag);
            rs__unlock(r, RS_PUT_LOCK);
        } else {
            end_put(r, at, count, nbytes);
        }
    }
    rs__leave(r);
    return rc;
}

int rs_put_many(rs_ring *r, const struct iovec *messages, size_t count, int64_t timeout_ns) {
    return rs__put_many(r, messages, count, 0, rs__deadline(timeout_ns));
}

/* Room and the put lock for one record of `len` bytes, handed out as a
 * span; the span holds a reference to the handle until it ends.  `flags`:
 * RS__TRY, RS__BRIEF, RS__HELD (internal.h). */
int rs__reserve(rs_ring *r, size_t len, rs_span *span, int64_t deadline, int flags) {
    put_plan plan;
    struct iovec one;
    uint64_t at;
    int rc;
    RS__REFUSE_TOPIC(r);
    if (span == NULL)
        return rs__fail(RS_INVALID, "span is NULL");
    if (len > r->max_payload)
        return too_large(r, len);
    rc = rs__enter_as(r, flags);
    if (rc != 0)
        return rc;
    one.iov_base = NULL;
    one.iov_len = len;
    rc = begin_put(r, &one, 1, rs__record_span(len), deadline, flags & RS__TRY, &plan);
    if (rc != 0) {
        rs__leave_as(r, flags);
        return rc;
    }
    at = plan.start;
    span->data = place(r, &plan, &at, 0, len);
    span->len = len;
    span->_position = at;
    span->_forks = rs__forks;
    span->_kind = RS_PUT_LOCK | (flags & RS__HELD ? RS__UNCOUNTED : 0);
    span->_has_record = 1;
    span->_lock = r;
    if (!(flags & RS__BRIEF)) {
        span->_kind |= RS__NOTED;
        rs__hold_note(r, RS_PUT_LOCK);
    }
    return 0;
}

int rs_reserve(rs_ring *r, size_t len, rs_span *span, int64_t timeout_ns) {
    return rs__reserve(r, len, span, rs__deadline(timeout_ns), 0);
}

/* The end of a reserve: publish (commit) or drop it.  A handle closed
 * meanwhile drops it and says RS_CLOSED: nothing is reported put that was
 * not published. */
RS__HOT int end_reserve(rs_ring *r, rs_span *span, int commit) {
    int rc = 0;
    if (span == NULL || span->_lock != r || RS__SPAN_LOCK(span) != RS_PUT_LOCK)
        return rs__fail(RS_INVALID, "not an open reserve() span of this ring");
    span->_lock = NULL;
    if (span->_forks != rs__forks)
        return RS_NOT_OWNER;   /* the parent's: its lock, its room (no reference of ours) */
    if (span->_kind & RS__NOTED)
        rs__hold_forget(r, RS_PUT_LOCK);
    if (commit && rs__closing(r))
        rc = rs__fail(RS_CLOSED, "the ring was closed inside the reserve() block: the "
                      "message was not published");
    if (commit && rc == 0)
        end_put(r, span->_position, 1, span->len);
    else
        rs__unlock(r, RS_PUT_LOCK);
    span->data = NULL;
    if (!(span->_kind & RS__UNCOUNTED))
        rs__leave(r);
    return rc;
}

int rs_commit(rs_ring *r, rs_span *span) {
    RS__REFUSE_TOPIC(r);   /* a topic's span ends with rs_topic_commit */
    return end_reserve(r, span, 1);
}

int rs_cancel(rs_ring *r, rs_span *span) {
    RS__REFUSE_TOPIC(r);
    return end_reserve(r, span, 0);
}

/* Would one record of `payload` bytes fit at the head as it is now? */
int rs__fits_now(rs_ring *r, uint64_t payload) {
    uint64_t head = rs_load_acquire(&r->hdr->producer.position);
    uint64_t tail = rs_load_seq(&r->hdr->consumer.position);
    uint64_t need = rs__record_span(payload);
    uint64_t pos = head & r->mask, ticket;
    if (pos + need > r->capacity)
        need += r->capacity - pos;   /* the padding to the end */
    if (!has_room(r, head, tail, need, 1))
        return 0;
    /* Room another producer claimed is not ours (put_nowait would find
     * that too); whose claim cannot be told here, so it counts as theirs. */
    ticket = rs_load_relaxed(&claim_of(r)->ticket);
    return ticket == 0 || !claim_blocks_slow(r, head + need, 1, ticket, 0);
}

int rs_wait_room(rs_ring *r, size_t len, int64_t timeout_ns) {
    rs_wait_state w;
    int rc;
    RS__REFUSE_TOPIC(r);
    if (len > r->max_payload)
        return too_large(r, len);
    rc = rs__enter(r);
    if (rc != 0)
        return rc;
    rs__wait_init(&w, rs__deadline(timeout_ns), r->spin_ns);
    while (!rs__shut_down(r) && !rs__fits_now(r, len)) {
        rc = rs__wait_turn(r, &r->hdr->space_waitq, &w, 0);
        if (rc != 0)
            break;
    }
    rs__leave(r);
    return rc == RS__TIMEOUT ? RS_FULL : rc;
}
