/* Topics: every subscriber gets every message; tethered subscribers hold
 * publishers back, untethered ones never do and are told exactly what they
 * missed; history; 128 subscribers and the 129th refused; a dead or
 * stalled subscriber stops holding publishers; shutdown; a topic is never
 * opened as a ring nor the reverse; publishers in two processes and
 * subscribers in threads (one subscription shared by two threads).  Exits
 * non-zero on failure. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "ringshm.h"

#define SECOND 1000000000LL
#define MS 1000000LL

static char name[64];
static pid_t creator;

static void cleanup(void) {
    char ring_name[80];
    if (getpid() != creator)
        return;
    rs_unlink_name(name);
    snprintf(ring_name, sizeof(ring_name), "%s-ring", name);
    rs_unlink_name(ring_name);
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * SECOND + ts.tv_nsec;
}

/* Message i: its number, then bytes derived from it. */
static size_t make_message(char *buf, uint64_t i, size_t size) {
    size_t k;
    memcpy(buf, &i, 8);
    for (k = 8; k < size; k++)
        buf[k] = (char)(i * 31 + k);
    return size;
}

static uint64_t check_message(const char *buf, size_t len) {
    uint64_t i;
    size_t k;
    CHECK(len >= 8);
    memcpy(&i, buf, 8);
    for (k = 8; k < len; k++)
        CHECK(buf[k] == (char)(i * 31 + k));
    return i;
}

static rs_topic *anon(uint64_t capacity, uint32_t history) {
    rs_topic *t;
    CHECK_RC(rs_topic_anonymous(capacity, history, NULL, &t));
    return t;
}

static void test_every_subscriber_gets_everything(void) {
    rs_topic *t = anon(1 << 16, 0);
    rs_sub *a, *b;
    char buf[4096], out[4096];
    size_t len, lengths[64];
    uint64_t i, got_a = 0, got_b = 0;
    int n, k;
    CHECK_RC(rs_topic_subscribe(t, 0, 0, SECOND, &a));
    CHECK_RC(rs_topic_subscribe(t, 0, 0, SECOND, &b));
    for (i = 0; i < 5000; i++) {
        size_t size = 8 + (i * 7919) % 1500;
        int rc = rs_topic_publish(t, buf, make_message(buf, i, size), 0);
        if (rc == RS_FULL) {
            /* Both tethered: drain them, then publish again. */
            while (rs_sub_get(a, out, sizeof(out), &len, 0) == 0)
                CHECK(check_message(out, len) == got_a++);
            while ((n = rs_sub_get_many(b, out, sizeof(out), lengths, 64, 0)) > 0) {
                size_t at = 0;
                for (k = 0; k < n; k++) {
                    CHECK(check_message(out + at, lengths[k]) == got_b++);
                    at += lengths[k];
                }
            }
            CHECK_RC(rs_topic_publish(t, buf, size, 0));
        } else {
            CHECK_RC(rc);
        }
    }
    while (rs_sub_get(a, out, sizeof(out), &len, 0) == 0)
        CHECK(check_message(out, len) == got_a++);
    while (rs_sub_get(b, out, sizeof(out), &len, 0) == 0)
        CHECK(check_message(out, len) == got_b++);
    if (got_a != 5000 || got_b != 5000) fprintf(stderr, "got %llu %llu rc %d\n", (unsigned long long)got_a, (unsigned long long)got_b, rs_sub_get(a, out, sizeof(out), &len, 0));
    CHECK(got_a == 5000 && got_b == 5000);
    CHECK(rs_sub_get(a, out, sizeof(out), &len, 0) == RS_EMPTY);
    CHECK(rs_sub_lag(a) == 0);
    rs_sub_close(a);
    rs_sub_close(b);
    rs_topic_close(t);
}

static void test_tethered_blocks_untethered_lags(void) {
    rs_topic *t = anon(4096, 0);
    rs_sub *tethered, *loose;
    char buf[256], out[256];
    size_t len;
    uint64_t i, published = 0, got = 0, missed = 0;
    int rc;
    CHECK_RC(rs_topic_subscribe(t, RS_SUB_UNTETHERED, 0, SECOND, &loose));
    CHECK_RC(rs_topic_subscribe(t, 0, 0, SECOND, &tethered));
    /* The tethered one reads nothing: publishing stops when the log is full. */
    for (i = 0; (rc = rs_topic_publish(t, buf, make_message(buf, i, 100), 0)) == 0; i++)
        published++;
    CHECK(rc == RS_FULL);
    CHECK(published > 10 && published < 40);
    CHECK(rs_sub_get(tethered, out, sizeof(out), &len, 0) == 0);
    CHECK(check_message(out, len) == 0);
    CHECK_RC(rs_topic_publish(t, buf, make_message(buf, published, 100), 0));
    published++;
    rs_sub_close(tethered);
    /* Only the untethered one now: publishers never wait. */
    for (i = 0; i < 1000; i++) {
        CHECK_RC(rs_topic_publish(t, buf, make_message(buf, published, 100), 0));
        published++;
    }
    for (;;) {
        rc = rs_sub_get(loose, out, sizeof(out), &len, 0);
        if (rc == RS_LAGGED) {
            CHECK(rs_sub_missed(loose) > 0);
            missed += rs_sub_missed(loose);
            continue;
        }
        if (rc == RS_EMPTY)
            break;
        CHECK_RC(rc);
        CHECK(check_message(out, len) == got + missed);
        got++;
    }
    CHECK(got + missed == published);
    CHECK(missed > 900);
    rs_sub_close(loose);
    rs_topic_close(t);
}

static void test_history(void) {
    rs_topic *t = anon(1 << 16, 5);
    rs_sub *s, *late;
    char buf[64], out[64];
    size_t len;
    uint64_t i;
    CHECK_RC(rs_topic_subscribe(t, RS_SUB_UNTETHERED, 0, SECOND, &s));
    for (i = 0; i < 3; i++)
        CHECK_RC(rs_topic_publish(t, buf, make_message(buf, i, 16), 0));
    CHECK_RC(rs_topic_subscribe(t, 0, 0, SECOND, &late));   /* 3 held: all 3 */
    for (i = 0; i < 3; i++) {
        CHECK_RC(rs_sub_get(late, out, sizeof(out), &len, 0));
        CHECK(check_message(out, len) == i);
    }
    rs_sub_close(late);
    for (i = 3; i < 10; i++)
        CHECK_RC(rs_topic_publish(t, buf, make_message(buf, i, 16), 0));
    CHECK_RC(rs_topic_subscribe(t, 0, 0, SECOND, &late));   /* the last 5 */
    for (i = 5; i < 10; i++) {
        CHECK_RC(rs_sub_get(late, out, sizeof(out), &len, 0));
        CHECK(check_message(out, len) == i);
    }
    CHECK(rs_sub_get(late, out, sizeof(out), &len, 0) == RS_EMPTY);
    rs_sub_close(late);
    rs_sub_close(s);
    rs_topic_close(t);
    CHECK(rs_topic_anonymous(4096, RS_TOPIC_MAX_HISTORY + 1, NULL, &t) == RS_INVALID);
}

static void test_kinds(void) {
    rs_topic *t;
    rs_ring *r;
    char ring_name[80];
    CHECK_RC(rs_topic_create_name(name, 8192, 0, NULL, &t));
    CHECK(rs_open_name(name, NULL, &r) == RS_WRONG_KIND);
    CHECK_RC(rs_topic_publish(t, "x", 1, 0));   /* nothing damaged */
    rs_topic_close(t);
    snprintf(ring_name, sizeof(ring_name), "%s-ring", name);
    CHECK_RC(rs_create_name(ring_name, 8192, NULL, &r));
    CHECK(rs_topic_open_name(ring_name, NULL, &t) == RS_WRONG_KIND);
    CHECK_RC(rs_put(r, "y", 1, 0));
    rs_close(r);
}

static void test_many_subscribers(void) {
    rs_topic *t = anon(1 << 16, 0);
    rs_sub *subs[RS_TOPIC_MAX_SUBSCRIBERS], *extra;
    char out[16];
    size_t len;
    int i;
    for (i = 0; i < RS_TOPIC_MAX_SUBSCRIBERS; i++)
        CHECK_RC(rs_topic_subscribe(t, i % 2 ? RS_SUB_UNTETHERED : 0, 0, SECOND, &subs[i]));
    CHECK(rs_topic_subscribe(t, 0, 0, SECOND, &extra) == RS_NO_SLOT);
    CHECK_RC(rs_topic_publish(t, "hello", 5, 0));
    for (i = 0; i < RS_TOPIC_MAX_SUBSCRIBERS; i++) {
        CHECK_RC(rs_sub_get(subs[i], out, sizeof(out), &len, 0));
        CHECK(len == 5 && memcmp(out, "hello", 5) == 0);
    }
    rs_sub_close(subs[7]);
    CHECK_RC(rs_topic_subscribe(t, 0, 0, SECOND, &subs[7]));
    for (i = 0; i < RS_TOPIC_MAX_SUBSCRIBERS; i++)
        rs_sub_close(subs[i]);
    rs_topic_close(t);
}

/* A tethered subscriber in a child, SIGKILLed: publishers go on within
 * about the recovery interval (0.1 s). */
static void test_dead_subscriber(void) {
    rs_topic *t;
    rs_sub *s;
    char buf[256];
    int pipefd[2], i, status;
    pid_t child;
    int64_t start;
    CHECK_RC(rs_topic_create_name(name, 4096, 0, NULL, &t));
    CHECK(pipe(pipefd) == 0);
    child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        rs_topic *mine;
        CHECK_RC(rs_topic_open_name(name, NULL, &mine));
        CHECK_RC(rs_topic_subscribe(mine, 0, 0, SECOND, &s));
        CHECK(write(pipefd[1], "r", 1) == 1);
        pause();
        _exit(0);
    }
    CHECK(read(pipefd[0], buf, 1) == 1);
    for (i = 0; rs_topic_publish(t, buf, 200, 0) == 0; i++)
        CHECK(i < 100);
    kill(child, SIGKILL);
    waitpid(child, &status, 0);
    start = now_ns();
    for (i = 0; i < 200; i++)
        CHECK_RC(rs_topic_publish(t, buf, 200, 5 * SECOND));
    CHECK(now_ns() - start < 3 * SECOND);
    {
        struct rs_topic_stats st;
        CHECK_RC(rs_topic_stats(t, &st));
        CHECK(st.reaped >= 1 && st.subscribers == 0);
    }
    close(pipefd[0]);
    close(pipefd[1]);
    rs_topic_close(t);
}

static void test_stall_timeout(void) {
    rs_topic *t = anon(4096, 0);
    rs_sub *s;
    char buf[256], out[256];
    size_t len;
    uint64_t i, published = 0, got = 0, missed = 0;
    int rc;
    CHECK_RC(rs_topic_subscribe(t, 0, 0.2, SECOND, &s));
    CHECK(rs_sub_tethered(s));
    for (i = 0; i < 300; i++) {
        CHECK_RC(rs_topic_publish(t, buf, make_message(buf, i, 100), 5 * SECOND));
        published++;
    }
    CHECK(!rs_sub_tethered(s));
    for (;;) {
        rc = rs_sub_get(s, out, sizeof(out), &len, 0);
        if (rc == RS_LAGGED) {
            missed += rs_sub_missed(s);
            continue;
        }
        if (rc == RS_EMPTY)
            break;
        CHECK_RC(rc);
        CHECK(check_message(out, len) == got + missed);
        got++;
    }
    CHECK(missed > 0 && got + missed == published);
    {
        struct rs_topic_stats st;
        CHECK_RC(rs_topic_stats(t, &st));
        CHECK(st.stalls == 1);
    }
    rs_sub_close(s);
    rs_topic_close(t);
}

static void test_shutdown_and_views(void) {
    rs_topic *t = anon(8192, 0);
    rs_sub *s;
    rs_span span;
    char out[64];
    size_t len;
    CHECK_RC(rs_topic_subscribe(t, 0, 0, SECOND, &s));
    CHECK_RC(rs_topic_reserve(t, 3, &span, 0));
    memcpy(span.data, "abc", 3);
    CHECK(rs_topic_publish(t, "z", 1, 0) == RS_DEADLOCK);   /* inside our own reserve */
    CHECK_RC(rs_topic_commit(t, &span));
    CHECK_RC(rs_topic_reserve(t, 3, &span, 0));
    CHECK_RC(rs_topic_cancel(t, &span));
    CHECK_RC(rs_topic_publish(t, "def", 3, 0));
    CHECK_RC(rs_sub_view(s, &span, 0));
    CHECK(span.len == 3 && memcmp(span.data, "abc", 3) == 0);
    CHECK(rs_sub_get(s, out, sizeof(out), &len, 0) == RS_DEADLOCK);
    CHECK_RC(rs_sub_keep(s, &span));
    CHECK_RC(rs_sub_view(s, &span, 0));
    CHECK(span.len == 3 && memcmp(span.data, "abc", 3) == 0);
    CHECK_RC(rs_sub_release(s, &span));
    CHECK_RC(rs_topic_shutdown(t));
    CHECK(rs_topic_publish(t, "x", 1, 0) == RS_SHUTDOWN);
    CHECK_RC(rs_sub_get(s, out, sizeof(out), &len, SECOND));
    CHECK(len == 3 && memcmp(out, "def", 3) == 0);
    CHECK(rs_sub_get(s, out, sizeof(out), &len, SECOND) == RS_SHUTDOWN);
    CHECK(rs_sub_wait(s, SECOND) == RS_SHUTDOWN);
    rs_sub_close(s);
    rs_topic_close(t);
}

/* ---- threads and processes ------------------------------------------------ */

#define PUBLISHERS 2
#define PER_PUBLISHER 20000

typedef struct {
    rs_sub *sub;
    uint64_t next[PUBLISHERS];   /* per publisher: the next number expected */
    uint64_t count;
    uint64_t *shared_count;      /* two threads on one subscription */
    pthread_mutex_t *mu;
} reader;

static void *read_all(void *arg) {
    reader *rd = arg;
    char out[512];
    size_t len;
    uint64_t v;
    int rc;
    for (;;) {
        rc = rs_sub_get(rd->sub, out, sizeof(out), &len, 10 * SECOND);
        if (rc == RS_SHUTDOWN)
            break;
        CHECK_RC(rc);
        CHECK(len >= 16);
        memcpy(&v, out + 8, 8);
        CHECK(v < PUBLISHERS);
        if (rd->mu != NULL) {
            pthread_mutex_lock(rd->mu);
            (*rd->shared_count)++;
            pthread_mutex_unlock(rd->mu);
        } else {
            uint64_t n;
            size_t k;
            memcpy(&n, out, 8);
            CHECK(n == rd->next[v]);
            for (k = 16; k < len; k++)
                CHECK(out[k] == (char)(n * 31 + k));
            rd->next[v]++;
        }
        rd->count++;
    }
    return NULL;
}

static void test_processes_and_threads(void) {
    rs_topic *t;
    rs_sub *subs[4], *shared;
    reader readers[6];
    pthread_t threads[6];
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    uint64_t shared_count = 0;
    pid_t children[PUBLISHERS];
    int i, status;
    CHECK_RC(rs_topic_create_name(name, 1 << 16, 0, NULL, &t));
    for (i = 0; i < 4; i++)
        CHECK_RC(rs_topic_subscribe(t, 0, 0, SECOND, &subs[i]));
    CHECK_RC(rs_topic_subscribe(t, 0, 0, SECOND, &shared));
    memset(readers, 0, sizeof(readers));
    for (i = 0; i < 6; i++) {
        readers[i].sub = i < 4 ? subs[i] : shared;
        if (i >= 4) {
            readers[i].mu = &mu;
            readers[i].shared_count = &shared_count;
        }
        CHECK(pthread_create(&threads[i], NULL, read_all, &readers[i]) == 0);
    }
    for (i = 0; i < PUBLISHERS; i++) {
        children[i] = fork();
        CHECK(children[i] >= 0);
        if (children[i] == 0) {
            rs_topic *mine;
            char buf[512];
            uint64_t k, who = (uint64_t)i;
            CHECK_RC(rs_topic_open_name(name, NULL, &mine));
            for (k = 0; k < PER_PUBLISHER; k++) {
                size_t size = make_message(buf, k, 16 + (k * 13) % 400);
                memcpy(buf + 8, &who, 8);   /* its number, the publisher, derived bytes */
                CHECK_RC(rs_topic_publish(mine, buf, size, 30 * SECOND));
            }
            rs_topic_close(mine);
            _exit(0);
        }
    }
    for (i = 0; i < PUBLISHERS; i++) {
        CHECK(waitpid(children[i], &status, 0) == children[i]);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    CHECK_RC(rs_topic_shutdown(t));
    for (i = 0; i < 6; i++)
        CHECK(pthread_join(threads[i], NULL) == 0);
    for (i = 0; i < 4; i++) {
        CHECK(readers[i].count == PUBLISHERS * PER_PUBLISHER);
        CHECK(readers[i].next[0] == PER_PUBLISHER && readers[i].next[1] == PER_PUBLISHER);
        rs_sub_close(subs[i]);
    }
    CHECK(shared_count == PUBLISHERS * PER_PUBLISHER);
    rs_sub_close(shared);
    rs_topic_close(t);
}

int main(void) {
    creator = getpid();
    snprintf(name, sizeof(name), "ctest-topic-%d", (int)creator);
    atexit(cleanup);
    test_every_subscriber_gets_everything();
    test_tethered_blocks_untethered_lags();
    test_history();
    test_kinds();
    test_many_subscribers();
    test_dead_subscriber();
    test_stall_timeout();
    test_shutdown_and_views();
    test_processes_and_threads();
    printf("test_topic: ok\n");
    return 0;
}
