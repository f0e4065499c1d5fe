/* Defects of the old Python core, as tests of the C library (each failed
 * there, by design of the old code):
 *
 *  (a) two producer threads share one handle: A waits for room for 900 B
 *      in a full ring; a consumer frees 1008 B; B then tries 2000 B (still
 *      no room).  A must get its room at once.  The old core kept "what the
 *      consumers had done when I last looked" in the handle: B's look
 *      overwrote A's, so A found "nothing moved" and slept to its timeout.
 *  (b) rs_close from another thread inside a view: rs_release says
 *      RS_CLOSED and consumes nothing (a second handle still gets the
 *      message); inside a reserve: rs_commit says RS_CLOSED and publishes
 *      nothing.
 *  (c) rs_close wakes a thread blocked in rs_get(RS_FOREVER) and one in
 *      rs_wait_joined(RS_FOREVER) at once, even with recovery_interval 5 s.
 *  (d) a header whose head is 8 bytes behind its tail: puts and gets say
 *      RS_CORRUPTED and write nothing (the old check let the unsigned
 *      difference wrap and a producer write over unread records).
 *
 * Timing: only generous bounds on waits that must end "at once" (2 s,
 * against timeouts and slices of 4-5 s). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "layout.h"
#include "ringshm.h"

#define MS 1000000LL
#define SEC 1000000000LL

static char names[4][64];

static void cleanup(void) {
    int i;
    for (i = 0; i < 4; i++)
        if (names[i][0])
            rs_unlink_name(names[i]);   /* gone already when the test passed */
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * SEC + ts.tv_nsec;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static uint64_t put_waits(rs_ring *r) {
    struct rs_stats st;
    CHECK_RC(rs_stats(r, &st));
    return st.put_waits;
}

static uint64_t get_waits(rs_ring *r) {
    struct rs_stats st;
    CHECK_RC(rs_stats(r, &st));
    return st.get_waits;
}

/* Wait (at most 10 s) until cond(r) >= want. */
static void await_count(uint64_t (*cond)(rs_ring *), rs_ring *r, uint64_t want) {
    int64_t give_up = now_ns() + 10 * SEC;
    while (cond(r) < want) {
        CHECK(now_ns() < give_up);
        sleep_ms(1);
    }
}

/* ---- (a) ------------------------------------------------------------------ */

typedef struct {
    rs_ring *r;
    size_t len;
    int64_t timeout;
    int rc;
    int64_t ended;
} put_job;

static void *put_thread(void *arg) {
    put_job *job = arg;
    static char zeros[4096];
    job->rc = rs_put(job->r, zeros, job->len, job->timeout);
    job->ended = now_ns();
    return NULL;
}

/* Thread A is held in a signal handler while the consumer and B act, so
 * that B's look at the consumers comes between the consumer's progress and
 * A's next look: the order the old core got wrong. */
static volatile sig_atomic_t held_entered, held_release;

static void hold_here(int sig) {
    struct timespec ms = {0, 1000000};
    (void)sig;
    held_entered = 1;
    while (!held_release)
        nanosleep(&ms, NULL);
}

static void test_a_waiting_producers_keep_their_own_view(void) {
    rs_ring *r;
    rs_options o;
    pthread_t a, b;
    put_job job_a, job_b;
    struct sigaction sa;
    char buf[16384];
    size_t len;
    int64_t released;
    int n = 0;

    rs_options_init(&o);
    o.spin = 0;                     /* A sleeps on the futex, no spinning */
    o.recovery_interval = 5.0;      /* slices of 5 s: a missed wake shows */
    CHECK_RC(rs_anonymous(16384, &o, &r));
    while (rs_put(r, buf, 1000, 0) == 0)
        n++;
    CHECK(n == 16);   /* 16 records of 1008 B: 256 B free, 900 B need 912 */

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = hold_here;      /* no SA_RESTART: the futex wait says EINTR */
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);

    job_a = (put_job){r, 900, 4 * SEC, 1, 0};
    CHECK(pthread_create(&a, NULL, put_thread, &job_a) == 0);
    await_count(put_waits, r, 1);
    sleep_ms(50);                   /* A is asleep on the space queue */
    CHECK(pthread_kill(a, SIGUSR1) == 0);
    while (!held_entered)
        sleep_ms(1);

    /* The consumer frees 1008 B: room for A's 912 B, not for B's 2008 B. */
    CHECK_RC(rs_get(r, buf, sizeof(buf), &len, 0));
    CHECK(len == 1000);
    job_b = (put_job){r, 2000, 10 * SEC, 1, 0};
    CHECK(pthread_create(&b, NULL, put_thread, &job_b) == 0);
    await_count(put_waits, r, 2);   /* B looked at the consumers, and waits */
    sleep_ms(50);

    released = now_ns();
    held_release = 1;
    CHECK(pthread_join(a, NULL) == 0);
    if (job_a.rc != 0 || job_a.ended - released > 2 * SEC) {
        fprintf(stderr, "(a) producer A: %s after %.3f s (expected success at once)\n",
                rs_strerror(job_a.rc), (double)(job_a.ended - released) / 1e9);
        exit(1);
    }
    CHECK(job_b.rc == 1);           /* B is still waiting: no room for it */
    /* Two more messages out: room for B, which then gets in. */
    CHECK_RC(rs_get(r, buf, sizeof(buf), &len, 0));
    CHECK_RC(rs_get(r, buf, sizeof(buf), &len, 0));
    CHECK(pthread_join(b, NULL) == 0);
    CHECK(job_b.rc == 0);
    CHECK(rs_count(r) == 16 - 3 + 2);
    CHECK_RC(rs_close(r));
    signal(SIGUSR1, SIG_DFL);
    printf("(a) ok: A got its room %.1f ms after it was let go\n",
           (double)(job_a.ended - released) / 1e6);
}

/* ---- (b) ------------------------------------------------------------------ */

typedef struct {
    rs_ring *r;
    int step;           /* view: step past one message first */
    volatile int opened, closed;
    int rc;
    char shown[32];
} span_job;

static void *view_thread(void *arg) {
    span_job *job = arg;
    rs_span span;
    int rc = rs_view(job->r, &span, 0);
    if (rc == 0 && job->step)
        rc = rs_view_next(job->r, &span);
    if (rc != 0) {
        job->rc = rc;
        __atomic_store_n(&job->opened, -1, __ATOMIC_RELEASE);
        return NULL;
    }
    snprintf(job->shown, sizeof(job->shown), "%.*s", (int)span.len, (char *)span.data);
    __atomic_store_n(&job->opened, 1, __ATOMIC_RELEASE);
    while (!__atomic_load_n(&job->closed, __ATOMIC_ACQUIRE))
        sleep_ms(1);
    job->rc = rs_release(job->r, &span);
    return NULL;
}

static void *reserve_thread(void *arg) {
    span_job *job = arg;
    rs_span span;
    int rc = rs_reserve(job->r, 5, &span, 0);
    if (rc != 0) {
        job->rc = rc;
        __atomic_store_n(&job->opened, -1, __ATOMIC_RELEASE);
        return NULL;
    }
    memcpy(span.data, "ghost", 5);
    __atomic_store_n(&job->opened, 1, __ATOMIC_RELEASE);
    while (!__atomic_load_n(&job->closed, __ATOMIC_ACQUIRE))
        sleep_ms(1);
    job->rc = rs_commit(job->r, &span);
    return NULL;
}

/* Open a span in a thread through a handle of its own, close that handle
 * from here, then end the span; returns its end's status. */
static int close_inside(const char *name, void *(*body)(void *), int step, char *shown) {
    rs_ring *r;
    pthread_t t;
    span_job job;
    memset(&job, 0, sizeof(job));
    CHECK_RC(rs_open_name(name, NULL, &r));
    job.r = r;
    job.step = step;
    CHECK(pthread_create(&t, NULL, body, &job) == 0);
    while (__atomic_load_n(&job.opened, __ATOMIC_ACQUIRE) == 0)
        sleep_ms(1);
    CHECK(job.opened == 1);
    CHECK_RC(rs_close(r));          /* returns at once: the span holds a reference */
    __atomic_store_n(&job.closed, 1, __ATOMIC_RELEASE);
    CHECK(pthread_join(t, NULL) == 0);
    if (shown != NULL)
        strcpy(shown, job.shown);
    return job.rc;
}

static void test_b_close_inside_a_span(void) {
    rs_ring *keeper;
    rs_options o;
    struct rs_stats before, after;
    char buf[64], shown[32];
    size_t len;

    rs_options_init(&o);
    o.persist = 1;   /* the closed handles must not take the name with them */
    snprintf(names[0], sizeof(names[0]), "ctest-repro-b-%d", (int)getpid());
    CHECK_RC(rs_create_name(names[0], 4096, &o, &keeper));

    /* A view: the message stays. */
    CHECK_RC(rs_put(keeper, "first", 5, 0));
    CHECK_RC(rs_put(keeper, "second", 6, 0));
    CHECK_RC(rs_stats(keeper, &before));
    CHECK(close_inside(names[0], view_thread, 0, shown) == RS_CLOSED);
    CHECK(strcmp(shown, "first") == 0);
    /* A view that stepped past a message: nothing consumed either. */
    CHECK(close_inside(names[0], view_thread, 1, shown) == RS_CLOSED);
    CHECK(strcmp(shown, "second") == 0);
    CHECK_RC(rs_stats(keeper, &after));
    CHECK(after.tail == before.tail && after.messages_got == before.messages_got);
    CHECK(rs_count(keeper) == 2);
    CHECK_RC(rs_get(keeper, buf, sizeof(buf), &len, 0));   /* the get lock was let go */
    CHECK(len == 5 && memcmp(buf, "first", 5) == 0);
    CHECK_RC(rs_get(keeper, buf, sizeof(buf), &len, 0));
    CHECK(len == 6 && memcmp(buf, "second", 6) == 0);

    /* A reserve: nothing published. */
    CHECK_RC(rs_stats(keeper, &before));
    CHECK(close_inside(names[0], reserve_thread, 0, NULL) == RS_CLOSED);
    CHECK_RC(rs_stats(keeper, &after));
    CHECK(after.head == before.head && after.messages_put == before.messages_put);
    CHECK(rs_get(keeper, buf, sizeof(buf), &len, 0) == RS_EMPTY);
    CHECK_RC(rs_put(keeper, "after", 5, 0));              /* the put lock was let go */
    CHECK_RC(rs_get(keeper, buf, sizeof(buf), &len, 0));
    CHECK(len == 5 && memcmp(buf, "after", 5) == 0);

    CHECK_RC(rs_close(keeper));
    CHECK_RC(rs_unlink_name(names[0]));
    names[0][0] = 0;
    printf("(b) ok\n");
}

/* ---- (c) ------------------------------------------------------------------ */

typedef struct {
    rs_ring *r;
    int joined;   /* rs_wait_joined, else rs_get */
    int rc;
    int64_t ended;
} blocked_job;

static void *blocked_thread(void *arg) {
    blocked_job *job = arg;
    char buf[64];
    size_t len;
    job->rc = job->joined ? rs_wait_joined(job->r, RS_FOREVER)
                          : rs_get(job->r, buf, sizeof(buf), &len, RS_FOREVER);
    job->ended = now_ns();
    return NULL;
}

static void test_c_close_wakes_blocked_calls(void) {
    rs_ring *closing, *other;
    rs_options o;
    pthread_t getter, joiner;
    blocked_job get_job, join_job;
    char buf[64];
    size_t len;
    int64_t closed;

    rs_options_init(&o);
    o.spin = 0;
    o.recovery_interval = 5.0;
    snprintf(names[1], sizeof(names[1]), "ctest-repro-c-%d", (int)getpid());
    CHECK_RC(rs_create_name(names[1], 4096, &o, &other));
    CHECK_RC(rs_open_name(names[1], NULL, &closing));
    /* One task unfinished, and an empty ring. */
    CHECK_RC(rs_put(other, "task", 4, 0));
    CHECK_RC(rs_get(other, buf, sizeof(buf), &len, 0));
    CHECK(rs_unfinished_tasks(other) == 1);

    get_job = (blocked_job){closing, 0, 1, 0};
    join_job = (blocked_job){closing, 1, 1, 0};
    CHECK(pthread_create(&getter, NULL, blocked_thread, &get_job) == 0);
    CHECK(pthread_create(&joiner, NULL, blocked_thread, &join_job) == 0);
    await_count(get_waits, other, 1);
    sleep_ms(100);   /* both asleep, in slices of 5 s */
    CHECK(get_job.rc == 1 && join_job.rc == 1);

    closed = now_ns();
    CHECK_RC(rs_close(closing));
    CHECK(pthread_join(getter, NULL) == 0);
    CHECK(pthread_join(joiner, NULL) == 0);
    if (get_job.rc != RS_CLOSED || join_job.rc != RS_CLOSED
            || get_job.ended - closed > 2 * SEC || join_job.ended - closed > 2 * SEC) {
        fprintf(stderr, "(c) rs_get: %s after %.3f s; rs_wait_joined: %s after %.3f s "
                "(expected RS_CLOSED at once)\n", rs_strerror(get_job.rc),
                (double)(get_job.ended - closed) / 1e9, rs_strerror(join_job.rc),
                (double)(join_job.ended - closed) / 1e9);
        exit(1);
    }
    /* The other handle is untouched. */
    CHECK_RC(rs_task_done(other, 1));
    CHECK_RC(rs_wait_joined(other, 0));
    CHECK_RC(rs_close(other));
    names[1][0] = 0;   /* made without persist: gone with `other` */
    printf("(c) ok: woken %.1f and %.1f ms after the close\n",
           (double)(get_job.ended - closed) / 1e6, (double)(join_job.ended - closed) / 1e6);
}

/* ---- (d) ------------------------------------------------------------------ */

static void test_d_head_behind_tail(void) {
    rs_ring *r, *f;
    char path[128], buf[64];
    unsigned char *map, *snapshot;
    size_t size = RS_HEADER_SIZE + 4096, len, lengths[4];
    uint64_t *head, *tail, saved_head;
    struct iovec two[2] = {{"ab", 2}, {"cd", 2}};
    rs_span span;
    int fd, i;

    snprintf(names[2], sizeof(names[2]), "ctest-repro-d-%d", (int)getpid());
    CHECK_RC(rs_create_name(names[2], 4096, NULL, &r));
    for (i = 0; i < 3; i++) {
        snprintf(buf, sizeof(buf), "message %d", i);
        CHECK_RC(rs_put(r, buf, strlen(buf), 0));
    }
    CHECK_RC(rs_get(r, buf, sizeof(buf), &len, 0));   /* the tail moves off 0 */

    snprintf(path, sizeof(path), "/dev/shm/ringshm.%s", names[2]);
    fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    CHECK(fd >= 0);
    map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(map != MAP_FAILED);
    close(fd);
    head = (uint64_t *)(map + offsetof(rs_header, producer) + offsetof(rs_side, position));
    tail = (uint64_t *)(map + offsetof(rs_header, consumer) + offsetof(rs_side, position));
    CHECK(*tail > 8 && *head > *tail);
    saved_head = *head;
    __atomic_store_n(head, *tail - 8, __ATOMIC_SEQ_CST);

    snapshot = malloc(size);
    CHECK(snapshot != NULL);
    memcpy(snapshot, map, size);
    /* The handle that put the messages: its cached tail predates the
     * damage (by it the head has room), but the head went back below the
     * one it published. */
    CHECK(rs_put(r, "x", 1, 0) == RS_CORRUPTED);
    CHECK(rs_put(r, buf, 2000, 100 * MS) == RS_CORRUPTED);
    CHECK(rs_put_many(r, two, 2, 0) == RS_CORRUPTED);
    CHECK(rs_reserve(r, 8, &span, 0) == RS_CORRUPTED);
    CHECK(memcmp(map + RS_HEADER_SIZE, snapshot + RS_HEADER_SIZE, size - RS_HEADER_SIZE) == 0);
    /* Through a handle opened now.  (A handle whose cached head predates
     * the damage trusts that cache on the get path, and one that never
     * published a head at or past the damage trusts its cached tail on the
     * put fast path: the first reads the records it knows were published,
     * the second may write over the unread record.  A known gap, not
     * tested here: closing it costs a read of the other side's line on
     * every put and every get.) */
    CHECK_RC(rs_open_name(names[2], NULL, &f));
    CHECK(rs_put(f, "x", 1, 0) == RS_CORRUPTED);
    CHECK(rs_put(f, "x", 1, 100 * MS) == RS_CORRUPTED);
    CHECK(rs_put(f, buf, 2000, 100 * MS) == RS_CORRUPTED);
    CHECK(rs_put_many(f, two, 2, 0) == RS_CORRUPTED);
    CHECK(rs_reserve(f, 8, &span, 0) == RS_CORRUPTED);
    CHECK(rs_get(f, buf, sizeof(buf), &len, 0) == RS_CORRUPTED);
    CHECK(rs_get(f, buf, sizeof(buf), &len, 100 * MS) == RS_CORRUPTED);
    CHECK(rs_get_many(f, buf, sizeof(buf), lengths, 4, 0) == RS_CORRUPTED);
    CHECK(rs_view(f, &span, 0) == RS_CORRUPTED);
    CHECK(rs_wait_room(f, 1, 0) == RS_FULL);   /* no room in a damaged ring */
    /* Nothing written: both sides of the header and every data byte. */
    CHECK(memcmp(map, snapshot, offsetof(rs_header, put_lock)) == 0);
    CHECK(memcmp(map + RS_HEADER_SIZE, snapshot + RS_HEADER_SIZE, size - RS_HEADER_SIZE) == 0);
    /* Both locks were let go. */
    CHECK(((rs_header *)map)->put_lock.owner == 0 && ((rs_header *)map)->get_lock.owner == 0);

    /* Repaired, the ring has its two messages back. */
    __atomic_store_n(head, saved_head, __ATOMIC_SEQ_CST);
    CHECK_RC(rs_close(f));
    CHECK_RC(rs_get(r, buf, sizeof(buf), &len, 0));
    CHECK(len == 9 && memcmp(buf, "message 1", 9) == 0);
    CHECK_RC(rs_get(r, buf, sizeof(buf), &len, 0));
    CHECK(len == 9 && memcmp(buf, "message 2", 9) == 0);
    CHECK(rs_get(r, buf, sizeof(buf), &len, 0) == RS_EMPTY);
    free(snapshot);
    munmap(map, size);
    CHECK_RC(rs_close(r));
    names[2][0] = 0;
    printf("(d) ok\n");
}

int main(void) {
    atexit(cleanup);
    test_a_waiting_producers_keep_their_own_view();
    test_b_close_inside_a_span();
    test_c_close_wakes_blocked_calls();
    test_d_head_behind_tail();
    printf("test_reproductions: ok\n");
    return 0;
}
