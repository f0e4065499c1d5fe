/* Defects found in review of topic.c, each a test that failed before its fix:
 *
 *  (a) the ring calls on a topic's ring handle (rs_topic_ring) were not
 *      refused: rs_put wrote an 8-byte ring record into the log (every
 *      later publish and get said RS_CORRUPTED), rs_get moved the log's
 *      tail under the get lock, behind the publishers' backs.  They return
 *      RS_WRONG_KIND, as ringshm.h says, and change nothing.
 *  (b) a cancelled rs_topic_reserve had already written its record's
 *      position into the history index: the slot of the oldest message a
 *      new subscriber would start from named an unpublished record, and
 *      rs_topic_subscribe said RS_CORRUPTED.  (A publisher killed between
 *      its index writes and its head did the same.)
 *  (c) a tethered subscriber with a stall_timeout that subscribed (with
 *      history, behind the waiting publisher) while a publisher waited was
 *      untethered at the publisher's next look: its "watched since" was 0.
 *  (d) an untethered subscriber read the head, then the tail: a tail that
 *      had passed that head in between (the subscriber preempted, the
 *      publishers a lap ahead) was taken for damage: RS_CORRUPTED.
 *  (e) a look time or a watched time far from now in the segment (a peer's
 *      damage) made a signed subtraction overflow (UBSan stops there).
 * Exits non-zero on failure. */
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
#include "internal.h"
#include "ringshm.h"

#define SECOND 1000000000LL
#define MS 1000000LL

static char name[64];
static pid_t creator;

static void cleanup(void) {
    if (getpid() == creator)
        rs_unlink_name(name);
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static uint64_t number_of(const char *buf, size_t len) {
    uint64_t v;
    CHECK(len >= 8);
    memcpy(&v, buf, 8);
    return v;
}

static void publish_number(rs_topic *t, uint64_t i, size_t size, int64_t timeout) {
    char buf[512];
    memset(buf, (int)(i & 0x7f), sizeof(buf));
    memcpy(buf, &i, 8);
    CHECK_RC(rs_topic_publish(t, buf, size, timeout));
}

/* (a) */
static void test_ring_calls_refused(void) {
    rs_topic *t;
    rs_ring *r;
    rs_sub *s;
    rs_span span;
    struct iovec one = {(void *)"x", 1};
    rs_waiter item;
    char out[64];
    size_t len, lengths[4];
    CHECK_RC(rs_topic_anonymous(8192, 4, NULL, &t));
    r = rs_topic_ring(t);
    CHECK_RC(rs_topic_subscribe(t, 0, 0, SECOND, &s));
    publish_number(t, 0, 16, 0);
    CHECK(rs_put(r, "x", 1, 0) == RS_WRONG_KIND);
    CHECK(rs_put_many(r, &one, 1, 0) == RS_WRONG_KIND);
    CHECK(rs_reserve(r, 1, &span, 0) == RS_WRONG_KIND);
    CHECK(rs_get(r, out, sizeof(out), &len, 0) == RS_WRONG_KIND);
    CHECK(rs_get_many(r, out, sizeof(out), lengths, 4, 0) == RS_WRONG_KIND);
    CHECK(rs_view(r, &span, 0) == RS_WRONG_KIND);
    CHECK(rs_wait_data(r, 0) == RS_WRONG_KIND);
    CHECK(rs_wait_room(r, 1, 0) == RS_WRONG_KIND);
    CHECK(rs_task_done(r, 1) == RS_WRONG_KIND);
    CHECK(rs_wait_joined(r, 0) == RS_WRONG_KIND);
    CHECK(rs_shutdown(r, RS_SHUTDOWN_IMMEDIATE) == RS_WRONG_KIND);
    CHECK(rs_count(r) == RS_WRONG_KIND && rs_full(r) == RS_WRONG_KIND);
    CHECK_RC(rs_topic_reserve(t, 4, &span, 0));
    CHECK(rs_commit(r, &span) == RS_WRONG_KIND && rs_cancel(r, &span) == RS_WRONG_KIND);
    CHECK_RC(rs_topic_cancel(t, &span));
    memset(&item, 0, sizeof(item));
    item.ring = r;
    item.events = RS_WAIT_DATA;
    CHECK(rs_wait(&item, 1, NULL, 0, 0) == RS_WRONG_KIND);
    CHECK(!rs_topic_is_shutdown(t));
    /* Nothing changed: the topic goes on. */
    publish_number(t, 1, 16, 0);
    CHECK_RC(rs_sub_get(s, out, sizeof(out), &len, 0));
    CHECK(number_of(out, len) == 0);
    CHECK_RC(rs_sub_get(s, out, sizeof(out), &len, 0));
    CHECK(number_of(out, len) == 1);
    rs_sub_close(s);
    rs_topic_close(t);
}

/* (b) */
static void test_cancel_keeps_history(void) {
    rs_topic *t;
    rs_sub *s;
    rs_span span;
    char out[64];
    size_t len;
    uint64_t i;
    CHECK_RC(rs_topic_anonymous(8192, 3, NULL, &t));
    for (i = 0; i < 5; i++)
        publish_number(t, i, 16, 0);
    CHECK_RC(rs_topic_reserve(t, 16, &span, 0));
    CHECK_RC(rs_topic_cancel(t, &span));
    CHECK_RC(rs_topic_subscribe(t, 0, 0, SECOND, &s));   /* the last 3: 2, 3, 4 */
    for (i = 2; i < 5; i++) {
        CHECK_RC(rs_sub_get(s, out, sizeof(out), &len, 0));
        CHECK(number_of(out, len) == i);
    }
    CHECK(rs_sub_get(s, out, sizeof(out), &len, 0) == RS_EMPTY);
    rs_sub_close(s);
    /* A committed reserve is in the history. */
    CHECK_RC(rs_topic_reserve(t, 16, &span, 0));
    memset(span.data, 0, 16);
    i = 5;
    memcpy(span.data, &i, 8);
    CHECK_RC(rs_topic_commit(t, &span));
    CHECK_RC(rs_topic_subscribe(t, 0, 0, SECOND, &s));   /* 3, 4, 5 */
    for (i = 3; i < 6; i++) {
        CHECK_RC(rs_sub_get(s, out, sizeof(out), &len, 0));
        CHECK(number_of(out, len) == i);
    }
    rs_sub_close(s);
    /* An index slot that names another record (a publisher killed between
     * writing it and publishing): the subscriber starts a little later,
     * at the oldest message the index still names. */
    {
        rs_ring *r = rs_topic_ring(t);
        uint64_t next = r->hdr->producer.messages;   /* 6 */
        r->index[(next - 3) % 3] = r->hdr->producer.position;   /* seq 3's slot: garbage */
        CHECK_RC(rs_topic_subscribe(t, 0, 0, SECOND, &s));   /* 4, 5 */
        for (i = 4; i < 6; i++) {
            CHECK_RC(rs_sub_get(s, out, sizeof(out), &len, 0));
            CHECK(number_of(out, len) == i);
        }
        CHECK(rs_sub_get(s, out, sizeof(out), &len, 0) == RS_EMPTY);
        rs_sub_close(s);
    }
    rs_topic_close(t);
}

/* (c) */
typedef struct {
    rs_topic *t;
    int rc;
} pub_arg;

static void *publish_one_waiting(void *arg) {
    pub_arg *a = arg;
    char buf[200];
    memset(buf, 0, sizeof(buf));
    a->rc = rs_topic_publish(a->t, buf, sizeof(buf), 10 * SECOND);
    return NULL;
}

static void test_new_subscriber_not_stalled(void) {
    rs_topic *t;
    rs_sub *stuck, *late;
    pthread_t thread;
    pub_arg arg;
    char out[512];
    size_t len;
    uint64_t i;
    CHECK_RC(rs_topic_anonymous(4096, 64, NULL, &t));
    CHECK_RC(rs_topic_subscribe(t, 0, 0, SECOND, &stuck));
    for (i = 0; rs_topic_publish(t, out, 200, 0) == 0; i++)
        CHECK(i < 100);
    arg.t = t;
    arg.rc = 1;
    CHECK(pthread_create(&thread, NULL, publish_one_waiting, &arg) == 0);
    sleep_ms(150);   /* the publisher waits, and has looked */
    CHECK(arg.rc == 1);
    CHECK_RC(rs_topic_subscribe(t, 0, 1.0, SECOND, &late));   /* from the oldest held */
    sleep_ms(400);   /* several looks of the waiting publisher, well within 1 s */
    CHECK(rs_sub_tethered(late));
    rs_sub_close(stuck);
    while (rs_sub_get(late, out, sizeof(out), &len, 0) == 0) {
    }
    CHECK(pthread_join(thread, NULL) == 0);
    CHECK_RC(arg.rc);
    CHECK(rs_sub_tethered(late));
    rs_sub_close(late);
    rs_topic_close(t);
}

/* (d): an untethered subscriber in a child reads as fast as it can while a
 * publisher (another child) laps the log; the parent stops and continues
 * the subscriber a few thousand times, so that some stops fall between
 * its two loads.  It must see only messages, RS_LAGGED and RS_EMPTY. */
static void test_overrun_reader_stopped_anywhere(void) {
    rs_topic *t;
    pid_t reader, writer;
    int status, pipefd[2], i;
    char c;
    CHECK_RC(rs_topic_create_name(name, 4096, 0, NULL, &t));
    CHECK(pipe(pipefd) == 0);
    reader = fork();
    CHECK(reader >= 0);
    if (reader == 0) {
        rs_topic *mine;
        rs_sub *s;
        char out[512];
        size_t len;
        uint64_t got = 0, lags = 0;
        int rc;
        CHECK_RC(rs_topic_open_name(name, NULL, &mine));
        CHECK_RC(rs_topic_subscribe(mine, RS_SUB_UNTETHERED, 0, SECOND, &s));
        CHECK(write(pipefd[1], "r", 1) == 1);
        for (;;) {
            rc = rs_sub_get(s, out, sizeof(out), &len, 0);
            if (rc == 0)
                got++;
            else if (rc == RS_LAGGED)
                lags++;
            else if (rc == RS_SHUTDOWN)
                break;
            else if (rc != RS_EMPTY) {
                fprintf(stderr, "overrun reader: rc %d (%s) after %llu messages, %llu lags\n",
                        rc, rs_detail(), (unsigned long long)got, (unsigned long long)lags);
                _exit(3);
            }
        }
        _exit(got > 0 && lags > 0 ? 0 : 4);
    }
    CHECK(read(pipefd[0], &c, 1) == 1);
    writer = fork();
    CHECK(writer >= 0);
    if (writer == 0) {
        rs_topic *mine;
        char buf[112];
        uint64_t k;
        int rc;
        CHECK_RC(rs_topic_open_name(name, NULL, &mine));
        memset(buf, 'w', sizeof(buf));
        for (k = 0;; k++) {
            memcpy(buf, &k, 8);
            rc = rs_topic_publish(mine, buf, 8 + k % 100, SECOND);
            if (rc == RS_SHUTDOWN)
                _exit(0);
            if (rc != 0)
                _exit(5);
        }
    }
    for (i = 0; i < 3000; i++) {
        CHECK(kill(reader, SIGSTOP) == 0);
        CHECK(waitpid(reader, &status, WUNTRACED) == reader && WIFSTOPPED(status));
        sleep_ms(0);
        {
            struct timespec ts = {0, 50000};
            nanosleep(&ts, NULL);
        }
        CHECK(kill(reader, SIGCONT) == 0);
        {
            struct timespec ts = {0, (long)(i % 7) * 20000};
            nanosleep(&ts, NULL);
        }
    }
    CHECK_RC(rs_topic_shutdown(t));
    CHECK(waitpid(writer, &status, 0) == writer);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(waitpid(reader, &status, 0) == reader);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fprintf(stderr, "reader status %#x\n", status);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    close(pipefd[0]);
    close(pipefd[1]);
    rs_topic_close(t);
    rs_unlink_name(name);
}

/* (e) */
static void test_far_times(void) {
    static const uint64_t times[] = {1ull << 63, UINT64_MAX, (1ull << 63) - 1, 0};
    rs_topic *t;
    rs_ring *r;
    rs_sub *s;
    char out[512];
    size_t len;
    unsigned k;
    int i, rc;
    for (k = 0; k < sizeof(times) / sizeof(times[0]); k++) {
        CHECK_RC(rs_topic_anonymous(4096, 0, NULL, &t));
        r = rs_topic_ring(t);
        CHECK_RC(rs_topic_subscribe(t, 0, 0.01, SECOND, &s));
        for (i = 0; i < 40; i++) {
            r->tblock->looked_ns = times[k];
            r->subs[0].watched_ns = times[(k + 1) % 4];
            rc = rs_topic_publish(t, out, 300, 20 * MS);
            CHECK(rc == 0 || rc == RS_FULL);
        }
        while ((rc = rs_sub_get(s, out, sizeof(out), &len, 0)) == 0 || rc == RS_LAGGED) {
        }
        CHECK(rc == RS_EMPTY);
        rs_sub_close(s);
        rs_topic_close(t);
    }
}

/* With an argument: that test only (a, b, c, d or e). */
int main(int argc, char **argv) {
    const char *only = argc > 1 ? argv[1] : "abcde";
    creator = getpid();
    snprintf(name, sizeof(name), "ctest-topicdef-%d", (int)creator);
    atexit(cleanup);
    if (strchr(only, 'a'))
        test_ring_calls_refused();
    if (strchr(only, 'b'))
        test_cancel_keeps_history();
    if (strchr(only, 'c'))
        test_new_subscriber_not_stalled();
    if (strchr(only, 'e'))
        test_far_times();
    if (strchr(only, 'd'))
        test_overrun_reader_stopped_anywhere();
    printf("test_topic_defects: ok\n");
    return 0;
}
