/* ringshm.h: the public API of libringshm, the ringshm ring protocol in C.
 *
 * A ring is a byte ring buffer in a shared segment (a POSIX shared-memory
 * name, a file, an anonymous shared mapping, or a System V segment) that any
 * number of producer and consumer processes and threads use at once, in C or
 * in Python (the Python package `ringshm` is a binding over this library).
 * Each message goes to exactly one consumer; a process may die at any
 * instruction, holding a lock or not, and the others go on.  The byte format
 * is docs/FORMAT.md of the ringshm sources; the design docs/DESIGN.md.
 *
 * Conventions
 *   - Every call returns 0 (or a count) on success and a negative code on
 *     failure: one of the RS_* codes below, or -errno.  rs_strerror() names
 *     any of them; rs_detail() says more about the last failure of the
 *     calling thread (which check a damaged segment failed, which file).
 *   - No call aborts, prints, or raises a signal, on bad arguments or on a
 *     segment that a peer damaged.
 *   - Timeouts are relative, in nanoseconds: RS_FOREVER waits for ever, 0
 *     does not wait (a lock that is busy for the length of a copy is still
 *     waited for, at most a millisecond).
 *   - One rs_ring * may be used by any number of threads at once.  Every
 *     call keeps its working state on its own stack or in the rs_span it
 *     hands back; the handle holds only what outlives calls.
 *
 * Build: `make -C libringshm` makes libringshm.a, libringshm.so and
 * ringshm.pc; then `cc prog.c $(pkg-config --cflags --libs ringshm)`.
 * From an installed Python package: `cc prog.c -I$(python -c 'import
 * ringshm; print(ringshm.get_include())') -L... -lringshm`.
 */
#ifndef RINGSHM_H
#define RINGSHM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && !defined(RS_STATIC_ONLY)
#define RS_API __attribute__((visibility("default")))
#else
#define RS_API
#endif

#define RS_VERSION_MAJOR 0
#define RS_VERSION_MINOR 3
#define RS_VERSION_PATCH 0
/* The segment layout version this library reads and writes (FORMAT.md). */
#define RS_LAYOUT_VERSION 2

/* Status codes: 0 is success; these, or -errno. */
#define RS_OK 0
#define RS_FULL (-1001)        /* no room in time */
#define RS_EMPTY (-1002)       /* no message in time */
#define RS_SHUTDOWN (-1003)    /* the ring was shut down (and, for a get, is drained) */
#define RS_TOO_LARGE (-1004)   /* a message or batch that can never fit */
#define RS_CLOSED (-1005)      /* the handle was closed (before or during the call) */
#define RS_CORRUPTED (-1006)   /* not a ring, unknown version, or a record that fails validation */
#define RS_PERMISSION (-1007)  /* owned by another user, a symbolic link, or not a regular file */
#define RS_NOT_FOUND (-1008)   /* no ring of that name, path or key */
#define RS_EXISTS (-1009)      /* create of a name that exists */
#define RS_NO_SPACE (-1010)    /* too little room in the backing store to reserve the capacity */
#define RS_INVALID (-1011)     /* a bad argument (rs_detail() names it) */
#define RS_DEADLOCK (-1012)    /* this thread holds the lock the call needs (inside its own block) */
#define RS_NOT_OWNER (-1013)   /* a span opened by the process this one was forked from */
#define RS_NO_SLOT (-1014)     /* every liveness slot of the ring is held by a live process */
#define RS_INTERRUPTED (-1015) /* the interrupt hook asked the wait to stop (rs_set_interrupt) */
#define RS_BUSY (-1016)        /* the lock did not come in time (bridge windows, rs_last_tag) */
/* -1017 is RS_POKED (rs_wait, below). */
#define RS_LAGGED (-1018)      /* an untethered subscriber was overrun: rs_sub_missed() says by how many */
#define RS_WRONG_KIND (-1019)  /* a topic opened as a ring, or a ring as a topic */

#define RS_FOREVER ((int64_t)-1)

#define RS_MIN_CAPACITY 4096ull
#define RS_MAX_CAPACITY (1ull << 40)

typedef struct rs_ring rs_ring;

/* Options of the create and open calls; rs_options_init() fills the
 * defaults, and NULL means the defaults. */
typedef struct rs_options {
    unsigned mode;               /* permission bits of a new segment: 0600 */
    int exist_ok;                /* create: open the ring when it exists */
    int persist;                 /* create: keep the name after rs_close (else unlinked) */
    int reserve;                 /* create: reserve the capacity in the store (1) */
    int any_owner;               /* open: accept a segment of another user (0) */
    double recovery_interval;    /* create: seconds to take over a dead holder's lock (0.1) */
    double spin;                 /* create: microseconds to spin before sleeping (50; 0 on one CPU) */
    uint64_t max_messages;       /* create: a limit on messages held, 0 = none */
} rs_options;

RS_API void rs_options_init(rs_options *options);

/* Making and attaching.  A name is a POSIX shared-memory name without '/'
 * (the file /dev/shm/ringshm.NAME, which Python's Ring.create(NAME) uses
 * too); a path a regular file (never a symbolic link); a System V key as
 * shmget(2)'s.  The capacity is rounded up to a power of two, at least
 * RS_MIN_CAPACITY; rs_capacity() says what was made. */
RS_API int rs_create_name(const char *name, uint64_t capacity, const rs_options *options, rs_ring **out);
RS_API int rs_open_name(const char *name, const rs_options *options, rs_ring **out);
RS_API int rs_create_path(const char *path, uint64_t capacity, const rs_options *options, rs_ring **out);
RS_API int rs_open_path(const char *path, const rs_options *options, rs_ring **out);
RS_API int rs_create_sysv(int key, uint64_t capacity, const rs_options *options, rs_ring **out);
RS_API int rs_open_sysv(int key, const rs_options *options, rs_ring **out);
/* MAP_SHARED | MAP_ANONYMOUS: shared with children forked after it. */
RS_API int rs_anonymous(uint64_t capacity, const rs_options *options, rs_ring **out);
/* Remove a name, path or key; processes attached keep working. */
RS_API int rs_unlink_name(const char *name);
RS_API int rs_unlink_path(const char *path);
RS_API int rs_unlink_sysv(int key);

/* Close this handle: every call of it in progress in other threads returns
 * RS_CLOSED at once (waits included), an open span's end returns RS_CLOSED
 * and publishes or consumes nothing, and the memory goes when the last of
 * them has returned.  A ring made by rs_create_* without `persist` loses its
 * name here, when the process that made it closes it (a forked child's
 * rs_close of the inherited handle only detaches).  No new call may start
 * on the handle once rs_close returned. */
RS_API int rs_close(rs_ring *r);
/* For bindings whose objects outlive rs_close: an extra reference that
 * keeps the handle's memory (not the ring) until rs_unhold. */
RS_API void rs_hold(rs_ring *r);
RS_API void rs_unhold(rs_ring *r);

/* Producing.  rs_put copies one message in; rs_put_many a batch, all or
 * nothing, contiguous (no other producer's message lands inside it). */
RS_API int rs_put(rs_ring *r, const void *data, size_t len, int64_t timeout_ns);
RS_API int rs_put_many(rs_ring *r, const struct iovec *messages, size_t count, int64_t timeout_ns);

/* Consuming.  rs_get copies the oldest message into `out` (RS_TOO_LARGE and
 * the message stays when out_cap is too small; *out_len then says how much
 * is needed).  rs_get_many waits for one message, then takes as many as are
 * ready and fit: their bytes one after another in `out`, their lengths in
 * lengths[]; returns the count. */
RS_API int rs_get(rs_ring *r, void *out, size_t out_cap, size_t *out_len, int64_t timeout_ns);
RS_API int rs_get_many(rs_ring *r, void *out, size_t out_cap, size_t *lengths, size_t max_messages,
                int64_t timeout_ns);

/* A window into the ring, for zero-copy writes and reads.  `data` and
 * `len` are the caller's; the rest belongs to the library. */
typedef struct rs_span {
    void *data;
    size_t len;
    uint64_t _position;   /* reserve: the head after the record; view: the current record */
    uint64_t _first;      /* view: the first record of the read */
    uint64_t _messages;   /* view: records consumed before the current one */
    uint64_t _bytes;
    uint64_t _forks;
    uint32_t _kind;
    uint32_t _has_record;
    void *_lock;
} rs_span;

/* rs_reserve takes room for one message of `len` bytes and the put lock;
 * the caller writes span.data, then rs_commit publishes it or rs_cancel
 * drops it.  rs_view takes the get lock and shows the oldest message;
 * rs_release consumes it, rs_keep leaves it.  The lock is held until the
 * span ends: keep spans short.  A forked child's copy of a span ends with
 * RS_NOT_OWNER and does nothing. */
RS_API int rs_reserve(rs_ring *r, size_t len, rs_span *span, int64_t timeout_ns);
RS_API int rs_commit(rs_ring *r, rs_span *span);
RS_API int rs_cancel(rs_ring *r, rs_span *span);
RS_API int rs_view(rs_ring *r, rs_span *span, int64_t timeout_ns);
RS_API int rs_release(rs_ring *r, rs_span *span);
RS_API int rs_keep(rs_ring *r, rs_span *span);
/* Inside a view: consume the shown message (as far as this view goes) and
 * show the next one without waiting: RS_EMPTY when there is none (the span
 * then shows nothing; rs_release or rs_keep still ends it).  rs_keep then
 * publishes the messages stepped past; rs_rewind first makes them unread. */
RS_API int rs_view_next(rs_ring *r, rs_span *span);
RS_API void rs_rewind(rs_ring *r, rs_span *span);

/* The whole ring. */
#define RS_SHUTDOWN_IMMEDIATE 1   /* rs_shutdown: also discard what is held */
RS_API int rs_shutdown(rs_ring *r, int flags);
RS_API int rs_is_shutdown(rs_ring *r);

struct rs_stats {
    uint64_t capacity, used_bytes, messages;
    uint64_t messages_put, bytes_put, messages_got, bytes_got;
    uint64_t put_waits, get_waits, put_timeouts, get_timeouts, lock_recoveries;
    int64_t creator_pid;
    int creator_alive, shutdown, ephemeral;
    uint32_t version;
    uint64_t max_messages;
    double recovery_interval, spin, created;
    uint64_t head, tail;
    uint64_t bridge_sent, bridge_acked, bridge_received, bridge_redelivered, bridge_put;
};

RS_API int rs_stats(rs_ring *r, struct rs_stats *out);
/* Snapshots: messages held now; would a 1-byte message not fit now. */
RS_API int64_t rs_count(rs_ring *r);
RS_API int rs_full(rs_ring *r);
RS_API uint64_t rs_capacity(const rs_ring *r);
RS_API uint64_t rs_max_message_size(const rs_ring *r);

/* Waiting without taking anything, holding no lock: until the ring holds a
 * message or is shut down and drained (0), or until a message of `len`
 * bytes would fit or the ring is shut down (rs_wait_room).  RS_EMPTY /
 * RS_FULL on timeout.  "Drained" means empty with no put still able to
 * publish: a put that took its lock before the shutdown is waited for (as
 * long as its process lives), so a consumer iterating to RS_SHUTDOWN
 * receives every message whose put returned 0. */
RS_API int rs_wait_data(rs_ring *r, int64_t timeout_ns);
RS_API int rs_wait_room(rs_ring *r, size_t len, int64_t timeout_ns);

/* Waiting on many rings at once (futex_waitv, Linux 5.16; a polling
 * fallback elsewhere, see rs_wait_uses_futex_waitv).  Each item names a
 * ring and what to wait for: a message (RS_WAIT_DATA) or room for `room`
 * payload bytes (RS_WAIT_ROOM).  rs_wait returns the number of items whose
 * `ready` is now non-zero (RS_WAIT_DATA or RS_WAIT_ROOM as asked, and
 * RS_WAIT_SHUTDOWN for a ring shut down: for RS_WAIT_DATA, shut down and
 * drained, see rs_wait_data), RS_EMPTY on timeout, RS_CLOSED when
 * a handle was closed during the wait, RS_POKED when `poke` was poked.  It
 * takes nothing (a get after it may find the ring empty: another consumer
 * was faster) and holds no lock.  Any number of items: past 128 words (one
 * per item, and the poke's) they are split among helper threads.  `poke` (NULL: none) lets another thread
 * end the wait when the set of rings changes: read rs_poke_seen() before
 * deciding the set, pass it as `poke_seen`; a poke after that read ends the
 * wait.
 *
 * An item may be a subscription of a topic (rs_topic_subscribe) instead of
 * a ring: `ring` NULL, `sub` the subscription, events RS_WAIT_DATA.  It is
 * ready with RS_WAIT_DATA when the subscriber has something to take (a
 * message, or an RS_LAGGED to report: its next get will not wait), with
 * RS_WAIT_SHUTDOWN when the topic is shut down and the subscriber has
 * taken everything (its get returns RS_SHUTDOWN); the wait returns
 * RS_CLOSED when the subscription or its topic was closed.  Its word is the
 * topic's data queue: one futex_waitv covers rings and subscriptions alike.
 * The subscription must be this process's (RS_NOT_OWNER in a forked
 * child).  `sub` is not read when `ring` is set, so callers that fill only
 * the ring fields are unaffected.  A ring item naming a topic's handle
 * (rs_topic_ring) fails with RS_WRONG_KIND. */
#define RS_POKED (-1017)
#define RS_WAIT_DATA 1u
#define RS_WAIT_ROOM 2u
#define RS_WAIT_SHUTDOWN 4u
#define RS_WAIT_CLOSED 8u

typedef struct rs_waiter {
    rs_ring *ring;          /* NULL: the item is `sub` */
    unsigned events;        /* RS_WAIT_DATA or RS_WAIT_ROOM (a subscription: RS_WAIT_DATA) */
    size_t room;            /* RS_WAIT_ROOM: payload bytes that must fit */
    unsigned ready;         /* out */
    struct rs_sub *sub;     /* read only when ring is NULL: a topic's subscription */
} rs_waiter;

typedef struct rs_poke {
    uint32_t word;
} rs_poke;

RS_API void rs_poke_init(rs_poke *poke);
RS_API uint32_t rs_poke_seen(const rs_poke *poke);
RS_API void rs_poke_send(rs_poke *poke);
RS_API int rs_wait(rs_waiter *items, size_t count, const rs_poke *poke, uint32_t poke_seen,
                   int64_t timeout_ns);
/* 1 when rs_wait sleeps in futex_waitv; 0 when it polls (the kernel lacks
 * futex_waitv, or RINGSHM_NO_FUTEX_WAITV=1 was in the environment at the
 * first wait). */
RS_API int rs_wait_uses_futex_waitv(void);

/* JoinableQueue's task count, kept in the segment: messages put minus tasks
 * done.  rs_task_done fails with RS_INVALID when it would go below zero. */
RS_API uint64_t rs_unfinished_tasks(rs_ring *r);
RS_API int rs_task_done(rs_ring *r, uint64_t count);
RS_API int rs_wait_joined(rs_ring *r, int64_t timeout_ns);

/* A hook a sleeping wait calls after each sleep that was not a wake-up (a
 * signal, or the end of a slice of recovery_interval): nonzero ends the
 * wait with RS_INTERRUPTED.  Python's binding runs its signal handlers here
 * (Ctrl-C).  Without a hook, a signal only ends the current sleep. */
typedef int (*rs_interrupt_fn)(void *arg);
RS_API void rs_set_interrupt(rs_ring *r, rs_interrupt_fn hook, void *arg);

/* ---- Publish/subscribe: topics ------------------------------------------
 *
 * A topic is one log in one segment: every subscriber receives every
 * message published after it subscribed (and up to `history` messages from
 * before).  Publishers append under the same crash-proof lock as rs_put.
 * A tethered subscriber loses nothing: a publisher waits (holding no lock)
 * until the slowest live tethered subscriber has taken what would be
 * overwritten.  An untethered one never makes a publisher wait: once
 * overrun, its next get returns RS_LAGGED and rs_sub_missed() says exactly
 * how many messages it lost; the get after continues with the oldest
 * message still held.  A subscriber whose process dies stops holding
 * publishers back within the recovery interval.  At most
 * RS_TOPIC_MAX_SUBSCRIBERS subscribers at once (RS_NO_SLOT past that).
 *
 * rs_topic_open_* of a ring, or rs_open_* of a topic, fail with
 * RS_WRONG_KIND and change nothing.  A subscription belongs to the process
 * that made it (a forked child's copy returns RS_NOT_OWNER); any number of
 * its threads may use it (a view holds it for the view's thread). */
typedef struct rs_topic rs_topic;
typedef struct rs_sub rs_sub;

#define RS_TOPIC_MAX_SUBSCRIBERS 128
#define RS_TOPIC_MAX_HISTORY 65536

/* Options are rs_options' (max_messages is refused: a topic has none);
 * `history` is how many recent messages a new subscriber receives first. */
RS_API int rs_topic_create_name(const char *name, uint64_t capacity, uint32_t history,
                                const rs_options *options, rs_topic **out);
RS_API int rs_topic_open_name(const char *name, const rs_options *options, rs_topic **out);
RS_API int rs_topic_create_path(const char *path, uint64_t capacity, uint32_t history,
                                const rs_options *options, rs_topic **out);
RS_API int rs_topic_open_path(const char *path, const rs_options *options, rs_topic **out);
RS_API int rs_topic_anonymous(uint64_t capacity, uint32_t history, const rs_options *options,
                              rs_topic **out);
/* As rs_close; subscriptions made through it must be closed first. */
RS_API int rs_topic_close(rs_topic *t);
/* The topic's handle as a ring handle, for the calls that apply to both:
 * rs_capacity, rs_max_message_size, rs_set_interrupt, rs_hold/rs_unhold,
 * rs_stats, rs_is_shutdown, rs_shutdown (without RS_SHUTDOWN_IMMEDIATE),
 * rs_close.  Any other ring call on it (a put, get, view, reserve, commit,
 * wait, count, task) fails with RS_WRONG_KIND and changes nothing. */
RS_API rs_ring *rs_topic_ring(rs_topic *t);

/* Publishing: as rs_put / rs_put_many (a batch is atomic and contiguous). */
RS_API int rs_topic_publish(rs_topic *t, const void *data, size_t len, int64_t timeout_ns);
RS_API int rs_topic_publish_many(rs_topic *t, const struct iovec *messages, size_t count,
                                 int64_t timeout_ns);
RS_API int rs_topic_reserve(rs_topic *t, size_t len, rs_span *span, int64_t timeout_ns);
RS_API int rs_topic_commit(rs_topic *t, rs_span *span);
RS_API int rs_topic_cancel(rs_topic *t, rs_span *span);
/* Ends the topic for everyone: publishing returns RS_SHUTDOWN; each
 * subscriber receives what it still has to take, then RS_SHUTDOWN. */
RS_API int rs_topic_shutdown(rs_topic *t);
RS_API int rs_topic_is_shutdown(rs_topic *t);

/* Subscribing.  RS_SUB_UNTETHERED: never slow publishers.  stall_timeout
 * (seconds, 0: none): a tethered subscriber that takes nothing for that
 * long while a publisher waits on it is untethered (it sees RS_LAGGED once
 * overrun).  timeout_ns bounds the wait for the publishers' lock. */
#define RS_SUB_UNTETHERED 1u
RS_API int rs_topic_subscribe(rs_topic *t, unsigned flags, double stall_timeout,
                              int64_t timeout_ns, rs_sub **out);
/* As rs_get / rs_get_many / rs_view / rs_release / rs_wait_data, with
 * RS_LAGGED (nothing taken) when overrun.  rs_sub_keep leaves the viewed
 * message for the next get.  An untethered subscriber's view may be
 * overwritten while it is open: rs_sub_release then returns RS_LAGGED
 * (what was shown may be torn; it counts as missed). */
RS_API int rs_sub_get(rs_sub *s, void *out, size_t out_cap, size_t *out_len, int64_t timeout_ns);
RS_API int rs_sub_get_many(rs_sub *s, void *out, size_t out_cap, size_t *lengths,
                           size_t max_messages, int64_t timeout_ns);
RS_API int rs_sub_view(rs_sub *s, rs_span *span, int64_t timeout_ns);
RS_API int rs_sub_release(rs_sub *s, rs_span *span);
RS_API int rs_sub_keep(rs_sub *s, rs_span *span);
RS_API int rs_sub_wait(rs_sub *s, int64_t timeout_ns);
/* The count of the last RS_LAGGED this subscription returned. */
RS_API uint64_t rs_sub_missed(rs_sub *s);
/* Messages published and not yet taken by this subscriber. */
RS_API uint64_t rs_sub_lag(rs_sub *s);
RS_API int rs_sub_tethered(rs_sub *s);
/* Leave the topic: publishers stop waiting for it at once.  Every call of
 * it in progress in other threads returns RS_CLOSED. */
RS_API int rs_sub_close(rs_sub *s);

/* One subscriber as the topic's table shows it (rs_topic_subscribers). */
typedef struct rs_sub_info {
    uint32_t index;
    uint32_t flags;        /* RS_SUB_INFO_* */
    int64_t pid;
    uint64_t position, lag_bytes, lag_messages;
    uint64_t messages, bytes, missed, lags;
    double stall_timeout, since;
} rs_sub_info;
#define RS_SUB_INFO_TETHERED 1u
#define RS_SUB_INFO_STALLED 2u    /* untethered by its stall_timeout */
#define RS_SUB_INFO_ALIVE 4u      /* its process is alive */

struct rs_topic_stats {
    uint64_t capacity, used_bytes, history;
    uint64_t published, bytes_published;   /* messages and payload bytes published */
    uint64_t overwritten;                  /* messages no longer held (freed for room) */
    uint64_t publish_waits, publish_timeouts, lock_recoveries;
    uint64_t subscribers, tethered, subscribed, stalls, reaped, scans;
    uint64_t head, tail;
    int64_t creator_pid;
    int creator_alive, shutdown, ephemeral;
    double recovery_interval, created;
};
RS_API int rs_topic_stats(rs_topic *t, struct rs_topic_stats *out);
/* Fills up to `cap` entries of `out`; returns how many subscribers there are. */
RS_API int rs_topic_subscribers(rs_topic *t, rs_sub_info *out, size_t cap);

RS_API const char *rs_strerror(int code);
/* What the calling thread's last failure was about, in words ("" when
 * nothing more is known).  Valid until the thread's next call. */
RS_API const char *rs_detail(void);

#ifdef __cplusplus
}
#endif

#endif
