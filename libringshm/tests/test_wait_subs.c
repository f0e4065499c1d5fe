/* rs_wait on subscriptions of topics (rs_waiter.sub, ring NULL), beside
 * rings: ready with RS_WAIT_DATA when the subscriber has something to take
 * (a message, or RS_LAGGED to report), RS_WAIT_SHUTDOWN once shut down and
 * drained for it, RS_CLOSED when it is closed during the wait; a publish
 * in another thread or process ends the sleep; more items than one
 * futex_waitv takes; the arguments refused.  Exits non-zero on failure. */
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

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * SECOND + ts.tv_nsec;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void sub_item(rs_waiter *w, rs_sub *s) {
    memset(w, 0, sizeof(*w));
    w->sub = s;
    w->events = RS_WAIT_DATA;
}

typedef struct {
    rs_topic *t;
    rs_sub *close_me;
    long delay_ms;
} later;

static void *publish_later(void *arg) {
    later *l = arg;
    sleep_ms(l->delay_ms);
    if (l->close_me != NULL)
        rs_sub_close(l->close_me);
    else
        CHECK_RC(rs_topic_publish(l->t, "late", 4, SECOND));
    return NULL;
}

static void test_rings_and_subscriptions(void) {
    rs_ring *ring;
    rs_topic *t1, *t2;
    rs_sub *a, *b;
    rs_waiter items[3];
    pthread_t thread;
    later l;
    char out[256];
    size_t len;
    int64_t start, took;
    int i, rc;
    CHECK_RC(rs_anonymous(4096, NULL, &ring));
    CHECK_RC(rs_topic_anonymous(4096, 0, NULL, &t1));
    CHECK_RC(rs_topic_anonymous(4096, 0, NULL, &t2));
    CHECK_RC(rs_topic_subscribe(t1, 0, 0, SECOND, &a));
    CHECK_RC(rs_topic_subscribe(t2, RS_SUB_UNTETHERED, 0, SECOND, &b));
    memset(&items[0], 0, sizeof(items[0]));
    items[0].ring = ring;
    items[0].events = RS_WAIT_DATA;
    items[0].sub = (rs_sub *)&items;   /* not read: the item is a ring */
    sub_item(&items[1], a);
    sub_item(&items[2], b);
    CHECK(rs_wait(items, 3, NULL, 0, 0) == RS_EMPTY);

    /* A publish in another thread ends the sleep. */
    l.t = t1;
    l.close_me = NULL;
    l.delay_ms = 60;
    start = now_ns();
    CHECK(pthread_create(&thread, NULL, publish_later, &l) == 0);
    rc = rs_wait(items, 3, NULL, 0, 5 * SECOND);
    took = now_ns() - start;
    CHECK(pthread_join(thread, NULL) == 0);
    CHECK(rc == 1 && items[1].ready == RS_WAIT_DATA && items[0].ready == 0
          && items[2].ready == 0);
    CHECK(took >= 50 * MS && took < 2 * SECOND);
    CHECK_RC(rs_sub_get(a, out, sizeof(out), &len, 0));
    CHECK(rs_wait(items, 3, NULL, 0, 0) == RS_EMPTY);

    /* The ring and a subscription at once. */
    CHECK_RC(rs_put(ring, "r", 1, 0));
    CHECK_RC(rs_topic_publish(t1, "t", 1, 0));
    CHECK(rs_wait(items, 3, NULL, 0, 0) == 2);
    CHECK(items[0].ready == RS_WAIT_DATA && items[1].ready == RS_WAIT_DATA);
    CHECK_RC(rs_get(ring, out, sizeof(out), &len, 0));
    CHECK_RC(rs_sub_get(a, out, sizeof(out), &len, 0));

    /* An untethered subscriber overrun: ready, its get says RS_LAGGED, and
     * once it has taken everything it is not ready any more. */
    for (i = 0; i < 200; i++)
        CHECK_RC(rs_topic_publish(t2, out, 100, 0));
    CHECK(rs_wait(items, 3, NULL, 0, 0) == 1 && items[2].ready == RS_WAIT_DATA);
    CHECK(rs_sub_get(b, out, sizeof(out), &len, 0) == RS_LAGGED);
    CHECK(rs_wait(items, 3, NULL, 0, 0) == 1 && items[2].ready == RS_WAIT_DATA);
    while (rs_sub_get(b, out, sizeof(out), &len, 0) == 0) {
    }
    CHECK(rs_wait(items, 3, NULL, 0, 0) == RS_EMPTY);

    /* Shut down: a message still to take is data; then shut down. */
    CHECK_RC(rs_topic_publish(t1, "last", 4, 0));
    CHECK_RC(rs_topic_shutdown(t1));
    CHECK(rs_wait(items, 3, NULL, 0, 0) == 1 && items[1].ready == RS_WAIT_DATA);
    CHECK_RC(rs_sub_get(a, out, sizeof(out), &len, 0));
    CHECK(rs_wait(items, 3, NULL, 0, 0) == 1 && items[1].ready == RS_WAIT_SHUTDOWN);
    CHECK(rs_sub_get(a, out, sizeof(out), &len, 0) == RS_SHUTDOWN);

    /* Closed during the wait: RS_CLOSED, at once. */
    l.close_me = b;
    l.delay_ms = 60;
    start = now_ns();
    CHECK(pthread_create(&thread, NULL, publish_later, &l) == 0);
    rc = rs_wait(&items[2], 1, NULL, 0, 10 * SECOND);
    took = now_ns() - start;
    CHECK(pthread_join(thread, NULL) == 0);
    CHECK(rc == RS_CLOSED);
    CHECK(took < 2 * SECOND);

    rs_sub_close(a);
    rs_topic_close(t1);
    rs_topic_close(t2);
    rs_close(ring);
}

static void test_refused(void) {
    rs_topic *t;
    rs_sub *s;
    rs_waiter w;
    CHECK_RC(rs_topic_anonymous(4096, 0, NULL, &t));
    CHECK_RC(rs_topic_subscribe(t, 0, 0, SECOND, &s));
    memset(&w, 0, sizeof(w));
    w.events = RS_WAIT_DATA;
    CHECK(rs_wait(&w, 1, NULL, 0, 0) == RS_INVALID);   /* neither ring nor sub */
    sub_item(&w, s);
    w.events = RS_WAIT_ROOM;
    CHECK(rs_wait(&w, 1, NULL, 0, 0) == RS_INVALID);   /* a subscription waits for data */
    memset(&w, 0, sizeof(w));
    w.ring = rs_topic_ring(t);
    w.events = RS_WAIT_DATA;
    CHECK(rs_wait(&w, 1, NULL, 0, 0) == RS_WRONG_KIND);
    /* A forked child's copy of the subscription is not its own. */
    {
        pid_t child = fork();
        int status;
        CHECK(child >= 0);
        if (child == 0) {
            sub_item(&w, s);
            _exit(rs_wait(&w, 1, NULL, 0, 0) == RS_NOT_OWNER ? 0 : 1);
        }
        CHECK(waitpid(child, &status, 0) == child);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    rs_sub_close(s);
    rs_topic_close(t);
}

/* A publisher in another process wakes a wait on 140 subscriptions of two
 * topics (past one futex_waitv's 128 words: helper threads). */
#define PER_TOPIC 70

static void test_many_and_another_process(void) {
    rs_topic *t[2];
    rs_sub *subs[2 * PER_TOPIC];
    rs_waiter items[2 * PER_TOPIC];
    char path[2][64];
    int64_t start, took;
    pid_t child;
    int i, k, rc, status;
    for (k = 0; k < 2; k++) {
        snprintf(path[k], sizeof(path[k]), "/tmp/ctest-waitsubs-%d-%d", (int)getpid(), k);
        CHECK_RC(rs_topic_create_path(path[k], 8192, 0, NULL, &t[k]));
        for (i = 0; i < PER_TOPIC; i++) {
            CHECK_RC(rs_topic_subscribe(t[k], i % 2 ? RS_SUB_UNTETHERED : 0, 0, SECOND,
                                        &subs[k * PER_TOPIC + i]));
            sub_item(&items[k * PER_TOPIC + i], subs[k * PER_TOPIC + i]);
        }
    }
    CHECK(rs_wait(items, 2 * PER_TOPIC, NULL, 0, 0) == RS_EMPTY);
    child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        rs_topic *mine;
        sleep_ms(80);
        CHECK_RC(rs_topic_open_path(path[1], NULL, &mine));
        CHECK_RC(rs_topic_publish(mine, "from a child", 12, SECOND));
        rs_topic_close(mine);
        _exit(0);
    }
    start = now_ns();
    rc = rs_wait(items, 2 * PER_TOPIC, NULL, 0, 10 * SECOND);
    took = now_ns() - start;
    CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(rc == PER_TOPIC);
    for (i = 0; i < 2 * PER_TOPIC; i++)
        CHECK(items[i].ready == (i >= PER_TOPIC ? RS_WAIT_DATA : 0u));
    CHECK(took >= 60 * MS && took < 3 * SECOND);
    printf("a publish in another process woke a wait on %d subscriptions after %.0f ms (%s)\n",
           2 * PER_TOPIC, (double)took / 1e6,
           rs_wait_uses_futex_waitv() ? "futex_waitv" : "polling fallback");
    for (i = 0; i < 2 * PER_TOPIC; i++)
        rs_sub_close(subs[i]);
    for (k = 0; k < 2; k++) {
        rs_topic_close(t[k]);
        rs_unlink_path(path[k]);
    }
}

int main(void) {
    test_rings_and_subscriptions();
    test_refused();
    test_many_and_another_process();
    printf("test_wait_subs: ok\n");
    return 0;
}
