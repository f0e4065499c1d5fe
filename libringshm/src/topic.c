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

#include "counters.h"
#include "internal.h"

#define FIRST_LOOK_NS 10000000LL
#define FLAGS_LIVE (RS_SUB_ACTIVE | RS_SUB_TETHERED)
#define NO_WRAP SIZE_MAX

/* The handle of a subscription: process memory, never in the segment. */
struct rs_sub {
    rs_ring *r;              /* held (rs_hold) until the subscription is freed */
    rs_sub_entry *e;
    uint64_t forks;          /* rs__forks when made: a forked child's copy is not ours */
    pthread_mutex_t mu;      /* one reader of the subscription at a time */
    /* Under mu: where the subscriber reads, and what it expects there. */
    uint64_t position;
    uint64_t seq;
    uint64_t missed_last;
    int in_view;             /* a view of this subscription is open */
    pthread_t viewer;
    uint32_t closing;
    int refs;                /* the opener, each call in progress */
};

static inline rs_ring *ring_of(rs_topic *t) {
    return (rs_ring *)t;
}

static inline uint64_t record_span(uint64_t payload) {
    return (RS_TOPIC_RECORD_HEADER + payload + RS_TOPIC_ALIGN - 1) & ~(uint64_t)(RS_TOPIC_ALIGN - 1);
}

static inline uint32_t load32_acquire(const uint32_t *p) {
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

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

/* Nanoseconds from `then`, a CLOCK_MONOTONIC time read from the segment,
 * to `now`, without a signed overflow whatever the word holds.  A time
 * ahead of now (only a peer's damage, under the put lock) counts as long
 * ago: the look it gates happens, and writes the time again. */
static inline int64_t since(int64_t now, uint64_t then) {
    return then <= (uint64_t)now ? now - (int64_t)then : INT64_MAX;
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
static int owner_alive(rs_ring *r, uint64_t owner) {
    if (owner == 0)
        return 0;
    if (owner == __atomic_load_n(&r->presence->token, __ATOMIC_ACQUIRE))
        return 1;
    return rs_holder_alive(r->presence, (char *)r->hdr, owner);
}

static void free_entry(rs_sub_entry *e, uint64_t owner) {
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
        if (!owner_alive(r, owner)) {
            free_entry(e, owner);
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

/* ---- subscribing --------------------------------------------------------- */

/* Where a new subscriber starts: up to `history` messages back (the index
 * names their positions), else at the head.  With the put lock.  A slot
 * that names no record of its sequence number (a publisher killed after it
 * wrote the slots of its batch, before it published: they are also the
 * slots of the oldest messages of the history) costs that message: the
 * subscriber starts at the oldest one the index still names. */
static int start_of(rs_ring *r, uint64_t *position, uint64_t *seq) {
    uint64_t head = rs_load_relaxed(&r->hdr->producer.position);
    uint64_t tail = rs_load_relaxed(&r->hdr->consumer.position);
    uint64_t next = rs_load_relaxed(&r->hdr->producer.messages);
    uint64_t oldest = rs_load_relaxed(&r->hdr->consumer.messages);
    uint64_t k = r->history, pos, off;
    const rs_topic_record *rec;
    if (head - tail > r->capacity || oldest > next)
        return rs__fail(RS_CORRUPTED, "the topic's positions or counters are impossible");
    if (next - oldest < k)
        k = next - oldest;
    *position = head;
    *seq = next;
    for (; k > 0; k--) {
        pos = r->index[(next - k) % r->history];
        if (pos < tail || pos >= head || (pos & (RS_TOPIC_ALIGN - 1)) != 0)
            continue;
        off = pos & r->mask;
        rec = (const rs_topic_record *)(r->data + off);
        if (rec->kind == RS_KIND_DATA && rec->seq == next - k) {
            *position = pos;
            *seq = next - k;
            return 0;
        }
    }
    return 0;
}

static int claim_entry(rs_ring *r, uint64_t token, uint32_t *index) {
    uint64_t owner;
    uint32_t i;
    for (i = 0; i < RS_TOPIC_SUBSCRIBERS; i++) {
        if (rs_cas(&r->subs[i].owner, 0, token)) {
            *index = i;
            return 0;
        }
    }
    for (i = 0; i < RS_TOPIC_SUBSCRIBERS; i++) {
        owner = rs_load_acquire(&r->subs[i].owner);
        if (!owner_alive(r, owner) && rs_cas(&r->subs[i].owner, owner, token)) {
            rs_add_relaxed(&r->tblock->reaped, 1);
            *index = i;
            return 0;
        }
    }
    return rs__fail(RS_NO_SLOT, "all %u subscriber entries of the topic are taken by live "
                    "subscribers", RS_TOPIC_SUBSCRIBERS);
}

int rs_topic_subscribe(rs_topic *t, unsigned flags, double stall_timeout, int64_t timeout_ns,
                       rs_sub **out) {
    rs_ring *r = ring_of(t);
    struct timespec ts;
    rs_sub_entry *e;
    rs_sub *s;
    uint64_t token, position = 0, seq = 0;
    uint32_t index = 0;
    int rc;
    if (out == NULL)
        return rs__fail(RS_INVALID, "out is NULL");
    if (flags & ~RS_SUB_UNTETHERED)
        return rs__fail(RS_INVALID, "unknown subscribe flags %#x", flags);
    if (!(stall_timeout >= 0) || stall_timeout > 86400)
        return rs__fail(RS_INVALID, "stall_timeout must be in [0, 86400] seconds");
    if (stall_timeout > 0 && (flags & RS_SUB_UNTETHERED))
        return rs__fail(RS_INVALID, "stall_timeout is for tethered subscribers");
    if ((s = calloc(1, sizeof(*s))) == NULL)
        return rs__fail(-12, "out of memory");
    if ((rc = rs__enter(r)) != 0) {
        free(s);
        return rc;
    }
    rc = rs__token(r, &token);
    if (rc == 0)
        rc = rs__lock(r, RS_PUT_LOCK, rs__deadline(timeout_ns), 0);
    if (rc != 0) {
        rs__leave(r);
        free(s);
        return rc == RS__TIMEOUT ? rs__fail(RS_BUSY, "the topic's publishers' lock did not "
                                            "come in time") : rc;
    }
    rc = start_of(r, &position, &seq);
    if (rc == 0)
        rc = claim_entry(r, token, &index);
    if (rc != 0) {
        rs__unlock(r, RS_PUT_LOCK);
        rs__leave(r);
        free(s);
        return rc;
    }
    e = &r->subs[index];
    __atomic_store_n(&e->flags, 0, __ATOMIC_SEQ_CST);
    e->stall_ms = (uint32_t)(stall_timeout * 1000 + 0.5);
    if (stall_timeout > 0 && e->stall_ms == 0)
        e->stall_ms = 1;
    rs_store_release(&e->position, position);
    rs_store_release(&e->seq, seq);
    e->messages = e->bytes = e->missed = e->lags = e->waits = e->timeouts = 0;
    e->pid = getpid();
    clock_gettime(CLOCK_REALTIME, &ts);
    e->since_ns = (uint64_t)ts.tv_sec * RS_NS + (uint64_t)ts.tv_nsec;
    /* Watched from now: a stall is measured from the subscribe at the
     * earliest (0 here had the next look of a waiting publisher untether
     * a subscriber that started behind it at once). */
    e->watched_position = position;
    e->watched_ns = (uint64_t)rs__now();
    __atomic_store_n(&e->flags, RS_SUB_ACTIVE | ((flags & RS_SUB_UNTETHERED) ? 0
                                                                             : RS_SUB_TETHERED),
                     __ATOMIC_SEQ_CST);
    if (!(flags & RS_SUB_UNTETHERED) && position < rs_load_relaxed(&r->tblock->limit))
        rs_store_relaxed(&r->tblock->limit, position);
    rs_add_relaxed(&r->tblock->subscribed, 1);
    rs__unlock(r, RS_PUT_LOCK);

    pthread_mutex_init(&s->mu, NULL);
    s->r = r;
    s->e = e;
    s->forks = rs__forks;
    s->position = position;
    s->seq = seq;
    s->refs = 1;
    rs_hold(r);
    rs__leave(r);
    *out = s;
    return 0;
}

/* ---- a subscription's lifecycle --------------------------------------------- */

static void sub_destroy(rs_sub *s) {
    rs_ring *r = s->r;
    uint64_t owner;
    if (s->forks == rs__forks) {   /* rs_hold keeps the mapping until rs_unhold below */
        owner = rs_load_acquire(&s->e->owner);
        if (owner == __atomic_load_n(&r->presence->token, __ATOMIC_ACQUIRE)) {
            free_entry(s->e, owner);
            rs__wake(&r->hdr->space_waitq, RS_WAKE_ALL);
        }
    }
    if (s->forks == rs__forks)
        pthread_mutex_destroy(&s->mu);
    rs_unhold(r);
    free(s);
}

static int sub_enter(rs_sub *s) {
    __atomic_add_fetch(&s->refs, 1, __ATOMIC_ACQUIRE);
    if (__atomic_load_n(&s->closing, __ATOMIC_ACQUIRE) || rs__closing(s->r)) {
        if (__atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) == 0)
            sub_destroy(s);
        return rs__fail(RS_CLOSED, "the subscription (or its topic) was closed");
    }
    if (s->forks != rs__forks) {
        __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL);
        return rs__fail(RS_NOT_OWNER, "a subscription belongs to the process that made it: "
                        "subscribe again in this one");
    }
    return 0;
}

static void sub_leave(rs_sub *s) {
    if (__atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) == 0)
        sub_destroy(s);
}

static inline int sub_closing(rs_sub *s) {
    return __atomic_load_n(&s->closing, __ATOMIC_ACQUIRE) || rs__closing(s->r);
}

int rs_sub_close(rs_sub *s) {
    if (s == NULL)
        return 0;
    if (__atomic_exchange_n(&s->closing, 1, __ATOMIC_ACQ_REL) != 0)
        return 0;
    if (s->forks == rs__forks)
        rs__wake_all(&s->r->hdr->data_waitq);   /* our own waiting threads */
    sub_leave(s);
    return 0;
}

void rs__sub_hold(rs_sub *s) {
    __atomic_add_fetch(&s->refs, 1, __ATOMIC_ACQ_REL);
}

void rs__sub_unhold(rs_sub *s) {
    sub_leave(s);
}

/* Take the subscription's mutex (as a reader of it).  A view open in this
 * thread holds it: waiting would be waiting for ourselves. */
static int sub_lock(rs_sub *s) {
    if (__atomic_load_n(&s->in_view, __ATOMIC_ACQUIRE) && pthread_equal(s->viewer, pthread_self()))
        return rs__fail(RS_DEADLOCK, "get inside this thread's own view() block of this "
                        "subscription would deadlock");
    pthread_mutex_lock(&s->mu);
    return 0;
}

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
    if ((rc = sub_enter(s)) != 0)
        return rc;
    for (;;) {
        if ((rc = sub_lock(s)) != 0)
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
    sub_leave(s);
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
    if ((rc = sub_enter(s)) != 0)
        return rc;
    if ((rc = sub_lock(s)) != 0) {
        sub_leave(s);
        return rc;
    }
    rc = find_next(s, rs__deadline(timeout_ns), &m);
    if (rc != 0) {
        sub_leave(s);
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
    sub_leave(s);
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
    if ((rc = sub_enter(s)) != 0)
        return rc;
    position = rs_load_acquire(&s->e->position);
    rs__wait_init(&w, rs__deadline(timeout_ns), s->r->spin_ns);
    rc = sub_wait(s, position, &w);
    sub_leave(s);
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

/* ---- rs_wait's subscriptions (waitmany.c) ----------------------------------- */

int rs__sub_enter(rs_sub *s) {
    return sub_enter(s);
}

void rs__sub_leave(rs_sub *s) {
    sub_leave(s);
}

rs_ring *rs__sub_ring(rs_sub *s) {
    return s->r;
}

/* What holds now for `s`, entered: RS_WAIT_DATA when the head is not where
 * the subscriber stands (a message, or RS_LAGGED to report), else
 * RS_WAIT_SHUTDOWN when the topic is shut down and drained for it,
 * RS_WAIT_CLOSED when the subscription or its topic is closing.  The
 * position published in its entry (a view open: the message shown, still
 * to take); sequentially consistent loads after the waiter armed the data
 * queue (waits.c). */
unsigned rs__sub_ready(rs_sub *s) {
    rs_ring *r = s->r;
    uint64_t position;
    if (sub_closing(s))
        return RS_WAIT_CLOSED;
    position = rs_load_seq(&s->e->position);
    if (rs_load_seq(&r->hdr->producer.position) != position)
        return RS_WAIT_DATA;
    if (rs__shut_down(r) && !rs__put_pending(r)
            && rs_load_seq(&r->hdr->producer.position) == position)
        return RS_WAIT_SHUTDOWN;
    return 0;
}

/* ---- what ls and stats show ------------------------------------------------ */

int rs_topic_subscribers(rs_topic *t, rs_sub_info *out, size_t cap) {
    rs_ring *r = ring_of(t);
    uint64_t head, next, owner;
    uint32_t i, flags;
    rs_sub_entry *e;
    rs_sub_info *info;
    int n = 0, rc = rs__enter(r);
    if (rc != 0)
        return rc;
    head = rs_load_acquire(&r->hdr->producer.position);
    next = rs_load_acquire(&r->hdr->producer.messages);
    for (i = 0; i < RS_TOPIC_SUBSCRIBERS; i++) {
        e = &r->subs[i];
        flags = load32_acquire(&e->flags);
        owner = rs_load_acquire(&e->owner);
        if (!(flags & RS_SUB_ACTIVE) || owner == 0)
            continue;
        if ((size_t)n < cap && out != NULL) {
            info = &out[n];
            memset(info, 0, sizeof(*info));
            info->index = i;
            info->flags = ((flags & RS_SUB_TETHERED) ? RS_SUB_INFO_TETHERED : 0)
                          | ((flags & RS_SUB_STALLED) ? RS_SUB_INFO_STALLED : 0)
                          | (owner_alive(r, owner) ? RS_SUB_INFO_ALIVE : 0);
            info->pid = e->pid;
            info->position = rs_load_acquire(&e->position);
            info->lag_bytes = head > info->position ? head - info->position : 0;
            info->lag_messages = next > e->seq ? next - e->seq : 0;
            info->messages = rs_load_relaxed(&e->messages);
            info->bytes = rs_load_relaxed(&e->bytes);
            info->missed = rs_load_relaxed(&e->missed);
            info->lags = rs_load_relaxed(&e->lags);
            info->stall_timeout = e->stall_ms / 1000.0;
            info->since = (double)e->since_ns / 1e9;
        }
        n++;
    }
    rs__leave(r);
    return n;
}

int rs_topic_stats(rs_topic *t, struct rs_topic_stats *out) {
    rs_ring *r = ring_of(t);
    struct rs_stats base;
    uint32_t i, flags;
    int rc = rs_stats(r, &base);
    if (rc != 0)
        return rc;
    memset(out, 0, sizeof(*out));
    out->capacity = base.capacity;
    out->used_bytes = base.used_bytes;
    out->history = r->history;
    out->published = base.messages_put;
    out->bytes_published = base.bytes_put;
    out->overwritten = base.messages_got;
    out->publish_waits = base.put_waits;
    out->publish_timeouts = base.put_timeouts;
    out->lock_recoveries = base.lock_recoveries;
    out->head = base.head;
    out->tail = base.tail;
    out->creator_pid = base.creator_pid;
    out->creator_alive = base.creator_alive;
    out->shutdown = base.shutdown;
    out->ephemeral = base.ephemeral;
    out->recovery_interval = base.recovery_interval;
    out->created = base.created;
    out->subscribed = rs_load_relaxed(&r->tblock->subscribed);
    out->stalls = rs_load_relaxed(&r->tblock->stalls);
    out->reaped = rs_load_relaxed(&r->tblock->reaped);
    out->scans = rs_load_relaxed(&r->tblock->scans);
    for (i = 0; i < RS_TOPIC_SUBSCRIBERS; i++) {
        flags = load32_acquire(&r->subs[i].flags);
        if ((flags & RS_SUB_ACTIVE) && rs_load_acquire(&r->subs[i].owner) != 0) {
            out->subscribers++;
            if (flags & RS_SUB_TETHERED)
                out->tethered++;
        }
    }
    return 0;
}
