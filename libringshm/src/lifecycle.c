/* The life of a handle and of a ring: references and close, shutdown,
 * counters and snapshots, JoinableQueue's task count, and the fork
 * handlers.  Every call enters the handle (rs__enter) and leaves it; close
 * marks it closing, wakes every wait of it, and the last reference to go
 * frees it, so a call in progress in another thread never finds its
 * memory gone. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "records.h"

/* How long shutdown waits for a put that is publishing as it is called. */
#define SHUTDOWN_PATIENCE_NS 1000000000LL

/* Forks this process is the child of: a span notes the count when it
 * opens, and a forked child's copy of it sees another count (a counter,
 * not getpid(): that is a system call). */
uint64_t rs__forks = 0;

static void before_fork(void) {
    rs_presences_before_fork();
}

static void after_fork_parent(void) {
    rs_presences_after_fork_parent();
}

static void after_fork_child(void) {
    rs__forks++;
    rs__held_after_fork();
    rs_presences_after_fork();
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void register_atfork(void) {
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}

void rs__register_atfork(void) {
    pthread_once(&atfork_once, register_atfork);
}

void rs_options_init(rs_options *options) {
    memset(options, 0, sizeof(*options));
    options->mode = 0600;
    options->reserve = 1;
    options->recovery_interval = 0.1;
    options->spin = sysconf(_SC_NPROCESSORS_ONLN) > 1 ? 50.0 : 0.0;
}

void rs__destroy(rs_ring *r) {
    if (r->unmap != NULL && r->map_base != NULL)
        r->unmap(r->map_base, r->map_length);
    if (r->owns_presence)
        rs_presence_release(r->presence);
    if (r->fd >= 0)
        close(r->fd);
    free(r->unlink_path);
    free(r);
}

static void wake_everyone(rs_ring *r) {
    rs_header *h = r->hdr;
    rs__wake_all(&h->put_lock.waitq);
    rs__wake_all(&h->get_lock.waitq);
    rs__wake_all(&h->data_waitq);
    rs__wake_all(&h->space_waitq);
    rs__wake_all(&h->joined_waitq);
}

/* Remove the name this handle made, if it is still the file of our
 * presence: a name somebody made again since is left alone. */
static void unlink_same(rs_ring *r) {
    struct stat st;
    if (lstat(r->unlink_path, &st) == 0 && (uint64_t)st.st_dev == (uint64_t)r->presence->dev
            && (uint64_t)st.st_ino == (uint64_t)r->presence->ino)
        unlink(r->unlink_path);
}

int rs_close(rs_ring *r) {
    if (r == NULL)
        return 0;
    if (__atomic_exchange_n(&r->closing, 1, __ATOMIC_ACQ_REL) != 0)
        return 0;
    /* Wake the handle's own waiting threads now (sleepers of other
     * processes wake too, re-check and sleep again: harmless). */
    wake_everyone(r);
    /* The name is the creating process's to remove, as Ring's creator pid
     * in Python: a forked child's rs_close of the inherited handle detaches. */
    if (r->forks == rs__forks) {
        if (r->unlink_path != NULL)
            unlink_same(r);
        if (r->unlink_sysv_id >= 0)
            shmctl(r->unlink_sysv_id, IPC_RMID, NULL);
    }
    rs__leave(r);
    return 0;
}

/* For a binding whose mapping may already be gone (a garbage collector
 * tearing an object down): close without touching the segment, and drop
 * the opener's reference. */
void rs__abandon(rs_ring *r) {
    if (__atomic_exchange_n(&r->closing, 1, __ATOMIC_ACQ_REL) == 0)
        rs__leave(r);
}

void rs_hold(rs_ring *r) {
    __atomic_add_fetch(&r->refs, 1, __ATOMIC_ACQUIRE);
}

void rs_unhold(rs_ring *r) {
    rs__leave(r);
}

void rs_set_interrupt(rs_ring *r, rs_interrupt_fn hook, void *arg) {
    r->interrupt_arg = arg;
    r->interrupt = hook;
}

uint64_t rs_capacity(const rs_ring *r) {
    return r->capacity;
}

uint64_t rs_max_message_size(const rs_ring *r) {
    return r->max_payload;
}

int rs_is_shutdown(rs_ring *r) {
    return (rs_load_acquire(&r->hdr->flags) & RS_FLAG_SHUTDOWN) != 0;
}

/* A put that took its lock before the flag was set may still be copying:
 * wait until it lets the lock go, so nothing is published after shutdown
 * returns.  Bounded: a holder that is stopped must not hang us.  Our own
 * token names every thread of this process: the holder is this thread only
 * inside its own reserve() block (waiting would be waiting for ourselves),
 * else another thread, alive since we are. */
static void let_publishing_put_finish(rs_ring *r, int64_t deadline) {
    struct timespec pause = {0, 20000};
    uint64_t owner;
    while (rs__now() < deadline) {
        owner = rs_load_acquire(&r->hdr->put_lock.owner);
        if (owner == 0)
            return;
        if (owner == __atomic_load_n(&r->presence->token, __ATOMIC_ACQUIRE)) {
            if (rs__held_by_me(r, RS_PUT_LOCK))
                return;
        } else if (!rs_holder_alive(r->presence, (char *)r->hdr, owner)) {
            return;
        }
        nanosleep(&pause, NULL);
    }
}

int rs_shutdown(rs_ring *r, int flags) {
    rs_span span;
    int rc;
    if (flags & RS_SHUTDOWN_IMMEDIATE)
        RS__REFUSE_TOPIC(r);   /* a topic's messages are its subscribers' */
    if ((rc = rs__enter(r)) != 0)
        return rc;
    rs_fetch_or(&r->hdr->flags, RS_FLAG_SHUTDOWN);
    wake_everyone(r);
    let_publishing_put_finish(r, rs__now() + SHUTDOWN_PATIENCE_NS);
    if (flags & RS_SHUTDOWN_IMMEDIATE) {
        /* Discard what is held: consume every message. */
        while ((rc = rs__view(r, &span, 0, 0)) == 0) {
            while (rs_view_next(r, &span) == 0) {
            }
            rs_release(r, &span);
        }
        rc = rc == RS_SHUTDOWN || rc == RS_EMPTY ? 0 : rc;
    }
    rs__leave(r);
    return rc;
}

uint64_t rs__message_count(rs_ring *r) {
    uint64_t got = rs_load_acquire(&r->hdr->consumer.messages);
    uint64_t put = rs_load_acquire(&r->hdr->producer.messages);
    uint64_t most = r->capacity / RS_RECORD_HEADER;
    if (put <= got)
        return 0;
    /* A record takes 8 bytes at least: more messages than that is a damaged
     * counter; never report an absurd length. */
    return put - got < most ? put - got : most;
}

int64_t rs_count(rs_ring *r) {
    int64_t n;
    int rc;
    RS__REFUSE_TOPIC(r);
    rc = rs__enter(r);
    if (rc != 0)
        return rc;
    n = (int64_t)rs__message_count(r);
    rs__leave(r);
    return n;
}

int rs_full(rs_ring *r) {
    uint64_t head, tail, pos, need;
    int rc;
    RS__REFUSE_TOPIC(r);
    rc = rs__enter(r);
    if (rc != 0)
        return rc;
    tail = rs_load_acquire(&r->hdr->consumer.position);
    head = rs_load_acquire(&r->hdr->producer.position);
    if (r->max_messages && rs__message_count(r) >= r->max_messages) {
        rc = 1;
    } else {
        pos = head & r->mask;
        need = rs__record_span(1);
        if (pos + need > r->capacity)
            need += r->capacity - pos;
        rc = head - tail > r->capacity || head - tail + need > r->capacity;
    }
    rs__leave(r);
    return rc;
}

int rs_stats(rs_ring *r, struct rs_stats *s) {
    rs_header *h;
    uint64_t flags;
    int rc = rs__enter(r);
    if (rc != 0)
        return rc;
    h = r->hdr;
    memset(s, 0, sizeof(*s));
    s->head = rs_load_acquire(&h->producer.position);
    s->tail = rs_load_acquire(&h->consumer.position);
    s->capacity = r->capacity;
    s->used_bytes = s->head >= s->tail ? (s->head - s->tail < r->capacity ? s->head - s->tail
                                                                          : r->capacity) : 0;
    s->messages = rs__message_count(r);
    s->messages_put = rs_load_relaxed(&h->producer.messages);
    s->bytes_put = rs_load_relaxed(&h->producer.bytes);
    s->messages_got = rs_load_relaxed(&h->consumer.messages);
    s->bytes_got = rs_load_relaxed(&h->consumer.bytes);
    s->put_waits = rs_load_relaxed(&h->producer.waits);
    s->get_waits = rs_load_relaxed(&h->consumer.waits);
    s->put_timeouts = rs_load_relaxed(&h->producer.timeouts);
    s->get_timeouts = rs_load_relaxed(&h->consumer.timeouts);
    s->lock_recoveries = rs_load_relaxed(&h->put_lock.recoveries)
                         + rs_load_relaxed(&h->get_lock.recoveries);
    s->creator_pid = h->creator_pid;
    s->creator_alive = h->creator_pid > 0 && h->creator_pid <= INT32_MAX
                       && rs__process_alive((int)h->creator_pid, h->creator_start_time);
    flags = rs_load_relaxed(&h->flags);
    s->shutdown = (flags & RS_FLAG_SHUTDOWN) != 0;
    s->ephemeral = (flags & RS_FLAG_EPHEMERAL) != 0;
    s->version = h->version;
    s->max_messages = r->max_messages;
    s->recovery_interval = (double)r->slice_ns / 1e9;
    s->spin = (double)r->spin_ns / 1e3;
    s->created = (double)h->created_ns / 1e9;
    s->bridge_sent = rs_load_relaxed(&h->bridge.sent);
    s->bridge_acked = rs_load_relaxed(&h->bridge.acked);
    s->bridge_received = rs_load_relaxed(&h->bridge.received);
    s->bridge_redelivered = rs_load_relaxed(&h->bridge.redelivered);
    s->bridge_put = rs_load_relaxed(&h->bridge.put);
    rs__leave(r);
    return 0;
}

int rs_wait_data(rs_ring *r, int64_t timeout_ns) {
    rs_wait_state w;
    int rc;
    RS__REFUSE_TOPIC(r);
    rc = rs__enter(r);
    if (rc != 0)
        return rc;
    rs__wait_init(&w, rs__deadline(timeout_ns), r->spin_ns);
    rc = rs__wait_data(r, &w);
    rs__leave(r);
    return rc == RS__TIMEOUT ? RS_EMPTY : rc;
}

/* ---- JoinableQueue's task count -----------------------------------------
 * Unfinished tasks = messages put - tasks done.  The producer's count is
 * read through its intent, so a producer killed between publishing and
 * counting leaves the count exact (docs/FORMAT.md). */

uint64_t rs__messages_put(rs_ring *r) {
    rs_side *p = &r->hdr->producer;
    uint64_t head, intent_position, intent_messages, counted;
    int attempt;
    for (attempt = 0; attempt < 64; attempt++) {
        head = rs_load_seq(&p->position);
        intent_position = rs_load_acquire(&p->intent.position);
        intent_messages = rs_load_acquire(&p->intent.messages);
        /* The intent is rewritten before each publish: read it twice so its
         * two words belong to the same publish. */
        if (rs_load_acquire(&p->intent.position) != intent_position)
            continue;
        if (head == intent_position) {
            counted = rs_load_acquire(&p->messages);
            return intent_messages > counted ? intent_messages : counted;
        }
        break;
    }
    return rs_load_acquire(&p->messages);
}

uint64_t rs_unfinished_tasks(rs_ring *r) {
    uint64_t done, put;
    if (r->topic || rs__enter(r) != 0)
        return 0;
    done = rs_load_seq(&r->hdr->tasks_done);
    put = rs__messages_put(r);
    rs__leave(r);
    return put > done ? put - done : 0;
}

int rs_task_done(rs_ring *r, uint64_t count) {
    uint64_t done;
    int rc;
    RS__REFUSE_TOPIC(r);
    rc = rs__enter(r);
    if (rc != 0)
        return rc;
    for (;;) {
        done = rs_load_seq(&r->hdr->tasks_done);
        if (done + count > rs__messages_put(r)) {
            rs__leave(r);
            return rs__fail(RS_INVALID, "task_done() called too many times");
        }
        if (rs_cas(&r->hdr->tasks_done, done, done + count))
            break;
    }
    rs__wake_all(&r->hdr->joined_waitq);
    rs__leave(r);
    return 0;
}

int rs_wait_joined(rs_ring *r, int64_t timeout_ns) {
    rs_wait_state w;
    int rc;
    RS__REFUSE_TOPIC(r);
    rc = rs__enter(r);
    if (rc != 0)
        return rc;
    rs__wait_init(&w, rs__deadline(timeout_ns), r->spin_ns);
    while (rs_load_seq(&r->hdr->tasks_done) < rs__messages_put(r)) {
        rc = rs__wait_turn(r, &r->hdr->joined_waitq, &w, 0);
        if (rc != 0)
            break;
    }
    rs__leave(r);
    return rc == RS__TIMEOUT ? RS_BUSY : rc;
}

/* The tag of the last tagged put_many (0: none), under the put lock, so a
 * tagged put that a dead producer left half-published is settled first. */
int rs__last_tag(rs_ring *r, int64_t deadline, uint64_t *tag) {
    int rc;
    RS__REFUSE_TOPIC(r);
    rc = rs__enter(r);
    if (rc != 0)
        return rc;
    rc = rs__lock(r, RS_PUT_LOCK, deadline, 0);
    if (rc == 0) {
        *tag = rs_load_acquire(&r->hdr->producer.tag.last);
        rs__unlock(r, RS_PUT_LOCK);
    }
    rs__leave(r);
    return rc == RS__TIMEOUT ? RS_BUSY : rc;
}

int rs__random_identity(unsigned char identity[16]) {
    size_t got = 0;
    ssize_t n;
    while (got < 16) {
        n = getrandom(identity + got, 16 - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return rs__errno("getrandom");
        }
        got += (size_t)n;
    }
    return 0;
}

/* ---- for people and tools: the header's identity and bridge counters, and
 * who holds the locks -------------------------------------------------------- */

void rs__identity(rs_ring *r, unsigned char identity[16]) {
    memcpy(identity, r->hdr->identity, 16);
}

/* Add `n` to bridge counter `index` (rs_bridge's fields in order):
 * statistics only, relaxed. */
int rs__bridge_add(rs_ring *r, unsigned index, uint64_t n) {
    if (index >= sizeof(rs_bridge) / sizeof(uint64_t) - 1)
        return rs__fail(RS_INVALID, "no bridge counter %u", index);
    rs_add_relaxed(&r->hdr->bridge.sent + index, n);
    return 0;
}

/* The pids holding the put and get locks (0: free; -1: a holder whose slot
 * was taken again), as each holder sees itself in its PID namespace. */
void rs__lock_owners(rs_ring *r, int64_t *put_owner, int64_t *get_owner) {
    *put_owner = rs_holder_pid((char *)r->hdr, rs_load_relaxed(&r->hdr->put_lock.owner));
    *get_owner = rs_holder_pid((char *)r->hdr, rs_load_relaxed(&r->hdr->get_lock.owner));
}
