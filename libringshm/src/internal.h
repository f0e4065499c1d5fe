/* What the units of libringshm share and users never see: the handle, the
 * per-call working state, and the units' entry points into each other.
 *
 * The handle (struct rs_ring) holds only what outlives calls: the mapping,
 * the settings read once from the header, the presence that names this
 * process in lock words, and two position hints.  Everything one call
 * works with lives on that call's stack or in the rs_span it hands back. */
#ifndef RINGSHM_INTERNAL_H
#define RINGSHM_INTERNAL_H

#include <stdint.h>
#include <sys/types.h>

#include "ringshm.h"
#include "atomic.h"
#include "layout.h"
#include "futex.h"
#include "liveness.h"


/* The steps of the hot path that GCC would keep as calls (each has several
 * callers): inlined into each, so that a put or a get is one function. */
#define RS__HOT static inline __attribute__((always_inline))

_Static_assert(RS_TOPIC_MAX_SUBSCRIBERS == RS_TOPIC_SUBSCRIBERS, "the table's size is public");

/* Internal statuses, positive so that they never meet a public code. */
#define RS__TIMEOUT 1   /* the wait ended: Full for a producer, Empty for a consumer */
#define RS__AGAIN 2     /* a *_try call would have to wait */

typedef int (*rs_unmap_fn)(void *base, size_t length);

struct rs_ring {
    rs_header *hdr;
    char *data;
    uint64_t capacity;
    uint64_t mask;
    uint64_t max_payload;
    uint64_t max_messages;
    int64_t slice_ns;
    int64_t spin_ns;
    rs_presence *presence;
    /* Hints, shared by the handle's threads: each side caches the other's
     * counter and reads the shared line only when the hint says full or
     * empty.  Release stores and acquire loads, so a thread that trusts a
     * hint another thread stored sees the records that thread saw. */
    uint64_t cached_head;
    uint64_t cached_tail;
    /* The lifecycle: `closing` ends every wait of this handle; `refs`
     * counts the opener, each call in progress, each open span and each
     * rs_hold; the last to let go frees. */
    uint32_t closing;
    int refs;
    /* The highest head this handle has published or found at attach, kept
     * by put lock holders: the head never goes back, so a lower one is
     * damage (put.c, head_went_back). */
    uint64_t put_seen;
    /* What the handle owns.  A binding that maps the segment itself passes
     * no unmap function: the mapping stays the binding's. */
    void *map_base;
    size_t map_length;
    rs_unmap_fn unmap;
    int owns_presence;
    int fd;                 /* the segment's descriptor, or -1 */
    char *unlink_path;      /* created without persist: removed at close */
    int unlink_sysv_id;     /* ... a System V segment (-1: none) */
    uint64_t forks;         /* rs__forks when made: only that process unlinks */
    rs_interrupt_fn interrupt;
    void *interrupt_arg;
    /* A topic's (topic.c): its block, table and index; `history` as read
     * at attach (the header's copy is not trusted again). */
    int topic;
    uint32_t history;
    rs_topic_block *tblock;
    rs_sub_entry *subs;
    uint64_t *index;
};

/* ---- errors: rs_detail() ------------------------------------------------ */
int rs__fail(int code, const char *format, ...) __attribute__((format(printf, 2, 3)));
int rs__errno(const char *what);   /* -errno, with `what` and strerror as the detail */
/* RS_WRONG_KIND: a topic's handle (rs_topic_ring) given to a ring call that
 * would read or write the log as a ring's records. */
int rs__not_a_ring(void);
#define RS__REFUSE_TOPIC(r)                                                             \
    do {                                                                                \
        if (__builtin_expect((r)->topic, 0))                                            \
            return rs__not_a_ring();                                                    \
    } while (0)

#include "clock.h"

/* ---- lifecycle (lifecycle.c) -------------------------------------------- */
static inline int rs__enter(rs_ring *r) {
    __atomic_add_fetch(&r->refs, 1, __ATOMIC_ACQUIRE);
    if (__atomic_load_n(&r->closing, __ATOMIC_ACQUIRE)) {
        __atomic_sub_fetch(&r->refs, 1, __ATOMIC_RELEASE);
        return RS_CLOSED;
    }
    return 0;
}
void rs__destroy(rs_ring *r);
void rs__abandon(rs_ring *r);
static inline void rs__leave(rs_ring *r) {
    if (__atomic_sub_fetch(&r->refs, 1, __ATOMIC_ACQ_REL) == 0)
        rs__destroy(r);
}
static inline int rs__closing(const rs_ring *r) {
    return __atomic_load_n(&r->closing, __ATOMIC_RELAXED) != 0;
}
static inline int rs__shut_down(const rs_ring *r) {
    return (rs_load_relaxed(&r->hdr->flags) & RS_FLAG_SHUTDOWN) != 0;
}
extern uint64_t rs__forks;   /* forks this process is the child of */
void rs__register_atfork(void);

/* ---- waits (waits.c) ---------------------------------------------------- */
typedef struct {
    int64_t deadline;
    int64_t spin_until;
    int64_t check_at;     /* wake by then at the latest (0: a slice) */
    uint32_t futex_seen;  /* the queue's futex word when armed */
    uint32_t spins;
    int armed;
} rs_wait_state;

void rs__wait_init(rs_wait_state *w, int64_t deadline, int64_t spin_ns);
/* The first wait of a call counts in `waits` (a non-blocking call did not wait). */
void rs__wait_start(rs_wait_state *w, int64_t deadline, int64_t spin_ns, uint64_t *waits);
int rs__wait_turn(rs_ring *r, rs_waitq *q, rs_wait_state *w, int baton);
void rs__wake_sleepers(rs_waitq *q, int count);
void rs__wake_all(rs_waitq *q);
/* Wake up to `count` sleepers of `q` if any may sleep there (waits.c says
 * how).  Inline: every publish and unlock makes this one load, and a busy
 * ring no more. */
static inline void rs__wake(rs_waitq *q, int count) {
    if (rs_load_seq(&q->wanted) != 0)
        rs__wake_sleepers(q, count);
}

/* ---- locks (locks.c) ---------------------------------------------------- */
#define RS_PUT_LOCK 0
#define RS_GET_LOCK 1
/* The fast paths are inline (one load for the token, one compare-and-swap
 * for the lock, an exchange and a load to let it go); locks.c has the rest. */
int rs__token_claim(rs_ring *r, uint64_t *token);
int rs__lock_contended(rs_ring *r, int which, uint64_t token, int64_t deadline, int try_only);

static inline rs_lock *rs__lock_word(rs_ring *r, int which) {
    return which == RS_PUT_LOCK ? &r->hdr->put_lock : &r->hdr->get_lock;
}

/* This process's lock token for the segment: taken with its first lock
 * (again after fork, liveness.h), then one load. */
static inline int rs__token(rs_ring *r, uint64_t *token) {
    *token = __atomic_load_n(&r->presence->token, __ATOMIC_ACQUIRE);
    return *token != 0 ? 0 : rs__token_claim(r, token);
}

static inline void rs__unlock(rs_ring *r, int which) {
    rs_lock *lk = rs__lock_word(r, which);
    /* An exchange, not a store: it orders the release before the read of
     * `wanted` (a release store would let that read pass it). */
    rs_exchange(&lk->owner, 0);
    rs__wake(&lk->waitq, 1);
    /* After shutdown, consumers wait for the last put holder to let go
     * before they conclude "drained" (get.c, rs__drained): a put that
     * published has woken them; one that dropped its message wakes them
     * here. */
    if (which == RS_PUT_LOCK && rs__shut_down(r))
        rs__wake(&r->hdr->data_waitq, RS_WAKE_ALL);
}

/* Take a lock: one compare-and-swap when it is free; else (unless
 * `try_only`) wait for it until the deadline (at least a millisecond).
 * The put lock is refused once the ring is shut down (RS_SHUTDOWN).
 * 0, RS__AGAIN (try_only), RS__TIMEOUT, RS_SHUTDOWN, RS_CLOSED,
 * RS_INTERRUPTED, RS_DEADLOCK, RS_NO_SLOT or -errno. */
static inline int rs__lock(rs_ring *r, int which, int64_t deadline, int try_only) {
    uint64_t token;
    int rc = rs__token(r, &token);
    if (rc != 0)
        return rc;
    if (!rs_cas(&rs__lock_word(r, which)->owner, 0, token))
        return rs__lock_contended(r, which, token, deadline, try_only);
    if (which == RS_PUT_LOCK && rs__shut_down(r)) {
        rs__unlock(r, which);
        return RS_SHUTDOWN;
    }
    return 0;
}
/* A zero-copy block of this thread holds that lock of this segment. */
int rs__held_by_me(const rs_ring *r, int which);
void rs__hold_note(rs_ring *r, int which);
void rs__hold_forget(rs_ring *r, int which);
void rs__held_after_fork(void);

/* ---- records (records.h has the layout; get.c reads them) ----------------- */

/* ---- the put side (put.c) and the get side (get.c) ------------------------ */
/* Flags of rs__reserve and rs__view. */
#define RS__TRY 1     /* RS__AGAIN instead of a wait */
/* The caller ends the span before it runs anything that could call the
 * library on this thread (a copy; no callback, no Python code): the span is
 * not noted in the thread's table of held locks (rs__hold_note), which
 * only a block that runs the caller's code inside needs. */
#define RS__BRIEF 2
/* The caller keeps the handle's memory alive across the call and until
 * the span ends (a binding that holds it, rs_hold, and counts its own calls
 * in progress): no reference is taken for them (two locked instructions a
 * call fewer); a closed handle is still refused (RS_CLOSED). */
#define RS__HELD 4
/* span->_kind: the lock (RS_PUT_LOCK, RS_GET_LOCK), and RS__NOTED when
 * the span is in the thread's table. */
#define RS__NOTED 0x100u
#define RS__UNCOUNTED 0x200u   /* span->_kind: RS__HELD, no reference to let go */
#define RS__SPAN_LOCK(span) ((span)->_kind & 0xFFu)
/* rs__enter and rs__leave, or only the check that the handle is open when
 * the caller holds the handle (RS__HELD in `flags`, put.c and get.c). */
static inline int rs__enter_as(rs_ring *r, int flags) {
    if (flags & RS__HELD)
        return __atomic_load_n(&r->closing, __ATOMIC_ACQUIRE) ? RS_CLOSED : 0;
    return rs__enter(r);
}
static inline void rs__leave_as(rs_ring *r, int flags) {
    if (!(flags & RS__HELD))
        rs__leave(r);
}
int rs__reserve(rs_ring *r, size_t len, rs_span *span, int64_t deadline, int flags);
int rs__put_many(rs_ring *r, const struct iovec *messages, size_t count, uint64_t tag,
                 int64_t deadline);
int rs__view(rs_ring *r, rs_span *span, int64_t deadline, int flags);
int rs__window(rs_ring *r, rs_span *span, int64_t deadline, uint64_t *consumed);
int rs__window_close(rs_ring *r, rs_span *span);
int rs__last_tag(rs_ring *r, int64_t deadline, uint64_t *tag);
int rs__wait_data(rs_ring *r, rs_wait_state *w);
int rs__drained(rs_ring *r);
/* A put (or publish) that took its lock before a shutdown may still publish. */
int rs__put_pending(rs_ring *r);
int rs__fits_now(rs_ring *r, uint64_t payload);
uint64_t rs__messages_put(rs_ring *r);
int rs__random_identity(unsigned char identity[16]);
void rs__identity(rs_ring *r, unsigned char identity[16]);
int rs__bridge_add(rs_ring *r, unsigned index, uint64_t n);
void rs__lock_owners(rs_ring *r, int64_t *put_owner, int64_t *get_owner);
uint64_t rs__message_count(rs_ring *r);

/* ---- segments (segment.c) ------------------------------------------------- */
int rs__attach(void *base, size_t length, rs_presence *presence, rs_ring **out);
int rs__claim_blank(void *base, size_t length, int whole);
int rs__magic_present(const void *base);
void rs__init_header(void *base, uint64_t capacity, double recovery_interval, double spin,
                     uint64_t max_messages, int ephemeral, const rs_liveness_id *liveness,
                     const unsigned char identity[16]);
int rs__validate(const void *base, size_t mapped_length, int exact,
                 const rs_liveness_id *liveness);
/* A topic's header (topic.c); 0 a ring, 1 a topic, -1 neither. */
void rs__init_topic_header(void *base, uint64_t capacity, double recovery_interval,
                           double spin, int ephemeral, const rs_liveness_id *liveness,
                           const unsigned char identity[16], uint32_t history);
int rs__validate_topic(const void *base, size_t mapped_length, int exact,
                       const rs_liveness_id *liveness);
int rs__segment_kind(const void *base);
/* For bindings whose subscription objects outlive rs_sub_close (topic.c):
 * an extra reference that keeps the rs_sub (and its table entry) until
 * rs__sub_unhold, so that a call another thread is about to make on it
 * never meets freed memory.  rs_sub_close still ends every call at once. */
void rs__sub_hold(rs_sub *s);
void rs__sub_unhold(rs_sub *s);
void rs__adopt_header(rs_ring *r);

/* ---- subscriptions for rs_wait (topic.c) ---------------------------------- */
int rs__sub_enter(rs_sub *s);   /* 0, RS_CLOSED or RS_NOT_OWNER */
void rs__sub_leave(rs_sub *s);
rs_ring *rs__sub_ring(rs_sub *s);
unsigned rs__sub_ready(rs_sub *s);

/* What a create makes, or an open expects: a ring (topic 0) or a topic. */
typedef struct {
    int topic;
    uint32_t history;
} rs__shape;
int rs__create_name_as(const char *name, uint64_t capacity, const rs_options *options,
                       const rs__shape *shape, rs_ring **out);
int rs__open_name_as(const char *name, const rs_options *options, const rs__shape *shape,
                     rs_ring **out);
int rs__create_path_as(const char *path, uint64_t capacity, const rs_options *options,
                       const rs__shape *shape, rs_ring **out);
int rs__open_path_as(const char *path, const rs_options *options, const rs__shape *shape,
                     rs_ring **out);
int rs__anonymous_as(uint64_t capacity, const rs_options *options, const rs__shape *shape,
                     rs_ring **out);

/* ---- processes (process.c) ---------------------------------------------- */
uint64_t rs__proc_start_time(int pid, char *state);
int rs__process_alive(int pid, uint64_t start_time);

#endif
