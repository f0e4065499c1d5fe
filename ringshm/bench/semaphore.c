/*
 * POSIX semaphores against ringshm's futex wait queue, side by side.
 *
 * docs/DESIGN.md departs from the recommended design (a process-shared sem_t
 * per place to sleep) for a raw futex word with a "wanted" flag that the waker
 * clears.  This program measures the three claims behind that departure:
 *
 *   semaphore pingpong KIND COUNT     (a) sleeping round trip, p50/p99 in ns
 *   semaphore killed KIND COUNT       (b) ns per post/wake with no sleeper,
 *                                         before and after a sleeper was
 *                                         SIGKILLed while asleep
 *   semaphore damaged KIND PATTERN    (c) wait (100 ms timeout) on bytes a
 *                                         peer scribbled; run it in a child
 *
 * KIND is "sem" (sem_t, pshared) or "futex" (libringshm's futex.h + the wanted flag,
 * exactly as the core uses them).  PATTERN is "ff" (every byte 0xff), "a5"
 * (every byte 0xa5) or "flags" (a zero count, garbage in the rest).
 * Prints one JSON object on stdout.  Built by ringshm.bench.semaphore with
 * -I pointing at libringshm's sources (or the copy of its atomic.h and futex.h
 * that the installed package carries), so the futex side is the
 * core's own code.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <semaphore.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "atomic.h"
#include "futex.h"

/* One place to sleep, as in _layout.h's rs_waitq, plus a count that stands
 * for "the condition" (a message, a token). */
typedef struct {
    uint64_t wanted;
    uint32_t futex;
    uint32_t _pad;
    uint64_t tokens;
    uint64_t wakes; /* futex_wake system calls made by the waker */
} waitq_t;

typedef union {
    sem_t sem;
    waitq_t q;
    unsigned char bytes[64];
} place_t;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static struct timespec deadline_in(int64_t ns) {
    int64_t at = now_ns() + ns;
    struct timespec ts = {at / 1000000000, at % 1000000000};
    return ts;
}

static struct timespec realtime_deadline_in(int64_t ns) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t at = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + ns;
    ts.tv_sec = at / 1000000000;
    ts.tv_nsec = at % 1000000000;
    return ts;
}

/* The core's protocol: the waker makes the condition true (a seq-cst store),
 * then reads `wanted`; only a set flag costs a system call, and the waker
 * clears it, so a sleeper that died costs one wake at most. */
static void q_post(waitq_t *q) {
    __atomic_fetch_add(&q->tokens, 1, __ATOMIC_SEQ_CST);
    if (rs_load_seq(&q->wanted) && rs_exchange(&q->wanted, 0)) {
        rs_add32(&q->futex, 1);
        rs_futex_wake(&q->futex, RS_WAKE_ALL);
        q->wakes++;
    }
}

static int q_trytake(waitq_t *q) {
    uint64_t t = rs_load_seq(&q->tokens);
    while (t > 0 && t < (1ull << 62)) {
        if (__atomic_compare_exchange_n(&q->tokens, &t, t - 1, 0, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST))
            return 1;
    }
    return 0;
}

/* Arm the flag, note the futex word, re-check, sleep; any error the kernel
 * gives is survivable (the core polls after an unexpected one). 0 or ETIMEDOUT. */
static int q_take(waitq_t *q, int64_t timeout_ns) {
    struct timespec until = deadline_in(timeout_ns);
    for (;;) {
        if (q_trytake(q))
            return 0;
        rs_store_seq(&q->wanted, 1);
        uint32_t seen = rs_load32_seq(&q->futex);
        if (q_trytake(q))
            return 0;
        int rc = rs_futex_wait(&q->futex, seen, &until);
        if (rc == ETIMEDOUT)
            return ETIMEDOUT;
        if (rc != 0 && rc != EAGAIN && rc != EINTR) {
            struct timespec ms = {0, 1000000};
            nanosleep(&ms, NULL);
            if (now_ns() > (int64_t)until.tv_sec * 1000000000 + until.tv_nsec)
                return ETIMEDOUT;
        }
    }
}

static int is_sem(const char *kind) { return strcmp(kind, "sem") == 0; }

static place_t *shared_places(int n) {
    void *p = mmap(NULL, sizeof(place_t) * n, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    memset(p, 0, sizeof(place_t) * n);
    return p;
}

static void init_place(place_t *p, int sem) {
    if (sem && sem_init(&p->sem, 1, 0) != 0) {
        perror("sem_init");
        exit(2);
    }
}

static void post(place_t *p, int sem) {
    if (sem)
        sem_post(&p->sem);
    else
        q_post(&p->q);
}

static void take(place_t *p, int sem) {
    if (sem) {
        /* With a deadline, as the core's sleeps have one (a sleep slice ends
         * at the next owner check): both sides arm a timer. */
        struct timespec until = deadline_in(60ll * 1000000000);
        while (sem_clockwait(&p->sem, CLOCK_MONOTONIC, &until) != 0 && errno == EINTR) {
        }
    } else {
        q_take(&p->q, 60ll * 1000000000);
    }
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* (a) Two processes hand a token back and forth; each side always sleeps
 * (no spinning), which is the path a semaphore and a futex differ on. */
static int pingpong(const char *kind, int count) {
    int sem = is_sem(kind);
    place_t *places = shared_places(2);
    init_place(&places[0], sem);
    init_place(&places[1], sem);
    pid_t child = fork();
    if (child == 0) {
        for (int i = 0; i < count + 100; i++) {
            take(&places[0], sem);
            post(&places[1], sem);
        }
        _exit(0);
    }
    int64_t *rtt = malloc(sizeof(int64_t) * count);
    for (int i = 0; i < count + 100; i++) {
        int64_t t0 = now_ns();
        post(&places[0], sem);
        take(&places[1], sem);
        if (i >= 100)
            rtt[i - 100] = now_ns() - t0;
    }
    waitpid(child, NULL, 0);
    qsort(rtt, count, sizeof(int64_t), cmp_i64);
    printf("{\"kind\": \"%s\", \"round_trips\": %d, \"p50_ns\": %lld, \"p99_ns\": %lld}\n",
           kind, count, (long long)rtt[count / 2], (long long)rtt[(int)(count * 0.99)]);
    return 0;
}

/* glibc's sem_t on 64-bit targets: a 64-bit word whose high half counts the
 * sleepers (nwaiters); sem_post makes a futex_wake system call whenever it is
 * non-zero.  Read for the report only. */
static unsigned sem_nwaiters(place_t *p) {
    uint64_t data;
    memcpy(&data, p->bytes, sizeof data);
    return (unsigned)(data >> 32);
}

static double ns_per_post(place_t *p, int sem, int count) {
    int64_t t0 = now_ns();
    for (int i = 0; i < count; i++) {
        post(p, sem);
        if (sem)
            sem_trywait(&p->sem);
        else
            q_trytake(&p->q);
    }
    return (double)(now_ns() - t0) / count;
}

/* (b) A sleeper SIGKILLed inside the wait: does every later post pay? */
static int killed(const char *kind, int count) {
    int sem = is_sem(kind);
    place_t *p = shared_places(1);
    init_place(p, sem);
    double before = ns_per_post(p, sem, count);
    pid_t child = fork();
    if (child == 0) {
        take(p, sem);
        _exit(0);
    }
    /* Let it reach the kernel's futex queue. */
    struct timespec pause = {0, 200 * 1000000};
    nanosleep(&pause, NULL);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    unsigned left = sem ? sem_nwaiters(p) : (unsigned)rs_load_seq(&p->q.wanted);
    uint64_t wakes_before = p->q.wakes;
    double after = ns_per_post(p, sem, count);
    unsigned later = sem ? sem_nwaiters(p) : (unsigned)rs_load_seq(&p->q.wanted);
    printf("{\"kind\": \"%s\", \"posts\": %d, \"ns_per_post_before\": %.1f, "
           "\"ns_per_post_after\": %.1f, \"sleepers_recorded_after_kill\": %u, "
           "\"sleepers_recorded_after_posts\": %u, \"wake_calls_after_kill\": %lld}\n",
           kind, count, before, after, left, later,
           sem ? -1ll : (long long)(p->q.wakes - wakes_before));
    return 0;
}

/* (c) Wait on bytes that a peer scribbled over the semaphore / wait queue. */
static int damaged(const char *kind, const char *pattern) {
    int sem = is_sem(kind);
    place_t *p = shared_places(1);
    init_place(p, sem);
    if (strcmp(pattern, "ff") == 0) {
        memset(p->bytes, 0xff, sizeof p->bytes);
    } else if (strcmp(pattern, "a5") == 0) {
        memset(p->bytes, 0xa5, sizeof p->bytes);
    } else { /* a zero count, so the wait has to sleep, and garbage after it */
        memset(p->bytes, 0x5a, sizeof p->bytes);
        memset(p->bytes, 0, sem ? 8 : 0);
        if (!sem)
            p->q.tokens = 0;
    }
    int64_t t0 = now_ns();
    int rc, err = 0;
    if (sem) {
        struct timespec until = realtime_deadline_in(100 * 1000000);
        rc = sem_timedwait(&p->sem, &until);
        err = rc ? errno : 0;
    } else {
        rc = q_take(&p->q, 100 * 1000000);
        err = rc;
    }
    printf("{\"kind\": \"%s\", \"pattern\": \"%s\", \"returned\": %d, \"errno\": \"%s\", "
           "\"ms\": %.1f}\n",
           kind, pattern, rc, err ? strerror(err) : "", (now_ns() - t0) / 1e6);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "pingpong") == 0)
        return pingpong(argv[2], atoi(argv[3]));
    if (argc == 4 && strcmp(argv[1], "killed") == 0)
        return killed(argv[2], atoi(argv[3]));
    if (argc == 4 && strcmp(argv[1], "damaged") == 0)
        return damaged(argv[2], argv[3]);
    fprintf(stderr, "usage: semaphore pingpong|killed KIND COUNT | damaged KIND PATTERN\n");
    return 2;
}
