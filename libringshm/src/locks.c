/* The put and get locks: a 64-bit word holding the owner's token (the
 * liveness slot it took, liveness.h), taken by one compare-and-swap.  A
 * waiter sleeps on the lock's queue and now and then asks whether the owner
 * is still alive; a dead owner's lock is taken over by a compare-and-swap
 * from its token to ours, and its half-done publish repaired (counters.h).
 * Producers serialise on the put lock, consumers on the get lock; a
 * producer never waits for a consumer's lock, nor the reverse. */
#define _GNU_SOURCE
#include <errno.h>

#include "counters.h"
#include "internal.h"

/* The first look at the owner comes soon (a waiter that arrives after the
 * death need not wait a whole slice), but not at once: a lock is mostly
 * busy for the length of a copy, and a look costs system calls. */
#define FIRST_OWNER_CHECK_NS 10000000LL

static inline rs_lock *lock_of(rs_ring *r, int which) {
    return rs__lock_word(r, which);
}

static inline int try_lock(rs_lock *lk, uint64_t token) {
    return rs_cas(&lk->owner, 0, token);
}

/* rs__token (internal.h) found no token: take a slot. */
int rs__token_claim(rs_ring *r, uint64_t *token) {
    int error = 0;
    *token = rs_presence_claim(r->presence, (char *)r->hdr, &error);
    if (*token != 0)
        return 0;
    if (error == EUSERS)
        return rs__fail(RS_NO_SLOT, "all %u liveness slots of this ring are held by live "
                        "processes: no more processes can take its locks", RS_SLOTS);
    errno = error;
    return rs__errno("cannot take a liveness slot of this ring (an OFD lock, fcntl "
                     "F_OFD_SETLK)");
}

/* Wait for the lock; take it over when its owner is dead.  0, RS__TIMEOUT,
 * RS_SHUTDOWN (a producer, once the ring is shut down), RS_CLOSED or
 * RS_INTERRUPTED. */
static int lock_slow(rs_ring *r, int which, uint64_t token, int64_t deadline) {
    rs_lock *lk = lock_of(r, which);
    int producer = which == RS_PUT_LOCK;
    rs_wait_state w;
    uint64_t owner;
    int64_t now;
    int64_t next_check = rs__now() + (r->slice_ns < FIRST_OWNER_CHECK_NS ? r->slice_ns
                                                                           : FIRST_OWNER_CHECK_NS);
    int rc, last_look = 0;
    rs__wait_init(&w, deadline, r->spin_ns);
    for (;;) {
        owner = rs_load_acquire(&lk->owner);
        if (owner == 0) {
            if (try_lock(lk, token))
                return 0;
            continue;
        }
        if (producer && rs__shut_down(r))
            return RS_SHUTDOWN;
        now = w.spin_until != 0 ? 0 : rs__now();   /* spinning: the wait's clock bounds it */
        if (last_look || now >= next_check || (now != 0 && now >= deadline)) {
            if (owner != token && !rs_holder_alive(r->presence, (char *)r->hdr, owner)) {
                if (rs_cas(&lk->owner, owner, token)) {
                    rs_add_relaxed(&lk->recoveries, 1);
                    rs__repair(producer ? &r->hdr->producer : &r->hdr->consumer);
                    if (producer)
                        rs__repair_tag(&r->hdr->producer);
                    if (producer && r->topic)   /* a topic's tail is the publishers' */
                        rs__repair(&r->hdr->consumer);
                    return 0;
                }
                continue;
            }
            if (last_look)
                return RS__TIMEOUT;
            next_check = now + r->slice_ns;
        }
        w.check_at = next_check;
        rc = rs__wait_turn(r, &lk->waitq, &w, 1);
        if (rc == RS__TIMEOUT && !last_look) {
            /* The deadline can pass inside the wait (a spin, or a preemption
             * between our clock and the wait's) without a look at the owner:
             * look once more before failing, or a dead holder makes a
             * non-blocking call fail instead of taking over. */
            last_look = 1;
            continue;
        }
        if (rc != 0)
            return rc;
    }
}

/* rs__lock (internal.h) found the lock taken: the rest of its work. */
int rs__lock_contended(rs_ring *r, int which, uint64_t token, int64_t deadline, int try_only) {
    int rc;
    if (rs__held_by_me(r, which)) {
        return rs__fail(RS_DEADLOCK, "%s inside this thread's own %s() block of this ring "
                        "would deadlock", which == RS_PUT_LOCK ? "put" : "get",
                        which == RS_PUT_LOCK ? "reserve" : "view");
    } else if (try_only) {
        return RS__AGAIN;
    } else {
        rc = lock_slow(r, which, token, rs__lock_deadline(deadline));
    }
    if (rc == 0 && which == RS_PUT_LOCK && rs__shut_down(r)) {
        rs__unlock(r, which);
        rc = RS_SHUTDOWN;
    }
    return rc;
}

/* The locks this thread holds across calls (inside its reserve() and
 * view() blocks), by presence: every handle of one segment in a process
 * shares its presence, so a put through a second handle inside a block of
 * the first is recognised too.  Few blocks are ever open at once in one
 * thread; a block past the table's end is simply not recognised. */
#define HELD_MAX 16
static _Thread_local struct {
    const rs_presence *presence;
    int which;
} held[HELD_MAX];
static _Thread_local int held_count;

int rs__held_by_me(const rs_ring *r, int which) {
    int i;
    for (i = 0; i < held_count; i++)
        if (held[i].presence == r->presence && held[i].which == which)
            return 1;
    return 0;
}

void rs__hold_note(rs_ring *r, int which) {
    if (held_count < HELD_MAX) {
        held[held_count].presence = r->presence;
        held[held_count].which = which;
        held_count++;
    }
}

void rs__hold_forget(rs_ring *r, int which) {
    int i;
    for (i = held_count - 1; i >= 0; i--) {
        if (held[i].presence == r->presence && held[i].which == which) {
            held[i] = held[--held_count];
            return;
        }
    }
}

/* In a forked child the blocks are the parent's (spans end with
 * RS_NOT_OWNER): the child's thread holds nothing. */
void rs__held_after_fork(void) {
    held_count = 0;
}
