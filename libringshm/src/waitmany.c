/* Waiting on many rings at once: rs_wait.  One thread sleeps in one
 * futex_waitv(2) (Linux 5.16) on the futex words of every ring's data (or
 * space) queue, plus an optional poke word its owner uses to say "the set
 * changed".  As a single wait (waits.c), the waiter arms each queue's
 * `wanted` flag, re-checks every ring, then sleeps: a publish after the
 * re-check sees the flag, bumps the word and ends the sleep, so no wake-up
 * is lost, and a busy ring still makes no system call.  The waiter takes
 * nothing and holds no lock: a stopped or killed waiter delays nobody.
 *
 * An item may be a subscription of a topic instead of a ring (rs_waiter.sub,
 * ring NULL): it sleeps on its topic's data queue, which every publish
 * wakes, and is ready when the head is not where the subscriber stands.
 *
 * More words than one futex_waitv takes (128): the words are split into
 * groups, one helper thread sleeps on each group after the first, and
 * whichever wakes first wakes the others through a word they all share.
 * Without futex_waitv (ENOSYS, or RINGSHM_NO_FUTEX_WAITV=1 in the
 * environment): the waiter sleeps on one word at a time for at most
 * POLL_SLICE_NS, then looks at every ring again: never a busy loop, but a
 * wake-up may come that much late. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449
#endif
#ifndef FUTEX_32
#define FUTEX_32 2
#endif

#define WAITV_MAX 128        /* words one futex_waitv takes */
#define GROUP 127            /* words per group past that, leaving one for the shared word */
#define POLL_SLICE_NS 2000000LL

/* As <linux/futex.h>'s struct futex_waitv, spelled here so that older
 * headers build too. */
struct waitv {
    uint64_t val;
    uint64_t uaddr;
    uint32_t flags;
    uint32_t reserved;
};

static int no_waitv = -1;   /* -1: not known yet; 1: fall back */

static int waitv_missing(void) {
    const char *forced;
    if (__atomic_load_n(&no_waitv, __ATOMIC_RELAXED) < 0) {
        forced = getenv("RINGSHM_NO_FUTEX_WAITV");
        __atomic_store_n(&no_waitv, forced != NULL && forced[0] == '1', __ATOMIC_RELAXED);
    }
    return __atomic_load_n(&no_waitv, __ATOMIC_RELAXED);
}

int rs_wait_uses_futex_waitv(void) {
    return !waitv_missing();
}

void rs_poke_init(rs_poke *poke) {
    poke->word = 0;
}

uint32_t rs_poke_seen(const rs_poke *poke) {
    return __atomic_load_n(&poke->word, __ATOMIC_SEQ_CST);
}

void rs_poke_send(rs_poke *poke) {
    __atomic_add_fetch(&poke->word, 1, __ATOMIC_SEQ_CST);
    syscall(SYS_futex, &poke->word, FUTEX_WAKE_PRIVATE, RS_WAKE_ALL, NULL, NULL, 0);
}

/* The ring of an item: its own, or its subscription's topic. */
static inline rs_ring *waiter_ring(const rs_waiter *w) {
    return w->ring != NULL ? w->ring : rs__sub_ring(w->sub);
}

/* A subscription sleeps on its topic's data queue, as rs_sub_wait. */
static inline rs_waitq *queue_of(const rs_waiter *w) {
    rs_ring *r = waiter_ring(w);
    return (w->events & RS_WAIT_ROOM) ? &r->hdr->space_waitq : &r->hdr->data_waitq;
}

static inline int enter_item(rs_waiter *w) {
    return w->ring != NULL ? rs__enter(w->ring) : rs__sub_enter(w->sub);
}

static inline void leave_item(rs_waiter *w) {
    if (w->ring != NULL)
        rs__leave(w->ring);
    else
        rs__sub_leave(w->sub);
}

/* What holds now of what `w` waits for. */
static unsigned ready_now(rs_waiter *w) {
    rs_ring *r = w->ring;
    unsigned ready = 0;
    if (r == NULL)
        return rs__sub_ready(w->sub);
    if (rs__closing(r))
        return RS_WAIT_CLOSED;
    /* Shut down is news for a producer at once, for a consumer once
     * drained (get.c): a get before that would find nothing to take. */
    if ((w->events & RS_WAIT_ROOM) ? rs__shut_down(r) : rs__drained(r))
        ready |= RS_WAIT_SHUTDOWN;
    if ((w->events & RS_WAIT_DATA)
            && rs_load_seq(&r->hdr->producer.position) != rs_load_seq(&r->hdr->consumer.position))
        ready |= RS_WAIT_DATA;
    if ((w->events & RS_WAIT_ROOM) && rs__fits_now(r, w->room))
        ready |= RS_WAIT_ROOM;
    return ready;
}

static size_t look(rs_waiter *items, size_t count) {
    size_t i, n = 0;
    for (i = 0; i < count; i++) {
        items[i].ready = ready_now(&items[i]);
        n += items[i].ready != 0;
    }
    return n;
}

/* One group's sleep, in the caller's thread or a helper thread. */
typedef struct {
    struct waitv *words;
    unsigned count;
    uint32_t *shared;        /* the word every group also sleeps on */
    uint32_t shared_seen;
    const struct timespec *until;
    int error;               /* 0: woken; else errno (EAGAIN, ETIMEDOUT, EINTR, ...) */
    pthread_t thread;
} group;

static void sleep_group(group *g) {
    long rc;
    g->words[g->count].val = g->shared_seen;
    g->words[g->count].uaddr = (uint64_t)(uintptr_t)g->shared;
    g->words[g->count].flags = FUTEX_32 | FUTEX_PRIVATE_FLAG;
    g->words[g->count].reserved = 0;
    rc = syscall(SYS_futex_waitv, g->words, g->count + 1, 0, g->until, CLOCK_MONOTONIC);
    g->error = rc >= 0 ? 0 : errno;
    /* Whoever ends first ends the others. */
    __atomic_add_fetch(g->shared, 1, __ATOMIC_SEQ_CST);
    syscall(SYS_futex, g->shared, FUTEX_WAKE_PRIVATE, RS_WAKE_ALL, NULL, NULL, 0);
}

static void *group_thread(void *arg) {
    sleep_group(arg);
    return NULL;
}

/* Sleep on every word in `words` (count of them) until one changes, the
 * deadline, or a signal: an errno-like code (0 woken). */
static int sleep_all(struct waitv *words, size_t count, const struct timespec *until) {
    /* One call takes 128 words; past that each group keeps one for the
     * word the groups share. */
    size_t groups = count <= WAITV_MAX ? 1 : (count + GROUP - 1) / GROUP, i;
    uint32_t shared = 0;
    group *g;
    struct waitv *vectors;
    sigset_t all, before;
    int error, started = 0;
    if (groups <= 1) {
        long rc = syscall(SYS_futex_waitv, words, (unsigned)count, 0, until, CLOCK_MONOTONIC);
        return rc >= 0 ? 0 : errno;
    }
    g = calloc(groups, sizeof(*g));
    vectors = calloc(groups * (GROUP + 1), sizeof(*vectors));
    if (g == NULL || vectors == NULL) {
        free(g);
        free(vectors);
        return ENOMEM;
    }
    for (i = 0; i < groups; i++) {
        g[i].words = vectors + i * (GROUP + 1);
        g[i].count = (unsigned)(i + 1 < groups ? GROUP : count - i * GROUP);
        memcpy(g[i].words, words + i * GROUP, g[i].count * sizeof(*words));
        g[i].shared = &shared;
        g[i].shared_seen = 0;
        g[i].until = until;
    }
    /* The helpers block every signal: a signal then interrupts the
     * caller's own sleep, which runs the interrupt hook (Ctrl-C). */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &before);
    for (i = 1; i < groups; i++) {
        if (pthread_create(&g[i].thread, NULL, group_thread, &g[i]) != 0)
            break;
        started++;
    }
    pthread_sigmask(SIG_SETMASK, &before, NULL);
    if ((size_t)started + 1 < groups) {
        /* No thread for every group: wake those started and poll instead. */
        __atomic_add_fetch(&shared, 1, __ATOMIC_SEQ_CST);
        syscall(SYS_futex, &shared, FUTEX_WAKE_PRIVATE, RS_WAKE_ALL, NULL, NULL, 0);
        g[0].error = EAGAIN;
    } else {
        sleep_group(&g[0]);
    }
    for (i = 1; i <= (size_t)started; i++)
        pthread_join(g[i].thread, NULL);
    /* A signal first (the hook must run), then a wake-up, then the end of
     * the slice. */
    error = g[0].error;
    for (i = 1; i <= (size_t)started && error != 0 && error != EINTR; i++)
        if (g[i].error == 0 || g[i].error == EAGAIN || g[i].error == EINTR)
            error = g[i].error;
    free(g);
    free(vectors);
    return error;
}

int rs_wait(rs_waiter *items, size_t count, const rs_poke *poke, uint32_t poke_seen,
            int64_t timeout_ns) {
    int64_t deadline = rs__deadline(timeout_ns), until, slice = RS_NO_DEADLINE;
    struct waitv *words = NULL;
    struct timespec ts;
    size_t i, entered = 0, ready = 0, nwords;
    int rc = 0, error;
    rs_waitq *q;
    if (count > 0 && items == NULL)
        return rs__fail(RS_INVALID, "items is NULL");
    for (i = 0; i < count; i++) {
        if (items[i].ring == NULL) {
            if (items[i].sub == NULL || items[i].events != RS_WAIT_DATA)
                return rs__fail(RS_INVALID, "item %zu: no ring: a subscription (sub) and "
                                "RS_WAIT_DATA", i);
            continue;
        }
        if ((items[i].events & (RS_WAIT_DATA | RS_WAIT_ROOM)) == 0
                || (items[i].events & ~(unsigned)(RS_WAIT_DATA | RS_WAIT_ROOM)) != 0
                || items[i].events == (RS_WAIT_DATA | RS_WAIT_ROOM))
            return rs__fail(RS_INVALID, "item %zu: a ring and one of RS_WAIT_DATA, "
                            "RS_WAIT_ROOM", i);
        if (items[i].ring->topic)
            return rs__fail(RS_WRONG_KIND, "item %zu: a topic's handle, not a ring", i);
        if ((items[i].events & RS_WAIT_ROOM) && items[i].room > items[i].ring->max_payload)
            return rs__fail(RS_TOO_LARGE, "item %zu: room for %zu bytes never comes "
                            "(max_message_size %llu)", i, items[i].room,
                            (unsigned long long)items[i].ring->max_payload);
    }
    for (entered = 0; entered < count; entered++) {
        if ((rc = enter_item(&items[entered])) != 0)
            goto out;
        if (waiter_ring(&items[entered])->slice_ns < slice)
            slice = waiter_ring(&items[entered])->slice_ns;
    }
    words = calloc(count + 1, sizeof(*words) * (1 + (count + 1) / GROUP));
    if (words == NULL) {
        rc = rs__fail(-ENOMEM, "out of memory");
        goto out;
    }
    for (;;) {
        if ((ready = look(items, count)) != 0)
            break;
        if (poke != NULL && rs_poke_seen(poke) != poke_seen) {
            rc = RS_POKED;
            goto out;
        }
        if (rs__now() >= deadline) {
            rc = RS_EMPTY;
            goto out;
        }
        /* Arm, then look again: a publish from here on wakes us. */
        nwords = 0;
        for (i = 0; i < count; i++) {
            q = queue_of(&items[i]);
            rs_store_seq(&q->wanted, 1);
            words[nwords].val = rs_load32_seq(&q->futex);
            words[nwords].uaddr = (uint64_t)(uintptr_t)&q->futex;
            words[nwords].flags = FUTEX_32;   /* shared: the wakers are other processes */
            words[nwords].reserved = 0;
            nwords++;
        }
        if (poke != NULL) {
            words[nwords].val = poke_seen;
            words[nwords].uaddr = (uint64_t)(uintptr_t)&poke->word;
            words[nwords].flags = FUTEX_32 | FUTEX_PRIVATE_FLAG;
            words[nwords].reserved = 0;
            nwords++;
        }
        if ((ready = look(items, count)) != 0)
            break;
        /* No ring sets a slice when there is none (a wait on a poke
         * alone, or on nothing): sleep to the deadline then. */
        until = slice == RS_NO_DEADLINE ? deadline : rs__now() + slice;
        if (nwords == 0) {
            /* Nothing to wake us: just the deadline (a signal ends the
             * sleep early; the loop looks at the clock again). */
            rs__timespec(until, &ts);
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
            continue;
        }
        if (waitv_missing()) {
            /* One word at a time, briefly: never a busy loop. */
            if (until > rs__now() + POLL_SLICE_NS)
                until = rs__now() + POLL_SLICE_NS;
            if (until > deadline)
                until = deadline;
            rs__timespec(until, &ts);
            error = rs_futex_wait((uint32_t *)(uintptr_t)words[nwords - 1].uaddr,
                                  (uint32_t)words[nwords - 1].val, &ts);
        } else {
            if (until > deadline)
                until = deadline;
            rs__timespec(until, &ts);
            error = sleep_all(words, nwords, &ts);
            if (error == ENOSYS) {
                __atomic_store_n(&no_waitv, 1, __ATOMIC_RELAXED);
                continue;
            }
        }
        if (error != 0 && error != EAGAIN && count > 0 && waiter_ring(&items[0])->interrupt != NULL
                && waiter_ring(&items[0])->interrupt(waiter_ring(&items[0])->interrupt_arg) != 0) {
            rc = RS_INTERRUPTED;
            goto out;
        }
        if (error == ENOMEM) {
            rc = rs__fail(-ENOMEM, "out of memory");
            goto out;
        }
    }
    rc = (int)ready;
    for (i = 0; i < count; i++) {
        if (items[i].ready & RS_WAIT_CLOSED) {
            rc = rs__fail(RS_CLOSED, "%s %zu of the wait was closed",
                          items[i].ring != NULL ? "ring" : "subscription", i);
            break;
        }
    }
out:
    free(words);
    for (i = 0; i < entered; i++)
        leave_item(&items[i]);
    return rc;
}
