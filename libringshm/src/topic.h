/* What the units of topics share (topic.c: making a topic, its table of
 * subscribers and publishing; subscription.c: subscribing and a
 * subscription's lifecycle; topic_read.c: reading): the subscription's
 * handle and small helpers.  docs/DESIGN.md, "Topics". */
#ifndef RINGSHM_TOPIC_H
#define RINGSHM_TOPIC_H

#include <pthread.h>
#include <stdint.h>

#include "counters.h"
#include "internal.h"

#define FIRST_LOOK_NS 10000000LL
#define FLAGS_LIVE (RS_SUB_ACTIVE | RS_SUB_TETHERED)

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

/* Nanoseconds from `then`, a CLOCK_MONOTONIC time read from the segment,
 * to `now`, without a signed overflow whatever the word holds.  A time
 * ahead of now (only a peer's damage, under the put lock) counts as long
 * ago: the look it gates happens, and writes the time again. */
static inline int64_t since(int64_t now, uint64_t then) {
    return then <= (uint64_t)now ? now - (int64_t)then : INT64_MAX;
}

static inline int sub_closing(rs_sub *s) {
    return __atomic_load_n(&s->closing, __ATOMIC_ACQUIRE) || rs__closing(s->r);
}

/* topic.c: is the process named by a subscriber entry's owner alive; free
 * an entry (with the put lock, or its own subscriber's). */
int rs__topic_owner_alive(rs_ring *r, uint64_t owner);
void rs__topic_free_entry(rs_sub_entry *e, uint64_t owner);
/* subscription.c: a call's reference to a subscription (RS_CLOSED,
 * RS_NOT_OWNER in a forked child), and its readers' mutex (RS_DEADLOCK
 * inside this thread's own view). */
int rs__sub_lock(rs_sub *s);

#endif
