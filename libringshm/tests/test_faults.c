/* Processes that die holding a lock, and forked children that end their
 * parent's spans.
 *
 *  1. A child producer SIGKILLed inside rs_reserve (the put lock held, its
 *     record half-written): the parent's put takes the lock over within the
 *     recovery interval; the child's committed messages are all there, the
 *     reserved one is not; lock_recoveries counts the takeover.  Once more
 *     with a child that kills itself.
 *  2. A child consumer SIGKILLed inside rs_view after stepping past a
 *     message: nothing is consumed; the parent's get takes the lock over.
 *  3. A forked child ending its copy of the parent's reserve or view span
 *     gets RS_NOT_OWNER and does nothing; the parent's end then works.
 *  4. Producers SIGKILLed at random (often inside a reserve they hold on
 *     purpose for a moment) and a child that views and keeps, killed at
 *     random too, while the parent consumes: every message a producer saw
 *     committed arrives, each exactly once and in order, and nothing else.
 *
 * Timing: only generous bounds on takeovers (3 s against an interval of
 * 0.1 s). */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "ringshm.h"

#define MS 1000000LL
#define SEC 1000000000LL

static char name[64];
static pid_t children[64];
static int n_children;
static pid_t parent_pid;

static void cleanup(void) {
    int i;
    if (getpid() != parent_pid)
        return;
    for (i = 0; i < n_children; i++)
        if (children[i] > 0) {
            kill(children[i], SIGKILL);
            waitpid(children[i], NULL, 0);
        }
    if (name[0])
        rs_unlink_name(name);
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * SEC + ts.tv_nsec;
}

static void sleep_us(long us) {
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* In a child: a failed check exits with 3 (the parent sees it). */
#define CHILD_CHECK(cond)                                                           \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "child %d: %s:%d: CHECK(%s) failed (%s)\n", (int)getpid(), \
                    __FILE__, __LINE__, #cond, rs_detail());                        \
            _exit(3);                                                               \
        }                                                                           \
    } while (0)

static pid_t spawn(void) {
    pid_t pid;
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    CHECK(pid >= 0);
    if (pid > 0) {
        CHECK(n_children < 64);
        children[n_children++] = pid;
    }
    return pid;
}

static void reap(pid_t pid, int *status) {
    int i;
    CHECK(waitpid(pid, status, 0) == pid);
    for (i = 0; i < n_children; i++)
        if (children[i] == pid)
            children[i] = 0;
}

static void kill_and_reap(pid_t pid) {
    int status;
    kill(pid, SIGKILL);
    reap(pid, &status);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}

static uint64_t recoveries(rs_ring *r) {
    struct rs_stats st;
    CHECK_RC(rs_stats(r, &st));
    return st.lock_recoveries;
}

/* ---- 1. a producer killed inside rs_reserve ------------------------------- */

static void producer_killed_in_reserve(rs_ring *r, int self) {
    int ready[2], status, i;
    char c, buf[256];
    size_t len;
    uint64_t before = recoveries(r);
    int64_t started, took;
    rs_span span;
    pid_t pid;

    CHECK(pipe(ready) == 0);
    pid = spawn();
    if (pid == 0) {
        for (i = 0; i < 5; i++) {
            snprintf(buf, sizeof(buf), "committed %d", i);
            CHILD_CHECK(rs_put(r, buf, strlen(buf), SEC) == 0);
        }
        CHILD_CHECK(rs_reserve(r, 100, &span, SEC) == 0);
        memset(span.data, 'X', 60);   /* half-written */
        if (self)
            raise(SIGKILL);
        CHILD_CHECK(write(ready[1], "r", 1) == 1);
        for (;;)
            pause();
    }
    close(ready[1]);
    if (self) {
        reap(pid, &status);
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    } else {
        CHECK(read(ready[0], &c, 1) == 1);
        kill_and_reap(pid);
    }
    close(ready[0]);

    started = now_ns();
    CHECK_RC(rs_put(r, "parent", 6, 5 * SEC));
    took = now_ns() - started;
    CHECK(took < 3 * SEC);
    CHECK(recoveries(r) == before + 1);
    for (i = 0; i < 5; i++) {
        CHECK_RC(rs_get(r, buf, sizeof(buf), &len, 0));
        snprintf(buf + 128, 64, "committed %d", i);
        CHECK(len == strlen(buf + 128) && memcmp(buf, buf + 128, len) == 0);
    }
    CHECK_RC(rs_get(r, buf, sizeof(buf), &len, 0));
    CHECK(len == 6 && memcmp(buf, "parent", 6) == 0);
    CHECK(rs_get(r, buf, sizeof(buf), &len, 0) == RS_EMPTY);
    printf("1. ok: a producer %s inside rs_reserve; its lock taken over in %.1f ms\n",
           self ? "that killed itself" : "killed", (double)took / 1e6);
}

/* ---- 2. a consumer killed inside rs_view ---------------------------------- */

static void consumer_killed_in_view(rs_ring *r) {
    int ready[2], i;
    char c, buf[64];
    size_t len;
    uint64_t before = recoveries(r);
    struct rs_stats st1, st2;
    int64_t started, took = 0;
    rs_span span;
    pid_t pid;

    for (i = 0; i < 3; i++) {
        snprintf(buf, sizeof(buf), "v%d", i);
        CHECK_RC(rs_put(r, buf, 2, 0));
    }
    CHECK_RC(rs_stats(r, &st1));
    CHECK(pipe(ready) == 0);
    pid = spawn();
    if (pid == 0) {
        CHILD_CHECK(rs_view(r, &span, SEC) == 0);
        CHILD_CHECK(span.len == 2 && memcmp(span.data, "v0", 2) == 0);
        CHILD_CHECK(rs_view_next(r, &span) == 0);   /* v0 stepped past, not published */
        CHILD_CHECK(span.len == 2 && memcmp(span.data, "v1", 2) == 0);
        CHILD_CHECK(write(ready[1], "r", 1) == 1);
        for (;;)
            pause();
    }
    close(ready[1]);
    CHECK(read(ready[0], &c, 1) == 1);
    close(ready[0]);
    kill_and_reap(pid);

    CHECK_RC(rs_stats(r, &st2));
    CHECK(st2.tail == st1.tail && st2.messages_got == st1.messages_got);
    started = now_ns();
    for (i = 0; i < 3; i++) {
        CHECK_RC(rs_get(r, buf, sizeof(buf), &len, 5 * SEC));
        CHECK(len == 2 && buf[0] == 'v' && buf[1] == '0' + i);
        if (i == 0)
            took = now_ns() - started;
    }
    CHECK(took < 3 * SEC);
    CHECK(recoveries(r) == before + 1);
    CHECK(rs_get(r, buf, sizeof(buf), &len, 0) == RS_EMPTY);
    printf("2. ok: a consumer killed inside rs_view; nothing consumed; lock taken over in "
           "%.1f ms\n", (double)took / 1e6);
}

/* ---- 3. a forked child ends the parent's span ----------------------------- */

static void child_ends_parents_spans(rs_ring *r) {
    rs_span span;
    char buf[64];
    size_t len;
    int status;
    pid_t pid;

    CHECK_RC(rs_reserve(r, 4, &span, 0));
    memcpy(span.data, "fork", 4);
    pid = spawn();
    if (pid == 0) {
        CHILD_CHECK(rs_commit(r, &span) == RS_NOT_OWNER);
        CHILD_CHECK(rs_cancel(r, &span) == RS_INVALID);   /* ended: not a span any more */
        CHILD_CHECK(rs_count(r) == 0);
        /* The put lock is the parent's, alive: a put of ours cannot come. */
        CHILD_CHECK(rs_put(r, "child", 5, 0) == RS_FULL);
        _exit(0);
    }
    reap(pid, &status);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(rs_count(r) == 0);
    CHECK_RC(rs_commit(r, &span));
    CHECK(rs_count(r) == 1);

    CHECK_RC(rs_view(r, &span, 0));
    pid = spawn();
    if (pid == 0) {
        CHILD_CHECK(rs_release(r, &span) == RS_NOT_OWNER);
        CHILD_CHECK(rs_count(r) == 1);
        /* The child holds no lock: its own put works. */
        CHILD_CHECK(rs_put(r, "child", 5, SEC) == 0);
        _exit(0);
    }
    reap(pid, &status);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(span.len == 4 && memcmp(span.data, "fork", 4) == 0);
    CHECK_RC(rs_release(r, &span));
    CHECK_RC(rs_get(r, buf, sizeof(buf), &len, 0));
    CHECK(len == 5 && memcmp(buf, "child", 5) == 0);
    CHECK(rs_get(r, buf, sizeof(buf), &len, 0) == RS_EMPTY);
    printf("3. ok: forked children's ends of the parent's spans: RS_NOT_OWNER\n");
}

/* ---- 4. random kills ------------------------------------------------------ */

#define STORM_PRODUCERS 40     /* ids over the whole run */
#define STORM_LIVE 3           /* producers alive at once */
#define STORM_NS (1500 * MS)

typedef struct {
    uint32_t id, seq, len, check;
} storm_msg;

static size_t storm_len(uint32_t id, uint32_t seq) {
    return sizeof(storm_msg) + (id * 13u + seq * 7u) % 180u;
}

static void storm_fill(unsigned char *b, uint32_t id, uint32_t seq) {
    storm_msg m = {id, seq, (uint32_t)storm_len(id, seq), id * 2654435761u ^ seq};
    size_t i;
    memcpy(b, &m, sizeof(m));
    for (i = sizeof(m); i < m.len; i++)
        b[i] = (unsigned char)(seq + i);
}

/* The last sequence number each producer saw committed (-1: none). */
static int64_t *committed;

static void storm_producer(rs_ring *r, uint32_t id) {
    unsigned char a[256], b[256];
    struct iovec two[2];
    rs_span span;
    uint32_t seq = 0;
    for (;; seq++) {
        switch (seq % 3) {
        case 0:
            storm_fill(a, id, seq);
            CHILD_CHECK(rs_put(r, a, storm_len(id, seq), 10 * SEC) == 0);
            break;
        case 1:
            CHILD_CHECK(rs_reserve(r, storm_len(id, seq), &span, 10 * SEC) == 0);
            storm_fill(span.data, id, seq);
            if (seq % 4 == 1)
                sleep_us(300);   /* holding the put lock: a likely place to die */
            CHILD_CHECK(rs_commit(r, &span) == 0);
            break;
        default:
            storm_fill(a, id, seq);
            storm_fill(b, id, seq + 1);
            two[0].iov_base = a;
            two[0].iov_len = storm_len(id, seq);
            two[1].iov_base = b;
            two[1].iov_len = storm_len(id, seq + 1);
            CHILD_CHECK(rs_put_many(r, two, 2, 10 * SEC) == 0);
            seq++;
            break;
        }
        __atomic_store_n(&committed[id], (int64_t)seq, __ATOMIC_SEQ_CST);
    }
}

/* Views and keeps, consuming nothing, holding the get lock a moment. */
static void storm_peeker(rs_ring *r) {
    rs_span span;
    int rc;
    for (;;) {
        rc = rs_view(r, &span, 100 * MS);
        if (rc == RS_EMPTY)
            continue;
        CHILD_CHECK(rc == 0);
        sleep_us(200);
        CHILD_CHECK(rs_keep(r, &span) == 0);
        sleep_us(300);
    }
}

static void storm_take(const unsigned char *data, size_t len, int64_t *next) {
    storm_msg m;
    size_t i;
    CHECK(len >= sizeof(m));
    memcpy(&m, data, sizeof(m));
    if (m.id >= STORM_PRODUCERS || m.len != len || len != storm_len(m.id, m.seq)
            || m.check != (m.id * 2654435761u ^ m.seq)) {
        fprintf(stderr, "4. a damaged message (id %u seq %u len %u/%zu)\n", m.id, m.seq, m.len,
                len);
        exit(1);
    }
    for (i = sizeof(m); i < len; i++)
        CHECK(data[i] == (unsigned char)(m.seq + i));
    if ((int64_t)m.seq != next[m.id]) {
        fprintf(stderr, "4. producer %u: seq %u where %lld was next (lost or repeated)\n", m.id,
                m.seq, (long long)next[m.id]);
        exit(1);
    }
    next[m.id]++;
}

static void random_kills(rs_ring *r) {
    pid_t live[STORM_LIVE], peeker;
    int64_t next[STORM_PRODUCERS], end, next_kill;
    unsigned char buf[4096];
    size_t len, lengths[32], off;
    uint32_t next_id = 0, seed;
    uint64_t before = recoveries(r), total = 0;
    int i, rc, kills = 0, producers_killed = 0;

    committed = mmap(NULL, sizeof(int64_t) * STORM_PRODUCERS, PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(committed != MAP_FAILED);
    for (i = 0; i < STORM_PRODUCERS; i++) {
        committed[i] = -1;
        next[i] = 0;
    }
    CHECK(getrandom(&seed, sizeof(seed), 0) == sizeof(seed));
    srand(seed);
    printf("4. random kills, seed %u\n", seed);

    for (i = 0; i < STORM_LIVE; i++) {
        if ((live[i] = spawn()) == 0)
            storm_producer(r, next_id);
        next_id++;
    }
    if ((peeker = spawn()) == 0)
        storm_peeker(r);

    end = now_ns() + STORM_NS;
    next_kill = now_ns() + 50 * MS;
    while (now_ns() < end) {
        if (now_ns() >= next_kill) {
            i = rand() % (STORM_LIVE + 1);
            if (i == STORM_LIVE) {
                kill_and_reap(peeker);
                if ((peeker = spawn()) == 0)
                    storm_peeker(r);
            } else if (next_id < STORM_PRODUCERS) {
                kill_and_reap(live[i]);
                producers_killed++;
                if ((live[i] = spawn()) == 0)
                    storm_producer(r, next_id);
                next_id++;
            }
            kills++;
            next_kill = now_ns() + (20 + rand() % 80) * MS;
        }
        if (rand() % 2) {
            rc = rs_get(r, buf, sizeof(buf), &len, 20 * MS);
            if (rc == 0) {
                storm_take(buf, len, next);
                total++;
            }
        } else {
            rc = rs_get_many(r, buf, sizeof(buf), lengths, 32, 20 * MS);
            if (rc > 0) {
                for (i = 0, off = 0; i < rc; off += lengths[i], i++)
                    storm_take(buf + off, lengths[i], next);
                total += (uint64_t)rc;
                rc = 0;
            }
        }
        if (rc != 0 && rc != RS_EMPTY) {
            fprintf(stderr, "4. parent get: %s (%s)\n", rs_strerror(rc), rs_detail());
            exit(1);
        }
    }
    for (i = 0; i < STORM_LIVE; i++)
        kill_and_reap(live[i]);
    kill_and_reap(peeker);

    /* Drain: a lock a dead child held is taken over even by calls that do
     * not wait. */
    while ((rc = rs_get(r, buf, sizeof(buf), &len, 0)) == 0) {
        storm_take(buf, len, next);
        total++;
    }
    CHECK(rc == RS_EMPTY);
    for (i = 0; i < (int)next_id; i++) {
        /* Everything committed arrived; beyond it at most the batch of two
         * the producer died publishing. */
        if (next[i] - 1 < committed[i] || next[i] - 1 > committed[i] + 2) {
            fprintf(stderr, "4. producer %d: committed up to %lld, %lld arrived\n", i,
                    (long long)committed[i], (long long)next[i]);
            exit(1);
        }
    }
    CHECK_RC(rs_put(r, "after", 5, 5 * SEC));
    CHECK_RC(rs_get(r, buf, sizeof(buf), &len, 0));
    CHECK(len == 5 && memcmp(buf, "after", 5) == 0);
    printf("4. ok: %llu messages from %u producers, %d kills (%d producers), %llu locks "
           "taken over\n", (unsigned long long)total, next_id, kills, producers_killed,
           (unsigned long long)(recoveries(r) - before));
    munmap(committed, sizeof(int64_t) * STORM_PRODUCERS);
}

int main(void) {
    rs_ring *r;
    rs_options o;

    parent_pid = getpid();
    atexit(cleanup);
    rs_options_init(&o);
    o.recovery_interval = 0.1;
    snprintf(name, sizeof(name), "ctest-faults-%d", (int)getpid());
    CHECK_RC(rs_create_name(name, 16384, &o, &r));

    producer_killed_in_reserve(r, 0);
    producer_killed_in_reserve(r, 1);
    consumer_killed_in_view(r);
    child_ends_parents_spans(r);
    random_kills(r);

    CHECK_RC(rs_close(r));
    name[0] = 0;
    printf("test_faults: ok\n");
    return 0;
}
