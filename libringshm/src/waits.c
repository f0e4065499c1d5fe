/* Waits: how a process sleeps until another one changes something in the
 * segment, and how it is woken.  A place to sleep is an rs_waitq: a
 * `wanted` flag and a futex word (layout.h).  A sleeper spins briefly,
 * then sets `wanted`, re-checks its condition, and sleeps on the futex
 * word; a waker that changed the condition bumps the word and wakes only
 * if `wanted` was set, so a busy ring makes no system call.  Nobody holds
 * a lock while sleeping here (docs/DESIGN.md, "Waits"). */
#define _GNU_SOURCE
#include <errno.h>
#include <time.h>

#include "futex.h"
#include "internal.h"

/* While spinning, the clock is read once every SPIN_CLOCK_MASK + 1 looks. */
#define SPIN_CLOCK_MASK 15u
/* Back-off while spinning: one more PAUSE per look every 2**SHIFT looks, up
 * to MAX (a peer that answers at once is seen at once; a long wait polls
 * the shared line less). */
#define SPIN_BACKOFF_SHIFT 3u
#define SPIN_MAX_PAUSES 32u

void rs__wait_init(rs_wait_state *w, int64_t deadline, int64_t spin_ns) {
    int64_t now = rs__now();
    w->deadline = deadline;
    w->spin_until = 0;
    if (spin_ns > 0 && deadline > now)
        w->spin_until = now + spin_ns < deadline ? now + spin_ns : deadline;
    w->spins = 0;
    w->armed = 0;
    w->check_at = 0;
    w->futex_seen = 0;
}

void rs__wait_start(rs_wait_state *w, int64_t deadline, int64_t spin_ns, uint64_t *waits) {
    if (deadline != 0)
        rs_add_relaxed(waits, 1);
    rs__wait_init(w, deadline, spin_ns);
}

/* One step of a wait whose condition the caller just found false.
 *
 * Spins first; then arms the queue (sets `wanted`, notes the futex word)
 * and returns so the caller re-checks its condition; then sleeps one slice
 * on the futex word.  The flag is set before the re-check and the waker
 * publishes before it reads the flag, both sequentially consistent; a wake
 * between the re-check and the sleep has changed the futex word, so the
 * sleep returns at once: no wake-up is lost.
 *
 * Returns 0 to re-check, RS__TIMEOUT, RS_CLOSED (the handle is closing),
 * or RS_INTERRUPTED (the interrupt hook, asked after every sleep that was
 * not a wake-up, said so).
 * `baton`: several may sleep here (a lock queue), so a woken sleeper
 * re-arms at once, and its own release wakes the next. */
int rs__wait_turn(rs_ring *r, rs_waitq *q, rs_wait_state *w, int baton) {
    int64_t now, until;
    struct timespec ts;
    uint32_t pauses, i;
    int rc;
    if (w->spin_until != 0) {
        pauses = 1 + ((w->spins >> SPIN_BACKOFF_SHIFT) < SPIN_MAX_PAUSES - 1
                          ? (w->spins >> SPIN_BACKOFF_SHIFT) : SPIN_MAX_PAUSES - 1);
        for (i = 0; i < pauses; i++)
            rs_cpu_relax();
        w->spins++;
        if ((w->spins & SPIN_CLOCK_MASK) != 0 || rs__now() < w->spin_until)
            return 0;
        w->spin_until = 0;
    }
    if (rs__closing(r))
        return RS_CLOSED;
    now = rs__now();
    if (now >= w->deadline)
        return RS__TIMEOUT;
    if (!w->armed) {
        rs_store_seq(&q->wanted, 1);
        w->futex_seen = rs_load32_seq(&q->futex);
        w->armed = 1;
        return 0;
    }
    until = w->deadline - now < r->slice_ns ? w->deadline : now + r->slice_ns;
    if (w->check_at != 0 && w->check_at < until)
        until = w->check_at > now ? w->check_at : now;
    rs__timespec(until, &ts);
    rc = rs_futex_wait(&q->futex, w->futex_seen, &ts);
    if (rc == 0 || rc == EAGAIN) {
        if (baton) {
            rs_store_seq(&q->wanted, 1);
            w->futex_seen = rs_load32_seq(&q->futex);
        } else {
            w->armed = 0;
        }
        return 0;
    }
    if (rc != EINTR && rc != ETIMEDOUT) {
        /* The kernel refused the wait: never spin hot, poll instead. */
        ts.tv_sec = 0;
        ts.tv_nsec = 1000000;
        nanosleep(&ts, NULL);
    }
    w->armed = 0;
    /* Not only after EINTR: a signal that came between two sleeps (while
     * spinning or re-checking) interrupted no system call, and its handler
     * must still run within a slice. */
    if (r->interrupt != NULL && r->interrupt(r->interrupt_arg) != 0)
        return RS_INTERRUPTED;
    return 0;
}

/* Wake up to `count` sleepers of `q` if any may sleep there.  Only a
 * sleeper sets `wanted`; the waker clears it, so a sleeper that died costs
 * one wake at most, and a busy ring makes no system call.  With several
 * sleepers the flag says only "somebody": data and space queues wake them
 * all, each re-checks and re-arms; a lock queue wakes one, which re-arms at
 * once (see rs__wait_turn's `baton`). */
void rs__wake_sleepers(rs_waitq *q, int count) {
    /* rs__wake (internal.h) saw `wanted` set. */
    if (rs_exchange(&q->wanted, 0) != 0) {
        rs_add32(&q->futex, 1);
        rs_futex_wake(&q->futex, count);
    }
}

/* Unconditionally (shutdown, close): whatever the flag says. */
void rs__wake_all(rs_waitq *q) {
    rs_store_seq(&q->wanted, 0);
    rs_add32(&q->futex, 1);
    rs_futex_wake(&q->futex, RS_WAKE_ALL);
}
