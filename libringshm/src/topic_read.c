/* Reading a topic: a subscriber finds its next record without a lock,
 * checks it against the head, the capacity and the tail (a record written
 * over while being read is never returned), and reports an overrun with
 * the exact count it missed (docs/DESIGN.md, "Topics"). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "topic.h"

/* ---- reading --------------------------------------------------------------- */

/* A record found for a subscriber: checked, and not written over when its
 * header was read. */
typedef struct {
    const char *payload;
    uint32_t length;
    uint64_t position;   /* where the record starts */
    uint64_t span;
    uint64_t seq;
} found;

/* The next DATA record from s->position (which it moves past padding, and
 * to the tail when the subscriber was overrun), with the mutex held: 0 and
 * *m; RS__TIMEOUT when there is none yet; RS_CORRUPTED.  m->seq may be past
 * s->seq: the messages in between were lost. */
static int next_record(rs_sub *s, found *m) {
    rs_ring *r = s->r;
    const rs_topic_record *rec;
    uint64_t head, tail, pos, off, span, seq;
    uint32_t length, kind;
    for (;;) {
        pos = s->position;
        head = rs_load_acquire(&r->hdr->producer.position);
        if (head == pos)
            return RS__TIMEOUT;
        if ((int64_t)(head - pos) < 0)
            return rs__fail(RS_CORRUPTED, "the topic's head went back behind a subscriber "
                            "(head %llu, subscriber %llu)", (unsigned long long)head,
                            (unsigned long long)pos);
        tail = rs_load_acquire(&r->hdr->consumer.position);
        if ((int64_t)(tail - pos) > 0) {
            /* Overrun: go on from the oldest record held; its sequence
             * number says how much was lost.  The head read above may be
             * older than this tail (publishers lapped us between the two
             * loads): read it again.  A tail then not within a capacity
             * behind it has moved since (look again) or is damage. */
            head = rs_load_acquire(&r->hdr->producer.position);
            if ((int64_t)(head - tail) < 0 || head - tail > r->capacity) {
                if (rs_load_acquire(&r->hdr->consumer.position) != tail)
                    continue;
                return rs__fail(RS_CORRUPTED, "the topic's head and tail are impossible");
            }
            s->position = pos = tail;
            if (head == pos)
                return RS__TIMEOUT;
        }
        if (head - pos > r->capacity || ((head | pos) & (RS_TOPIC_ALIGN - 1)) != 0)
            return rs__fail(RS_CORRUPTED, "the topic's head and a subscriber's position are "
                            "impossible");
        off = pos & r->mask;
        rec = (const rs_topic_record *)(r->data + off);
        length = __atomic_load_n(&rec->length, __ATOMIC_RELAXED);
        kind = __atomic_load_n(&rec->kind, __ATOMIC_RELAXED);
        seq = __atomic_load_n(&rec->seq, __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if ((int64_t)(rs_load_acquire(&r->hdr->consumer.position) - pos) > 0)
            continue;   /* written over while we read its header */
        if (kind == RS_KIND_PADDING) {
            span = RS_TOPIC_RECORD_HEADER + (uint64_t)length;
            if (off + span != r->capacity || span > head - pos)
                return rs__fail(RS_CORRUPTED, "topic padding record of a wrong length");
            s->position = pos + span;
            continue;
        }
        if (kind != RS_KIND_DATA)
            return rs__fail(RS_CORRUPTED, "topic record of an unknown kind");
        span = record_span(length);
        if (length > r->max_payload || off + span > r->capacity || span > head - pos)
            return rs__fail(RS_CORRUPTED, "topic record longer than the data published");
        if (seq < s->seq)
            return rs__fail(RS_CORRUPTED, "topic record of sequence %llu where %llu was "
                            "expected", (unsigned long long)seq, (unsigned long long)s->seq);
        m->payload = (const char *)rec + RS_TOPIC_RECORD_HEADER;
        m->length = length;
        m->position = pos;
        m->span = span;
        m->seq = seq;
        return 0;
    }
}

/* The subscriber lost the messages before m: say so (RS_LAGGED), and
 * expect m next. */
static int lagged(rs_sub *s, const found *m) {
    uint64_t missed = m->seq - s->seq;
    s->seq = m->seq;
    s->missed_last = missed;
    rs_add_relaxed(&s->e->missed, missed);
    rs_add_relaxed(&s->e->lags, 1);
    rs_store_release(&s->e->seq, m->seq);
    rs_store_release(&s->e->position, m->position);
    return RS_LAGGED;
}

/* Was the record at `pos` written over since its header was read? */
static inline int overwritten(rs_sub *s, uint64_t pos) {
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return (int64_t)(rs_load_acquire(&s->r->hdr->consumer.position) - pos) > 0;
}

/* Taken: advance past `messages` messages ending at `end`. */
static void advance(rs_sub *s, uint64_t end, uint64_t messages, uint64_t nbytes) {
    rs_sub_entry *e = s->e;
    s->position = end;
    s->seq += messages;
    rs_store_release(&e->seq, s->seq);
    rs_store_relaxed(&e->messages, rs_load_relaxed(&e->messages) + messages);
    rs_store_relaxed(&e->bytes, rs_load_relaxed(&e->bytes) + nbytes);
    if (load32_acquire(&e->flags) & RS_SUB_TETHERED) {
        /* Sequentially consistent: ordered before the read of the space
         * queue's `wanted` (waits.c). */
        rs_store_seq(&e->position, end);
        rs__wake(&s->r->hdr->space_waitq, RS_WAKE_ALL);
    } else {
        rs_store_release(&e->position, end);
    }
}

static int sub_drained(rs_sub *s) {
    rs_ring *r = s->r;
    if (!rs__shut_down(r) || rs__put_pending(r))
        return 0;
    return rs_load_seq(&r->hdr->producer.position) == s->position;
}

/* Sleep, holding nothing, until a message may be there for us. */
static int sub_wait(rs_sub *s, uint64_t position, rs_wait_state *w) {
    rs_ring *r = s->r;
    int rc;
    for (;;) {
        if (sub_closing(s))
            return rs__fail(RS_CLOSED, "the subscription (or its topic) was closed");
        if (rs_load_seq(&r->hdr->producer.position) != position)
            return 0;
        if (rs__shut_down(r)) {
            if (!rs__put_pending(r)
                    && rs_load_seq(&r->hdr->producer.position) == position)
                return RS_SHUTDOWN;
        }
        rc = rs__wait_turn(r, &r->hdr->data_waitq, w, 0);
        if (rc != 0)
            return rc;
    }
}

/* With the mutex held: the next message, waiting (mutex let go) until the
 * deadline.  0 with the mutex held and *m set (the message expected next);
 * else a status (RS_LAGGED included), the mutex let go. */
static int find_next(rs_sub *s, int64_t deadline, found *m) {
    rs_wait_state w;
    uint64_t position;
    int rc, waited = 0;
    for (;;) {
        rc = next_record(s, m);
        if (rc == 0 && m->seq != s->seq)
            rc = lagged(s, m);
        if (rc != RS__TIMEOUT) {
            if (rc != 0)
                pthread_mutex_unlock(&s->mu);
            return rc;
        }
        if (sub_drained(s)) {
            pthread_mutex_unlock(&s->mu);
            return RS_SHUTDOWN;
        }
        position = s->position;
        pthread_mutex_unlock(&s->mu);
        if (deadline == 0) {
            rs_add_relaxed(&s->e->timeouts, 1);
            return RS_EMPTY;
        }
        if (!waited) {
            waited = 1;
            rs__wait_start(&w, deadline, s->r->spin_ns, &s->e->waits);
        }
        rc = sub_wait(s, position, &w);
        if (rc == RS__TIMEOUT) {
            rs_add_relaxed(&s->e->timeouts, 1);
            return RS_EMPTY;
        }
        if (rc != 0)
            return rc;
        pthread_mutex_lock(&s->mu);
    }
}

/* Copy out as many ready messages as fit, from m on: the count (0: the
 * first was written over while copied, or does not fit: *too_large). */
static size_t copy_batch(rs_sub *s, found *m, char *out, size_t out_cap, size_t *lengths,
                         size_t max_messages, int *too_large) {
    uint64_t end = m->position, nbytes = 0;
    size_t n = 0, used = 0;
    for (;;) {
        if (m->length > out_cap - used) {
            if (n == 0) {
                lengths[0] = m->length;
                *too_large = 1;
            }
            break;
        }
        memcpy(out + used, m->payload, m->length);
        if (overwritten(s, m->position))
            break;   /* lost: the next call says so */
        lengths[n++] = m->length;
        used += m->length;
        nbytes += m->length;
        end = m->position + m->span;
        if (n == max_messages)
            break;
        s->position = end;
        if (next_record(s, m) != 0 || m->seq != s->seq + n)
            break;
    }
    if (n > 0)
        advance(s, end, n, nbytes);
    return n;
}

int rs_sub_get_many(rs_sub *s, void *out, size_t out_cap, size_t *lengths,
                    size_t max_messages, int64_t timeout_ns) {
    int64_t deadline = rs__deadline(timeout_ns);
    found m;
    size_t n = 0;
    int rc, too_large = 0;
    if (out == NULL && out_cap != 0)
        return rs__fail(RS_INVALID, "out is NULL");
    if (lengths == NULL || max_messages == 0)
        return rs__fail(RS_INVALID, "lengths is NULL or max_messages is 0");
    if ((rc = rs__sub_enter(s)) != 0)
        return rc;
    for (;;) {
        if ((rc = rs__sub_lock(s)) != 0)
            break;
        if ((rc = find_next(s, deadline, &m)) != 0)
            break;
        n = copy_batch(s, &m, out, out_cap, lengths, max_messages, &too_large);
        pthread_mutex_unlock(&s->mu);
        if (too_large)
            rc = rs__fail(RS_TOO_LARGE, "message of %zu bytes, buffer of %zu", lengths[0],
                          out_cap);
        if (n > 0 || too_large)
            break;
    }
    rs__sub_leave(s);
    return rc != 0 ? rc : (int)n;
}

int rs_sub_get(rs_sub *s, void *out, size_t out_cap, size_t *out_len, int64_t timeout_ns) {
    size_t length = 0;
    int rc;
    if (out_len == NULL)
        return rs__fail(RS_INVALID, "out_len is NULL");
    rc = rs_sub_get_many(s, out, out_cap, &length, 1, timeout_ns);
    if (rc == 1 || rc == RS_TOO_LARGE)
        *out_len = length;
    return rc == 1 ? 0 : rc;
}

int rs_sub_view(rs_sub *s, rs_span *span, int64_t timeout_ns) {
    found m;
    int rc;
    if (span == NULL)
        return rs__fail(RS_INVALID, "span is NULL");
    if ((rc = rs__sub_enter(s)) != 0)
        return rc;
    if ((rc = rs__sub_lock(s)) != 0) {
        rs__sub_leave(s);
        return rc;
    }
    rc = find_next(s, rs__deadline(timeout_ns), &m);
    if (rc != 0) {
        rs__sub_leave(s);
        return rc;
    }
    span->data = (void *)m.payload;
    span->len = m.length;
    span->_position = m.position;
    span->_first = m.position + m.span;
    span->_forks = rs__forks;
    span->_kind = RS_GET_LOCK;
    span->_has_record = 1;
    span->_lock = s;
    s->viewer = pthread_self();
    __atomic_store_n(&s->in_view, 1, __ATOMIC_RELEASE);
    return 0;   /* the mutex and the reference stay with the span */
}

static int sub_end_view(rs_sub *s, rs_span *span, int consume) {
    int rc = 0;
    if (span == NULL || span->_lock != s || RS__SPAN_LOCK(span) != RS_GET_LOCK)
        return rs__fail(RS_INVALID, "not an open view() span of this subscription");
    span->_lock = NULL;
    if (span->_forks != rs__forks)
        return RS_NOT_OWNER;
    __atomic_store_n(&s->in_view, 0, __ATOMIC_RELEASE);
    if (sub_closing(s)) {
        rc = rs__fail(RS_CLOSED, "the subscription was closed inside the view() block: the "
                      "message stays");
    } else if (overwritten(s, span->_position)) {
        /* Untethered, and overrun while the view was open: what it showed
         * may be torn.  It counts as missed. */
        s->missed_last = 1;
        s->seq++;
        rs_add_relaxed(&s->e->missed, 1);
        rs_add_relaxed(&s->e->lags, 1);
        rs_store_release(&s->e->seq, s->seq);
        rc = RS_LAGGED;
    } else if (consume) {
        advance(s, span->_first, 1, span->len);
    }
    span->data = NULL;
    pthread_mutex_unlock(&s->mu);
    rs__sub_leave(s);
    return rc;
}

int rs_sub_release(rs_sub *s, rs_span *span) {
    return sub_end_view(s, span, 1);
}

int rs_sub_keep(rs_sub *s, rs_span *span) {
    return sub_end_view(s, span, 0);
}

int rs_sub_wait(rs_sub *s, int64_t timeout_ns) {
    rs_wait_state w;
    uint64_t position;
    int rc;
    if ((rc = rs__sub_enter(s)) != 0)
        return rc;
    position = rs_load_acquire(&s->e->position);
    rs__wait_init(&w, rs__deadline(timeout_ns), s->r->spin_ns);
    rc = sub_wait(s, position, &w);
    rs__sub_leave(s);
    return rc == RS__TIMEOUT ? RS_EMPTY : rc;
}

uint64_t rs_sub_missed(rs_sub *s) {
    return s->missed_last;
}

uint64_t rs_sub_lag(rs_sub *s) {
    uint64_t next = rs_load_acquire(&s->r->hdr->producer.messages);
    uint64_t seq = rs_load_acquire(&s->e->seq);
    return next > seq ? next - seq : 0;
}

int rs_sub_tethered(rs_sub *s) {
    return (load32_acquire(&s->e->flags) & RS_SUB_TETHERED) != 0;
}

