/* The get side: how a consumer finds the next record, checks it, and
 * consumes it.  Under the get lock the ring is single-consumer: the holder
 * reads records from the tail, then publishes the new tail (counters.h) and
 * wakes producers that sleep for room.  Every record is checked against the
 * capacity and the published head before one byte of it is trusted: the
 * segment is written by processes we do not trust.  A consumer that finds
 * the ring empty lets the lock go and sleeps (waits.c). */
#define _GNU_SOURCE
#include <stdint.h>
#include <string.h>

#include "counters.h"
#include "internal.h"
#include "records.h"

static inline uint64_t head_hint(rs_ring *r) {
    return rs_load_acquire(&r->cached_head);
}

static inline uint64_t refresh_head(rs_ring *r) {
    uint64_t head = rs_load_acquire(&r->hdr->producer.position);
    rs_store_release(&r->cached_head, head);
    return head;
}

/* Show the DATA record at span->_position: skip padding and validate.
 * 0 (span->data, span->len set), RS__TIMEOUT when there is none, or
 * RS_CORRUPTED.  `head` is the call's view of the published head. */
RS__HOT int find_record(rs_ring *r, rs_span *span, uint64_t *head) {
    uint64_t tail, avail, pos, rec_span;
    uint32_t length, kind;
    const rs_record *rec;
    for (;;) {
        tail = span->_position;
        if ((int64_t)(*head - tail) <= 0) {
            *head = refresh_head(r);
            if (*head == tail) {
                span->_has_record = 0;
                span->data = NULL;
                span->len = 0;
                return RS__TIMEOUT;
            }
        }
        avail = *head - tail;
        if (avail > r->capacity)
            return rs__fail(RS_CORRUPTED, "head and tail are further apart than the capacity "
                            "(head %llu, tail %llu)", (unsigned long long)*head,
                            (unsigned long long)tail);
        if ((tail & 7) != 0 || (avail & 7) != 0)
            return rs__fail(RS_CORRUPTED, "head or tail is not 8-byte aligned");
        pos = tail & r->mask;
        rec = (const rs_record *)(r->data + pos);
        length = __atomic_load_n(&rec->length, __ATOMIC_RELAXED);
        kind = __atomic_load_n(&rec->kind, __ATOMIC_RELAXED);
        if (kind == RS_KIND_PADDING) {
            rec_span = RS_RECORD_HEADER + (uint64_t)length;
            if (pos + rec_span != r->capacity || rec_span > avail)
                return rs__fail(RS_CORRUPTED, "padding record of a wrong length");
            span->_position = tail + rec_span;
            if (span->_messages == 0)
                span->_first = span->_position;
            continue;
        }
        if (kind != RS_KIND_DATA)
            return rs__fail(RS_CORRUPTED, "record of an unknown kind");
        rec_span = rs__record_span(length);
        if (length > r->max_payload || rec_span > avail || pos + rec_span > r->capacity)
            return rs__fail(RS_CORRUPTED, "record longer than the data published");
        span->data = r->data + pos + RS_RECORD_HEADER;
        span->len = length;
        span->_has_record = 1;
        return 0;
    }
}

static inline void publish_tail(rs_ring *r, uint64_t tail, uint64_t messages,
                                uint64_t nbytes) {
    rs__publish(&r->hdr->consumer, tail, messages, nbytes);
    if (r->max_messages)
        /* A producer waiting for a message slot checks messages_got, which
         * publish stores after the (fenced) tail: order that store before
         * our read of `wanted`, as the tail's is. */
        rs_fence();
    rs__wake(&r->hdr->space_waitq, RS_WAKE_ALL);
}

/* Publish what was consumed (or only the padding skipped), unlock. */
RS__HOT void end_get(rs_ring *r, uint64_t tail, uint64_t messages, uint64_t nbytes) {
    if (tail != rs_load_relaxed(&r->hdr->consumer.position) || messages)
        publish_tail(r, tail, messages, nbytes);
    rs__unlock(r, RS_GET_LOCK);
}

/* No record between the tail and the head: looks at the head only when the
 * hint says empty. */
static int looks_empty(rs_ring *r) {
    uint64_t tail = rs_load_relaxed(&r->hdr->consumer.position);
    if (head_hint(r) != tail)
        return 0;
    return refresh_head(r) == tail;
}

/* Shut down and drained: no message, and no put that took its lock
 * before the flag (a put that takes it after refuses) can still publish:
 * the put lock is free, held by a dead process, or by this thread inside
 * its own reserve() (waiting for it would be waiting for ourselves).  The
 * head is read after the lock word: a put that published, then let go,
 * is seen. */
int rs__put_pending(rs_ring *r) {
    uint64_t owner = rs_load_acquire(&r->hdr->put_lock.owner), token;
    if (owner == 0)
        return 0;
    token = __atomic_load_n(&r->presence->token, __ATOMIC_ACQUIRE);
    return owner == token ? !rs__held_by_me(r, RS_PUT_LOCK)
                          : rs_holder_alive(r->presence, (char *)r->hdr, owner);
}

int rs__drained(rs_ring *r) {
    if (!rs__shut_down(r) || rs__put_pending(r))
        return 0;
    return rs_load_seq(&r->hdr->producer.position) == rs_load_seq(&r->hdr->consumer.position);
}

/* Sleep (holding no lock) until the ring holds a message, or is shut down
 * and drained. */
int rs__wait_data(rs_ring *r, rs_wait_state *w) {
    int rc;
    while (rs_load_seq(&r->hdr->producer.position) == rs_load_seq(&r->hdr->consumer.position)
           && !rs__drained(r)) {
        rc = rs__wait_turn(r, &r->hdr->data_waitq, w, 0);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int wait_step(rs_ring *r, rs_wait_state *w, int *waited, int64_t deadline) {
    if (!*waited) {
        *waited = 1;
        rs__wait_start(w, deadline, r->spin_ns, &r->hdr->consumer.waits);
    }
    return rs__wait_data(r, w);
}

static inline int get_failed(rs_ring *r, int rc) {
    if (rc == RS__TIMEOUT) {
        rs_add_relaxed(&r->hdr->consumer.timeouts, 1);
        return RS_EMPTY;
    }
    return rc;
}

static inline void start_read(rs_ring *r, rs_span *span) {
    span->_position = rs_load_relaxed(&r->hdr->consumer.position);
    span->_first = span->_position;
    span->_messages = 0;
    span->_bytes = 0;
    span->_has_record = 0;
    span->_forks = rs__forks;
    span->_kind = RS_GET_LOCK;
    span->_lock = r;
}

/* Take the get lock and find the oldest message, waiting for one (holding
 * no lock) until the deadline.  0 with the lock held and the span showing
 * the message; else a status, holding no lock.  The caller has entered. */
RS__HOT int lock_and_find(rs_ring *r, rs_span *span, int64_t deadline, int try_only) {
    rs_wait_state w;
    uint64_t head;
    int rc, waited = 0;
    for (;;) {
        if (!try_only && deadline != 0 && looks_empty(r)) {
            /* Wait for data before taking the lock: the lock would only be
             * let go again.  Not inside this thread's own view() block (as
             * begin_put in put.c). */
            if (rs__held_by_me(r, RS_GET_LOCK))
                return rs__fail(RS_DEADLOCK, "get inside this thread's own view() block of this "
                                "ring would deadlock");
            rc = wait_step(r, &w, &waited, deadline);
            if (rc != 0)
                return get_failed(r, rc);
        }
        rc = rs__lock(r, RS_GET_LOCK, deadline, try_only);
        if (rc != 0)
            return get_failed(r, rc);
        start_read(r, span);
        head = head_hint(r);
        rc = find_record(r, span, &head);
        if (rc == 0)
            return 0;
        /* Nothing there: hand back any padding skipped, let the lock go,
         * and sleep until a producer publishes (a waiter holds no lock). */
        end_get(r, span->_position, 0, 0);
        if (rc == RS__TIMEOUT && rs__drained(r))
            return RS_SHUTDOWN;
        if (rc == RS__TIMEOUT && try_only)
            return RS__AGAIN;
        if (rc == RS__TIMEOUT && deadline != 0) {
            rc = wait_step(r, &w, &waited, deadline);
            if (rc == 0)
                continue;
        }
        return get_failed(r, rc);
    }
}

/* `flags`: RS__TRY, RS__BRIEF, RS__HELD (internal.h). */
int rs__view(rs_ring *r, rs_span *span, int64_t deadline, int flags) {
    int rc;
    RS__REFUSE_TOPIC(r);
    if (span == NULL)
        return rs__fail(RS_INVALID, "span is NULL");
    rc = rs__enter_as(r, flags);
    if (rc != 0)
        return rc;
    rc = lock_and_find(r, span, deadline, flags & RS__TRY);
    if (rc != 0) {
        rs__leave_as(r, flags);
        return rc;
    }
    if (flags & RS__HELD)
        span->_kind |= RS__UNCOUNTED;
    if (!(flags & RS__BRIEF)) {
        span->_kind |= RS__NOTED;
        rs__hold_note(r, RS_GET_LOCK);
    }
    return 0;
}

int rs_view(rs_ring *r, rs_span *span, int64_t timeout_ns) {
    return rs__view(r, span, rs__deadline(timeout_ns), 0);
}

/* A window for the out bridge: the get lock (RS_BUSY when it does not come
 * by the deadline) and a read from the tail that waits for nothing; the
 * span shows the oldest message, or nothing.  *consumed: the count of
 * messages consumed, exact under the lock (a dead holder's publish is
 * repaired first).  Ends with rs_keep (publishing what was stepped past)
 * or rs__window_close (nothing, not even padding). */
int rs__window(rs_ring *r, rs_span *span, int64_t deadline, uint64_t *consumed) {
    uint64_t head;
    int rc;
    RS__REFUSE_TOPIC(r);
    if ((rc = rs__enter(r)) != 0)
        return rc;
    rc = rs__lock(r, RS_GET_LOCK, deadline, 0);
    if (rc != 0) {
        rs__leave(r);
        return rc == RS__TIMEOUT ? RS_BUSY : rc;
    }
    *consumed = rs_load_acquire(&r->hdr->consumer.messages);
    start_read(r, span);
    head = head_hint(r);
    rc = find_record(r, span, &head);
    if (rc == RS_CORRUPTED) {
        rs__unlock(r, RS_GET_LOCK);
        rs__leave(r);
        return rc;
    }
    span->_kind |= RS__NOTED;
    rs__hold_note(r, RS_GET_LOCK);
    return 0;
}

static int check_view(rs_ring *r, rs_span *span) {
    if (span == NULL || span->_lock != r || RS__SPAN_LOCK(span) != RS_GET_LOCK)
        return rs__fail(RS_INVALID, "not an open view() span of this ring");
    if (span->_forks != rs__forks) {
        span->_lock = NULL;
        return RS_NOT_OWNER;   /* the parent's: its lock, its message */
    }
    return 0;
}

int rs_view_next(rs_ring *r, rs_span *span) {
    uint64_t head;
    int rc = check_view(r, span);
    if (rc != 0)
        return rc;
    if (!span->_has_record)
        return RS_EMPTY;
    span->_position += rs__record_span(span->len);
    span->_messages += 1;
    span->_bytes += span->len;
    head = head_hint(r);
    rc = find_record(r, span, &head);
    return rc == RS__TIMEOUT ? RS_EMPTY : rc;
}

void rs_rewind(rs_ring *r, rs_span *span) {
    if (check_view(r, span) != 0)
        return;
    span->_position = span->_first;
    span->_messages = 0;
    span->_bytes = 0;
    span->_has_record = 0;
    span->data = NULL;
    span->len = 0;
}

/* The end of a view: publish what it consumed and let the lock go.  A
 * handle closed meanwhile consumes nothing and says RS_CLOSED: no message
 * is both returned and left. */
RS__HOT int end_view(rs_ring *r, rs_span *span, int consume, int publish) {
    int rc = check_view(r, span);
    uint64_t tail;
    if (rc != 0)
        return rc;
    span->_lock = NULL;
    if (span->_kind & RS__NOTED)
        rs__hold_forget(r, RS_GET_LOCK);
    if (rs__closing(r) && (consume || span->_messages)) {
        rc = rs__fail(RS_CLOSED, "the ring was closed inside the view() block: the message "
                      "stays in the ring");
        end_get(r, span->_first, 0, 0);
    } else if (!publish) {
        rs__unlock(r, RS_GET_LOCK);
    } else {
        tail = span->_position;
        if (consume && span->_has_record) {
            tail += rs__record_span(span->len);
            span->_messages += 1;
            span->_bytes += span->len;
        }
        end_get(r, tail, span->_messages, span->_bytes);
    }
    span->data = NULL;
    if (!(span->_kind & RS__UNCOUNTED))
        rs__leave(r);
    return rc;
}

int rs_release(rs_ring *r, rs_span *span) {
    return end_view(r, span, 1, 1);
}

int rs_keep(rs_ring *r, rs_span *span) {
    return end_view(r, span, 0, 1);
}

int rs__window_close(rs_ring *r, rs_span *span) {
    return end_view(r, span, 0, 0);
}

int rs_get(rs_ring *r, void *out, size_t out_cap, size_t *out_len, int64_t timeout_ns) {
    rs_span span;
    int rc;
    if (out == NULL && out_cap != 0)
        return rs__fail(RS_INVALID, "out is NULL");
    rc = rs__view(r, &span, rs__deadline(timeout_ns), RS__BRIEF);
    if (rc != 0)
        return rc;
    if (out_len != NULL)
        *out_len = span.len;
    if (span.len > out_cap) {
        rs_keep(r, &span);
        return rs__fail(RS_TOO_LARGE, "a buffer of %zu bytes is too small for the next "
                        "message (%zu bytes)", out_cap, span.len);
    }
    memcpy(out, span.data, span.len);
    return rs_release(r, &span);
}

int rs_get_many(rs_ring *r, void *out, size_t out_cap, size_t *lengths, size_t max_messages,
                int64_t timeout_ns) {
    rs_span span;
    size_t count = 0, used = 0;
    int rc;
    if (max_messages == 0 || lengths == NULL || (out == NULL && out_cap != 0))
        return rs__fail(RS_INVALID, "max_messages must be positive, lengths and out given");
    rc = rs__view(r, &span, rs__deadline(timeout_ns), RS__BRIEF);
    if (rc != 0)
        return rc;
    if (span.len > out_cap) {
        rs_keep(r, &span);
        lengths[0] = span.len;
        return rs__fail(RS_TOO_LARGE, "a buffer of %zu bytes is too small for the next "
                        "message (%zu bytes)", out_cap, span.len);
    }
    for (;;) {
        memcpy((char *)out + used, span.data, span.len);
        used += span.len;
        lengths[count++] = span.len;
        if (count == max_messages) {
            rc = rs_release(r, &span);
            return rc != 0 ? rc : (int)count;
        }
        rc = rs_view_next(r, &span);
        if (rc != 0 || span.len > out_cap - used)
            break;
    }
    /* What was stepped past is taken; the message shown (too big for what
     * is left of `out`) and any damage stay for the next call. */
    rc = rs_keep(r, &span);
    return rc != 0 ? rc : (int)count;
}
