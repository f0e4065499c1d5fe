/* Topics: publish/subscribe over one log (docs/DESIGN.md, "Topics"; the
 * bytes in docs/FORMAT.md, "Topics").
 *
 * Publishers append records under the put lock, exactly as producers of a
 * ring do, and each record carries its sequence number.  The log's tail
 * (the consumer side of the header) is the oldest record still held; only
 * publishers move it, under the put lock, when they need room: they walk
 * the records they free, and store the new tail *before* they write over
 * them.  A subscriber reads without any shared lock: it checks a record
 * against the head and the capacity, copies it, and then checks that the
 * tail has not passed it (a seqlock's second look): a record overwritten
 * while it was read is never returned.
 *
 * A publisher may free room only behind every live tethered subscriber.
 * It keeps a bound, `limit`, in the segment: no live tethered subscriber is
 * behind it.  Positions only grow and a new subscriber lowers it under the
 * put lock, so the bound stays true without a look at the table; the table
 * is scanned only when a publish needs room past it (about once per
 * capacity's worth of messages while subscribers keep up).  A publisher
 * that finds no room lets the lock go and sleeps on the space queue, which
 * tethered subscribers wake as they take messages; every look it makes
 * (on the first wait after the first 10 ms, then once a recovery interval)
 * frees the entries of dead subscribers and untethers those stalled past
 * their stall_timeout.
 *
 * An untethered subscriber that finds the tail past its position jumps to
 * the tail; the first record it then reads has a sequence number past the
 * one it expected, and the difference is exactly what it missed. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "topic.h"

#define NO_WRAP SIZE_MAX

/* The store of a new tail must be seen before the records written over the
 * room it frees: a subscriber that reads a record, then finds the tail not
 * past it, read what was there.  x86 keeps stores in order (and the tail's
 * store is sequentially consistent); elsewhere a fence orders the plain
 * stores that follow. */
static inline void tail_before_overwrite(void) {
#if defined(__x86_64__) || defined(__i386__)
    __asm__ __volatile__("" ::: "memory");
#else
    rs_fence();
#endif
}

static int not_a_topic(void) {
    return rs__fail(RS_WRONG_KIND, "a ring handle where a topic was expected");
}

/* ---- making and attaching ------------------------------------------------ */

static int topic_options(uint32_t history, const rs_options *options) {
    if (history > RS_TOPIC_MAX_HISTORY)
        return rs__fail(RS_INVALID, "history must be at most %u, not %u", RS_TOPIC_MAX_HISTORY,
                        history);
    if (options != NULL && options->max_messages != 0)
        return rs__fail(RS_INVALID, "a topic has no max_messages");
    return 0;
}

static int made(int rc, rs_ring *r, rs_topic **out) {
    if (rc == 0 && !r->topic) {   /* cannot happen: the open checked the magic */
        rs_close(r);
        return not_a_topic();
    }
    if (rc == 0)
        *out = (rs_topic *)r;
    return rc;
}

int rs_topic_create_name(const char *name, uint64_t capacity, uint32_t history,
                         const rs_options *options, rs_topic **out) {
    rs__shape shape = {1, history};
    rs_ring *r = NULL;
    int rc = topic_options(history, options);
    if (rc == 0)
        rc = rs__create_name_as(name, capacity, options, &shape, &r);
    return made(rc, r, out);
}

int rs_topic_open_name(const char *name, const rs_options *options, rs_topic **out) {
    rs__shape shape = {1, 0};
    rs_ring *r = NULL;
    int rc = rs__open_name_as(name, options, &shape, &r);
    return made(rc, r, out);
}

int rs_topic_create_path(const char *path, uint64_t capacity, uint32_t history,
                         const rs_options *options, rs_topic **out) {
    rs__shape shape = {1, history};
    rs_ring *r = NULL;
    int rc = topic_options(history, options);
    if (rc == 0)
        rc = rs__create_path_as(path, capacity, options, &shape, &r);
    return made(rc, r, out);
}

int rs_topic_open_path(const char *path, const rs_options *options, rs_topic **out) {
    rs__shape shape = {1, 0};
    rs_ring *r = NULL;
    int rc = rs__open_path_as(path, options, &shape, &r);
    return made(rc, r, out);
}

int rs_topic_anonymous(uint64_t capacity, uint32_t history, const rs_options *options,
                       rs_topic **out) {
    rs__shape shape = {1, history};
    rs_ring *r = NULL;
    int rc = topic_options(history, options);
    if (rc == 0)
        rc = rs__anonymous_as(capacity, options, &shape, &r);
    return made(rc, r, out);
}

int rs_topic_close(rs_topic *t) {
    return rs_close(ring_of(t));
}

rs_ring *rs_topic_ring(rs_topic *t) {
    return ring_of(t);
}

int rs_topic_shutdown(rs_topic *t) {
    return rs_shutdown(ring_of(t), 0);
}

int rs_topic_is_shutdown(rs_topic *t) {
    return rs_is_shutdown(ring_of(t));
}

/* ---- the subscriber table -------------------------------------------------- */

/* The lowest position of a live tethered subscriber between tail and head
 * (UINT64_MAX: none).  A position outside them is damage, or a subscriber
 * already overrun: it cannot be protected, and is not waited for.
 * Sequentially consistent loads: a waiting publisher's re-check after it
 * armed the space queue (waits.c) must not be ordered before that store
 * (an acquire load may be, on ARM with RCpc); plain loads on x86. */
static uint64_t scan_limit(rs_ring *r, uint64_t tail, uint64_t head) {
    uint64_t low = UINT64_MAX, p;
    uint32_t i;
    for (i = 0; i < RS_TOPIC_SUBSCRIBERS; i++) {
        if ((rs_load32_seq(&r->subs[i].flags) & FLAGS_LIVE) != FLAGS_LIVE)
            continue;
        p = rs_load_seq(&r->subs[i].position);
        if (p >= tail && p <= head && p < low)
            low = p;
    }
    return low;
}

/* Is the process named by `owner` alive?  Our own token is: the kernel
 * never reports our own OFD lock as held (it conflicts with nothing of
 * ours), so it must not be asked. */
int rs__topic_owner_alive(rs_ring *r, uint64_t owner) {
    if (owner == 0)
        return 0;
    if (owner == __atomic_load_n(&r->presence->token, __ATOMIC_ACQUIRE))
        return 1;
    return rs_holder_alive(r->presence, (char *)r->hdr, owner);
}

void rs__topic_free_entry(rs_sub_entry *e, uint64_t owner) {
    __atomic_store_n(&e->flags, 0, __ATOMIC_SEQ_CST);
    rs_cas(&e->owner, owner, 0);
}

/* With the put lock: free the entries of dead subscribers that hold the
 * tail back (below `want`), and untether those that took nothing for their
 * stall_timeout while publishers waited.  1 when anything changed. */
static int topic_look(rs_ring *r, uint64_t want) {
    rs_topic_block *tb = r->tblock;
    int64_t now = rs__now();
    /* Looks more than two slices apart: nobody was waiting in between, so
     * a subscriber's stillness since the last look is no stall. */
    int fresh = since(now, rs_load_relaxed(&tb->looked_ns)) > 2 * r->slice_ns + FIRST_LOOK_NS;
    int changed = 0;
    uint64_t owner, p;
    uint32_t i, flags;
    rs_sub_entry *e;
    rs_store_relaxed(&tb->looked_ns, (uint64_t)now);
    for (i = 0; i < RS_TOPIC_SUBSCRIBERS; i++) {
        e = &r->subs[i];
        flags = load32_acquire(&e->flags);
        if ((flags & FLAGS_LIVE) != FLAGS_LIVE)
            continue;
        p = rs_load_acquire(&e->position);
        if (p >= want)
            continue;
        owner = rs_load_acquire(&e->owner);
        if (!rs__topic_owner_alive(r, owner)) {
            rs__topic_free_entry(e, owner);
            rs_add_relaxed(&tb->reaped, 1);
            changed = 1;
            continue;
        }
        if (e->stall_ms == 0)
            continue;
        if (fresh || p != rs_load_relaxed(&e->watched_position)) {
            rs_store_relaxed(&e->watched_position, p);
            rs_store_relaxed(&e->watched_ns, (uint64_t)now);
        } else if (since(now, rs_load_relaxed(&e->watched_ns))
                   >= (int64_t)e->stall_ms * 1000000LL) {
            /* One compare-and-swap: untethered and stalled at once (a
             * publisher killed between two stores left neither flag), and
             * only while still live (its subscriber may be freeing it). */
            if (__atomic_compare_exchange_n(&e->flags, &flags,
                                            (flags & ~RS_SUB_TETHERED) | RS_SUB_STALLED, 0,
                                            __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
                rs_add_relaxed(&tb->stalls, 1);
                changed = 1;
            }
        }
    }
    return changed;
}

/* ---- publishing ---------------------------------------------------------- */

typedef struct {
    uint64_t start;       /* the head where the batch starts */
    size_t wrap_index;    /* the record preceded by padding to the end, NO_WRAP: none */
    uint64_t wrap_pad;
    uint64_t need;        /* bytes from the head to the batch's end, padding included */
    uint64_t want;        /* no room: the tail the batch needs */
} pub_plan;

static void topic_lay_out(rs_ring *r, uint64_t head, const struct iovec *msgs, size_t count,
                    pub_plan *plan) {
    uint64_t pos = head & r->mask, total = 0, span;
    size_t i;
    plan->wrap_index = NO_WRAP;
    for (i = 0; i < count; i++) {
        span = record_span(msgs[i].iov_len);
        if (plan->wrap_index == NO_WRAP && pos + span > r->capacity) {
            plan->wrap_index = i;
            plan->wrap_pad = r->capacity - pos;
            total += plan->wrap_pad;
            pos = 0;
        }
        pos += span;
        total += span;
    }
    plan->start = head;
    plan->need = total;
}

/* Free room for the batch: walk the oldest records, as far as every live
 * tethered subscriber allows, and publish the new tail.  With the put lock.
 * 0, RS__TIMEOUT (plan->want: what the batch waits for) or RS_CORRUPTED. */
static int free_room(rs_ring *r, pub_plan *plan) {
    rs_topic_block *tb = r->tblock;
    uint64_t head = plan->start, tail = rs_load_relaxed(&r->hdr->consumer.position);
    uint64_t want, t, limit, off, span, messages = 0, nbytes = 0;
    const rs_topic_record *rec;
    uint32_t length, kind;
    if (head - tail > r->capacity || (tail & (RS_TOPIC_ALIGN - 1)) != 0)
        return rs__fail(RS_CORRUPTED, "the topic's head and tail are impossible (head %llu, "
                        "tail %llu)", (unsigned long long)head, (unsigned long long)tail);
    if (plan->need <= r->capacity - (head - tail))
        return 0;
    want = head + plan->need - r->capacity;
    for (t = tail; t < want; t += span) {
        off = t & r->mask;
        rec = (const rs_topic_record *)(r->data + off);
        length = rec->length;
        kind = rec->kind;
        if (kind == RS_KIND_PADDING) {
            span = RS_TOPIC_RECORD_HEADER + (uint64_t)length;
            if (off + span != r->capacity || span > head - t)
                return rs__fail(RS_CORRUPTED, "topic padding record of a wrong length");
        } else if (kind == RS_KIND_DATA) {
            span = record_span(length);
            if (length > r->max_payload || off + span > r->capacity || span > head - t)
                return rs__fail(RS_CORRUPTED, "topic record longer than the data published");
            messages++;
            nbytes += length;
        } else {
            return rs__fail(RS_CORRUPTED, "topic record of an unknown kind");
        }
    }
    limit = rs_load_relaxed(&tb->limit);
    if (t > limit) {
        limit = scan_limit(r, tail, head);
        rs_store_relaxed(&tb->limit, limit);
        rs_add_relaxed(&tb->scans, 1);
        if (t > limit && since(rs__now(), rs_load_relaxed(&tb->looked_ns)) >= FIRST_LOOK_NS
                && topic_look(r, t)) {
            limit = scan_limit(r, tail, head);
            rs_store_relaxed(&tb->limit, limit);
        }
        if (t > limit) {
            plan->want = t;
            return RS__TIMEOUT;
        }
    }
    rs__publish(&r->hdr->consumer, t, messages, nbytes);
    tail_before_overwrite();
    return 0;
}

/* Sleep (holding no lock) until the tethered subscribers have moved past
 * `want`, the topic is shut down, or it is time for another look at them. */
static int wait_subscribers(rs_ring *r, uint64_t want, rs_wait_state *w, int *waited,
                            int64_t deadline) {
    int64_t now, next_look, elapsed;
    int rc;
    if (!*waited) {
        *waited = 1;
        rs__wait_start(w, deadline, r->spin_ns, &r->hdr->producer.waits);
    }
    now = rs__now();
    elapsed = since(now, rs_load_relaxed(&r->tblock->looked_ns));
    next_look = elapsed < r->slice_ns ? now + (r->slice_ns - elapsed) : now;
    if (next_look < now + FIRST_LOOK_NS)
        next_look = now + FIRST_LOOK_NS;
    for (;;) {
        if (rs__shut_down(r))
            return 0;
        if (scan_limit(r, rs_load_seq(&r->hdr->consumer.position),
                       rs_load_seq(&r->hdr->producer.position)) >= want)
            return 0;
        if (w->spin_until == 0 && rs__now() >= next_look)
            return 0;   /* the caller takes the lock and looks */
        w->check_at = next_look;
        rc = rs__wait_turn(r, &r->hdr->space_waitq, w, 0);
        if (rc != 0)
            return rc;
    }
}

static inline int publish_failed(rs_ring *r, int rc) {
    if (rc == RS__TIMEOUT) {
        rs_add_relaxed(&r->hdr->producer.timeouts, 1);
        return RS_FULL;
    }
    return rc;
}

/* The put lock and room for the batch: 0 with the lock held and *plan set;
 * else a status, holding no lock. */
static int begin_publish(rs_ring *r, const struct iovec *msgs, size_t count, int64_t deadline,
                         pub_plan *plan) {
    rs_wait_state w;
    uint64_t head;
    int rc, waited = 0;
    for (;;) {
        rc = rs__lock(r, RS_PUT_LOCK, deadline, 0);
        if (rc != 0)
            return publish_failed(r, rc);
        head = rs_load_relaxed(&r->hdr->producer.position);
        if ((head & (RS_TOPIC_ALIGN - 1)) != 0) {
            rs__unlock(r, RS_PUT_LOCK);
            return rs__fail(RS_CORRUPTED, "the topic's head is not 16-byte aligned");
        }
        topic_lay_out(r, head, msgs, count, plan);
        rc = free_room(r, plan);
        if (rc == 0)
            return 0;
        rs__unlock(r, RS_PUT_LOCK);
        if (rc != RS__TIMEOUT || deadline == 0)
            return publish_failed(r, rc);
        if (rs__held_by_me(r, RS_PUT_LOCK))
            return rs__fail(RS_DEADLOCK, "publish inside this thread's own reserve() block of "
                            "this topic would deadlock");
        rc = wait_subscribers(r, plan->want, &w, &waited, deadline);
        if (rc != 0)
            return publish_failed(r, rc);
    }
}

/* The history index names where the record of `seq` starts.  Written
 * only for a record about to be published (a reserve's at its commit): a
 * slot names an older record too, seq - history's, which a subscriber may
 * still start from until then. */
static inline void note_in_index(rs_ring *r, uint64_t seq, uint64_t position) {
    if (r->history != 0)
        r->index[seq % r->history] = position;
}

/* Write record `index` of the batch at *at (after the padding when it goes
 * first), advance *at, return the payload; `note`: into the index too. */
static char *topic_place(rs_ring *r, const pub_plan *plan, uint64_t *at, size_t index,
                         uint64_t length, uint64_t seq, int note) {
    rs_topic_record *rec;
    if (index == plan->wrap_index) {
        rec = (rs_topic_record *)(r->data + (*at & r->mask));
        rec->length = (uint32_t)(plan->wrap_pad - RS_TOPIC_RECORD_HEADER);
        rec->kind = RS_KIND_PADDING;
        rec->seq = 0;
        *at += plan->wrap_pad;
    }
    rec = (rs_topic_record *)(r->data + (*at & r->mask));
    rec->length = (uint32_t)length;
    rec->kind = RS_KIND_DATA;
    rec->seq = seq;
    if (note)
        note_in_index(r, seq, *at);
    *at += record_span(length);
    return (char *)rec + RS_TOPIC_RECORD_HEADER;
}

static void end_publish(rs_ring *r, uint64_t end, uint64_t messages, uint64_t nbytes) {
    rs__publish(&r->hdr->producer, end, messages, nbytes);
    rs__wake(&r->hdr->data_waitq, RS_WAKE_ALL);
    rs__unlock(r, RS_PUT_LOCK);
}

static int check_batch(rs_ring *r, const struct iovec *msgs, size_t count, uint64_t *nbytes) {
    uint64_t span = 0;
    size_t i;
    if (msgs == NULL)
        return rs__fail(RS_INVALID, "messages is NULL");
    for (i = 0; i < count; i++) {
        if (msgs[i].iov_len > r->max_payload)
            return rs__fail(RS_TOO_LARGE, "message %zu of %zu bytes exceeds max_message_size "
                            "(%llu)", i, msgs[i].iov_len, (unsigned long long)r->max_payload);
        span += record_span(msgs[i].iov_len);
        *nbytes += msgs[i].iov_len;
    }
    if (span > r->capacity / 2)
        return rs__fail(RS_TOO_LARGE, "batch of %zu messages needs %llu bytes, more than half "
                        "the topic's capacity (%llu)", count, (unsigned long long)span,
                        (unsigned long long)r->capacity);
    return 0;
}

int rs_topic_publish_many(rs_topic *t, const struct iovec *msgs, size_t count,
                          int64_t timeout_ns) {
    rs_ring *r = ring_of(t);
    pub_plan plan;
    uint64_t nbytes = 0, at, seq;
    size_t i;
    int rc;
    if (count == 0)
        return 0;
    if ((rc = check_batch(r, msgs, count, &nbytes)) != 0)
        return rc;
    if ((rc = rs__enter(r)) != 0)
        return rc;
    rc = begin_publish(r, msgs, count, rs__deadline(timeout_ns), &plan);
    if (rc == 0) {
        at = plan.start;
        seq = rs_load_relaxed(&r->hdr->producer.messages);
        for (i = 0; i < count; i++)
            memcpy(topic_place(r, &plan, &at, i, msgs[i].iov_len, seq + i, 1),
                   msgs[i].iov_base, msgs[i].iov_len);
        end_publish(r, at, count, nbytes);
    }
    rs__leave(r);
    return rc;
}

int rs_topic_publish(rs_topic *t, const void *data, size_t len, int64_t timeout_ns) {
    struct iovec one;
    one.iov_base = (void *)data;
    one.iov_len = len;
    if (data == NULL && len != 0)
        return rs__fail(RS_INVALID, "data is NULL");
    return rs_topic_publish_many(t, &one, 1, timeout_ns);
}

int rs_topic_reserve(rs_topic *t, size_t len, rs_span *span, int64_t timeout_ns) {
    rs_ring *r = ring_of(t);
    pub_plan plan;
    struct iovec one;
    uint64_t nbytes = 0, at;
    int rc;
    if (span == NULL)
        return rs__fail(RS_INVALID, "span is NULL");
    one.iov_base = NULL;
    one.iov_len = len;
    if ((rc = check_batch(r, &one, 1, &nbytes)) != 0)
        return rc;
    if ((rc = rs__enter(r)) != 0)
        return rc;
    rc = begin_publish(r, &one, 1, rs__deadline(timeout_ns), &plan);
    if (rc != 0) {
        rs__leave(r);
        return rc;
    }
    at = plan.start;
    span->data = topic_place(r, &plan, &at, 0, len, rs_load_relaxed(&r->hdr->producer.messages),
                             0);
    span->len = len;
    span->_position = at;
    span->_forks = rs__forks;
    span->_kind = RS_PUT_LOCK | RS__NOTED;
    span->_has_record = 1;
    span->_lock = r;
    rs__hold_note(r, RS_PUT_LOCK);
    return 0;
}

static int topic_end_reserve(rs_topic *t, rs_span *span, int commit) {
    rs_ring *r = ring_of(t);
    int rc = 0;
    if (span == NULL || span->_lock != r || RS__SPAN_LOCK(span) != RS_PUT_LOCK)
        return rs__fail(RS_INVALID, "not an open reserve() span of this topic");
    span->_lock = NULL;
    if (span->_forks != rs__forks)
        return RS_NOT_OWNER;
    rs__hold_forget(r, RS_PUT_LOCK);
    if (commit && rs__closing(r))
        rc = rs__fail(RS_CLOSED, "the topic was closed inside the reserve() block: the "
                      "message was not published");
    if (commit && rc == 0) {
        note_in_index(r, rs_load_relaxed(&r->hdr->producer.messages),
                      span->_position - record_span(span->len));
        end_publish(r, span->_position, 1, span->len);
    } else {
        rs__unlock(r, RS_PUT_LOCK);
    }
    span->data = NULL;
    rs__leave(r);
    return rc;
}

int rs_topic_commit(rs_topic *t, rs_span *span) {
    return topic_end_reserve(t, span, 1);
}

int rs_topic_cancel(rs_topic *t, rs_span *span) {
    return topic_end_reserve(t, span, 0);
}
