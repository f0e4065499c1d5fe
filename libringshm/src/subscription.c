/* Subscribing to a topic, and a subscription's lifecycle: the entry it
 * takes in the topic's table (a dead subscriber's is taken again), where it
 * starts (the history index), the references of the calls in progress,
 * what rs_wait asks of it, and the table as ls and stats show it
 * (docs/DESIGN.md, "Topics"). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "topic.h"

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
        if (!rs__topic_owner_alive(r, owner) && rs_cas(&r->subs[i].owner, owner, token)) {
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
            rs__topic_free_entry(s->e, owner);
            rs__wake(&r->hdr->space_waitq, RS_WAKE_ALL);
        }
    }
    if (s->forks == rs__forks)
        pthread_mutex_destroy(&s->mu);
    rs_unhold(r);
    free(s);
}

int rs__sub_enter(rs_sub *s) {
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

void rs__sub_leave(rs_sub *s) {
    if (__atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) == 0)
        sub_destroy(s);
}

int rs_sub_close(rs_sub *s) {
    if (s == NULL)
        return 0;
    if (__atomic_exchange_n(&s->closing, 1, __ATOMIC_ACQ_REL) != 0)
        return 0;
    if (s->forks == rs__forks)
        rs__wake_all(&s->r->hdr->data_waitq);   /* our own waiting threads */
    rs__sub_leave(s);
    return 0;
}

void rs__sub_hold(rs_sub *s) {
    __atomic_add_fetch(&s->refs, 1, __ATOMIC_ACQ_REL);
}

void rs__sub_unhold(rs_sub *s) {
    rs__sub_leave(s);
}

/* Take the subscription's mutex (as a reader of it).  A view open in this
 * thread holds it: waiting would be waiting for ourselves. */
int rs__sub_lock(rs_sub *s) {
    if (__atomic_load_n(&s->in_view, __ATOMIC_ACQUIRE) && pthread_equal(s->viewer, pthread_self()))
        return rs__fail(RS_DEADLOCK, "get inside this thread's own view() block of this "
                        "subscription would deadlock");
    pthread_mutex_lock(&s->mu);
    return 0;
}

/* ---- rs_wait's subscriptions (waitmany.c) ----------------------------------- */

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
                          | (rs__topic_owner_alive(r, owner) ? RS_SUB_INFO_ALIVE : 0);
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
