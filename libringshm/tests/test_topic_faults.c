/* Topics under faults, with C processes:
 *
 *  1. Publishers SIGKILLed at random times while publishing (single
 *     messages, batches of three, and inside an open rs_topic_reserve
 *     span), each replaced by a new one, while subscriber processes that
 *     are themselves SIGKILLed inside get, get_many and view are replaced
 *     too.  Tethered subscribers that live through it receive every
 *     message of every publisher, in its order, without a duplicate: a
 *     publisher's messages are 0..n-1 where n is the count its returned
 *     publishes made, or that plus the one (batch) it was killed in.  An
 *     untethered one receives messages in order and its RS_LAGGED counts
 *     add up exactly.  The publishing never pauses much longer than the
 *     recovery interval.
 *  2. A publisher killed inside its reserve span: another publishes within
 *     about the recovery interval, and the span's message never appears.
 *  3. A SIGSTOPped tethered subscriber holds publishers back; once
 *     continued it receives everything.  With a stall_timeout publishers go
 *     on after it, and once continued it sees RS_LAGGED with the exact
 *     count.  A SIGSTOPped untethered subscriber never holds them back.
 *  4. 70 tethered subscribers in five processes each receive everything;
 *     a sixth process gets the 58 entries left, then RS_NO_SLOT.
 *
 * Prints its figures; exits non-zero on failure.  About 10 s. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "ringshm.h"

#define SECOND 1000000000LL
#define MS 1000000LL
#define RECOVERY 0.05

#define MAX_IDS 2048
#define READERS 4          /* 0-2 tethered (get, get_many, view), 3 untethered */
#define LIVE_PUBLISHERS 3
#define VICTIMS 2
#define KILL_SECONDS 3.0

static char name[64];
static pid_t creator;

typedef struct {
    uint64_t returned[MAX_IDS];   /* messages of publisher id whose publish returned 0 */
    uint8_t killed[MAX_IDS];
    uint64_t next[READERS][MAX_IDS];
    uint64_t got[READERS], missed[READERS], lags[READERS];
    int ready;
    int failed;
    char why[256];
} board;

static board *shared;

static void cleanup(void) {
    if (getpid() == creator)
        rs_unlink_name(name);
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * SECOND + ts.tv_nsec;
}

static void sleep_us(long us) {
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* A failure in a child: the first one is kept for the parent to print. */
static void child_fail(const char *fmt, long long a, long long b, long long c) {
    if (__atomic_fetch_add(&shared->failed, 1, __ATOMIC_SEQ_CST) == 0)
        snprintf(shared->why, sizeof(shared->why), fmt, a, b, c);
    _exit(1);
}

static uint64_t rng = 88172645463325252ull;
static uint64_t rnd(uint64_t n) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return n ? rng % n : 0;
}

static rs_topic *create_topic(uint64_t capacity) {
    rs_options o;
    rs_topic *t;
    rs_options_init(&o);
    o.recovery_interval = RECOVERY;
    rs_unlink_name(name);
    CHECK_RC(rs_topic_create_name(name, capacity, 0, &o, &t));
    return t;
}

static rs_topic *open_topic(void) {
    rs_topic *t;
    int rc = rs_topic_open_name(name, NULL, &t);
    if (rc != 0)
        child_fail("open: %lld", rc, 0, 0);
    return t;
}

static void wait_ready(int n) {
    int64_t give_up = now_ns() + 10 * SECOND;
    while (__atomic_load_n(&shared->ready, __ATOMIC_SEQ_CST) < n) {
        CHECK(now_ns() < give_up);
        sleep_us(1000);
    }
}

/* A message: publisher id, its number, then bytes derived from both. */
static size_t make(char *buf, uint32_t id, uint64_t k) {
    size_t size = 16 + (size_t)((k * 2654435761u + id) % 300), i;
    memcpy(buf, &id, 4);
    memcpy(buf + 4, &id, 4);
    memcpy(buf + 8, &k, 8);
    for (i = 16; i < size; i++)
        buf[i] = (char)(id * 7 + k * 13 + i);
    return size;
}

static void parse(const char *buf, size_t len, uint32_t *id, uint64_t *k) {
    size_t i;
    if (len < 16)
        child_fail("a message of %lld bytes", (long long)len, 0, 0);
    memcpy(id, buf, 4);
    memcpy(k, buf + 8, 8);
    if (*id >= MAX_IDS || memcmp(buf, buf + 4, 4) != 0)
        child_fail("a message of publisher %lld", *id, 0, 0);
    for (i = 16; i < len; i++)
        if (buf[i] != (char)(*id * 7 + *k * 13 + i))
            child_fail("message %lld of publisher %lld torn at byte %lld", (long long)*k, *id,
                       (long long)i);
}

/* ---- 1. publishers and subscribers killed ----------------------------------- */

static void publisher(uint32_t id) {
    rs_topic *t = open_topic();
    char buf[3][512];
    struct iovec v[3];
    rs_span span;
    uint64_t k = 0;
    size_t size, i;
    int rc, n;
    rng ^= (uint64_t)getpid() << 20;
    for (;;) {
        switch (id % 3) {
        case 0:
            n = 1;
            rc = rs_topic_publish(t, buf[0], make(buf[0], id, k), 10 * SECOND);
            break;
        case 1:
            n = 3;
            for (i = 0; i < 3; i++) {
                v[i].iov_base = buf[i];
                v[i].iov_len = make(buf[i], id, k + i);
            }
            rc = rs_topic_publish_many(t, v, 3, 10 * SECOND);
            break;
        default:
            n = 1;
            size = make(buf[0], id, k);
            rc = rs_topic_reserve(t, size, &span, 10 * SECOND);
            if (rc == 0) {
                /* Byte by byte: a kill lands inside the span often. */
                for (i = 0; i < size; i++)
                    ((volatile char *)span.data)[i] = buf[0][i];
                if (rnd(4) == 0)
                    sleep_us(100);   /* holding the lock a while */
                rc = rs_topic_commit(t, &span);
            }
            break;
        }
        if (rc == RS_SHUTDOWN)
            _exit(0);
        if (rc != 0)
            child_fail("publisher %lld: rc %lld at %lld", id, rc, (long long)k);
        k += (uint64_t)n;
        __atomic_store_n(&shared->returned[id], k, __ATOMIC_SEQ_CST);
    }
}

/* Reader `who`: 0 rs_sub_get, 1 rs_sub_get_many, 2 views, 3 untethered. */
static void reader(int who) {
    rs_topic *t = open_topic();
    rs_sub *s;
    rs_span span;
    static char out[1 << 16];
    size_t lengths[32], at;
    uint64_t *next = shared->next[who], k, got = 0, missed = 0, lags = 0;
    uint32_t id;
    int rc, n, i;
    rc = rs_topic_subscribe(t, who == 3 ? RS_SUB_UNTETHERED : 0, 0, SECOND, &s);
    if (rc != 0)
        child_fail("reader %lld: subscribe %lld", who, rc, 0);
    __atomic_add_fetch(&shared->ready, 1, __ATOMIC_SEQ_CST);
    for (;;) {
        n = 0;
        if (who == 1) {
            rc = rs_sub_get_many(s, out, sizeof(out), lengths, 32, 5 * SECOND);
            if (rc > 0) {
                n = rc;
                rc = 0;
            }
        } else if (who == 2) {
            rc = rs_sub_view(s, &span, 5 * SECOND);
            if (rc == 0) {
                memcpy(out, span.data, span.len);
                lengths[0] = span.len;
                n = 1;
                rc = rs_sub_release(s, &span);
            }
        } else {
            rc = rs_sub_get(s, out, sizeof(out), &lengths[0], 5 * SECOND);
            n = rc == 0;
        }
        if (rc == RS_SHUTDOWN)
            break;
        if (rc == RS_LAGGED && who == 3) {
            missed += rs_sub_missed(s);
            lags++;
            continue;
        }
        if (rc != 0)
            child_fail("reader %lld: rc %lld after %lld messages", who, rc, (long long)got);
        for (i = 0, at = 0; i < n; at += lengths[i], i++) {
            parse(out + at, lengths[i], &id, &k);
            if (who == 3 ? k < next[id] : k != next[id])
                child_fail("reader %d: publisher %lld's message %lld where %lld was expected",
                           id, (long long)k, (long long)next[id]);
            next[id] = k + 1;
            got++;
        }
    }
    shared->got[who] = got;
    shared->missed[who] = missed;
    shared->lags[who] = lags;
    rs_sub_close(s);
    rs_topic_close(t);
    _exit(0);
}

/* A subscriber that is killed at a random moment of its reading. */
static void victim(void) {
    rs_topic *t = open_topic();
    rs_sub *s;
    rs_span span;
    static char out[1 << 14];
    size_t len, lengths[16];
    int rc;
    rng ^= (uint64_t)getpid() << 24;
    if (rs_topic_subscribe(t, 0, 0, SECOND, &s) != 0)
        _exit(0);   /* the table was full for a moment: nothing to test */
    for (;;) {
        switch (rnd(3)) {
        case 0:
            rc = rs_sub_get(s, out, sizeof(out), &len, SECOND);
            break;
        case 1:
            rc = rs_sub_get_many(s, out, sizeof(out), lengths, 16, SECOND);
            break;
        default:
            rc = rs_sub_view(s, &span, SECOND);
            if (rc == 0) {
                sleep_us((long)rnd(200));   /* inside the view */
                rc = rnd(4) ? rs_sub_release(s, &span) : rs_sub_keep(s, &span);
            }
        }
        if (rc == RS_SHUTDOWN)
            _exit(0);
    }
}

static pid_t spawn(void (*body)(uint32_t), uint32_t arg) {
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        body(arg);
        _exit(0);
    }
    return pid;
}

static void publisher_body(uint32_t id) {
    publisher(id);
}

static void reader_body(uint32_t who) {
    reader((int)who);
}

static void victim_body(uint32_t unused) {
    (void)unused;
    victim();
}

static void reap_killed(pid_t pid) {
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)) {
        fprintf(stderr, "a child killed ended otherwise: status %#x (%s)\n", status, shared->why);
        CHECK(0);
    }
}

static void reap_clean(pid_t pid, const char *what) {
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        fprintf(stderr, "%s: status %#x: %s\n", what, status, shared->why);
        CHECK(0);
    }
}

static uint64_t batch_of(uint32_t id) {
    return id % 3 == 1 ? 3 : 1;
}

static void test_kills(void) {
    rs_topic *t = create_topic(1 << 16);
    struct rs_topic_stats st;
    pid_t readers[READERS], pubs[LIVE_PUBLISHERS], victims[VICTIMS];
    uint32_t pub_id[LIVE_PUBLISHERS], next_id = 0, id;
    uint64_t published, last_published = 0, publisher_kills = 0, victim_kills = 0, extra = 0;
    int64_t start, last_progress, longest_pause = 0, now;
    int i, w, status;
    memset(shared, 0, sizeof(*shared));
    for (i = 0; i < READERS; i++)
        readers[i] = spawn(reader_body, (uint32_t)i);
    wait_ready(READERS);
    for (i = 0; i < LIVE_PUBLISHERS; i++) {
        pub_id[i] = next_id++;
        pubs[i] = spawn(publisher_body, pub_id[i]);
    }
    for (i = 0; i < VICTIMS; i++)
        victims[i] = spawn(victim_body, 0);
    start = last_progress = now_ns();
    while ((now = now_ns()) - start < (int64_t)(KILL_SECONDS * SECOND)) {
        sleep_us(500 + (long)rnd(12000));
        /* A publisher that stopped on its own failed. */
        for (i = 0; i < LIVE_PUBLISHERS; i++)
            if (waitpid(pubs[i], &status, WNOHANG) == pubs[i]) {
                fprintf(stderr, "publisher %u ended: %#x: %s\n", pub_id[i], status, shared->why);
                CHECK(0);
            }
        CHECK(shared->failed == 0);
        i = (int)rnd(LIVE_PUBLISHERS);
        CHECK(kill(pubs[i], SIGKILL) == 0);
        reap_killed(pubs[i]);
        shared->killed[pub_id[i]] = 1;
        publisher_kills++;
        CHECK(next_id < MAX_IDS);
        pub_id[i] = next_id++;
        pubs[i] = spawn(publisher_body, pub_id[i]);
        if (rnd(3) == 0) {
            w = (int)rnd(VICTIMS);
            if (waitpid(victims[w], &status, WNOHANG) == victims[w]) {
                CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
            } else {
                CHECK(kill(victims[w], SIGKILL) == 0);
                reap_killed(victims[w]);
                victim_kills++;
            }
            victims[w] = spawn(victim_body, 0);
        }
        CHECK_RC(rs_topic_stats(t, &st));
        now = now_ns();
        if (st.published != last_published) {
            if (now - last_progress > longest_pause)
                longest_pause = now - last_progress;
            last_progress = now;
            last_published = st.published;
        }
    }
    CHECK_RC(rs_topic_shutdown(t));
    for (i = 0; i < LIVE_PUBLISHERS; i++)
        reap_clean(pubs[i], "a publisher");
    for (i = 0; i < VICTIMS; i++) {
        kill(victims[i], SIGKILL);
        waitpid(victims[i], &status, 0);
    }
    for (i = 0; i < READERS; i++)
        reap_clean(readers[i], "a reader");
    CHECK_RC(rs_topic_stats(t, &st));
    published = st.published;
    /* Per publisher: what returned, or that and the batch it died in. */
    for (id = 0; id < next_id; id++) {
        for (i = 0; i < 3; i++) {
            uint64_t n = shared->next[i][id], r = shared->returned[id];
            if (n != r && !(shared->killed[id] && n == r + batch_of(id))) {
                fprintf(stderr, "publisher %u: reader %d received %llu, %llu returned%s\n", id,
                        i, (unsigned long long)n, (unsigned long long)r,
                        shared->killed[id] ? " (killed)" : "");
                CHECK(0);
            }
            CHECK(shared->next[i][id] == shared->next[0][id]);
        }
        extra += shared->next[0][id] - shared->returned[id];
        CHECK(shared->next[3][id] <= shared->next[0][id]);
    }
    for (i = 0; i < 3; i++)
        CHECK(shared->got[i] == published && shared->missed[i] == 0);
    CHECK(shared->got[3] + shared->missed[3] == published);
    printf("kills: %llu publishers (%u publishers in all), %llu subscribers in get/view; "
           "%llu messages, every tethered reader got all of them, no loss, no duplicate; "
           "%llu published by a publish that never returned; untethered: %llu got, %llu "
           "missed in %llu lags (exact); %llu lock recoveries, %llu subscribers reaped; "
           "longest pause of publishing %.0f ms\n",
           (unsigned long long)publisher_kills, next_id, (unsigned long long)victim_kills,
           (unsigned long long)published, (unsigned long long)extra,
           (unsigned long long)shared->got[3], (unsigned long long)shared->missed[3],
           (unsigned long long)shared->lags[3], (unsigned long long)st.lock_recoveries,
           (unsigned long long)st.reaped, (double)longest_pause / 1e6);
    CHECK(publisher_kills > 20 && published > 1000);
    CHECK(longest_pause < 2 * SECOND);
    rs_topic_close(t);
    rs_unlink_name(name);
}

/* ---- 2. killed inside a reserve span ----------------------------------------- */

static void test_killed_in_reserve(void) {
    rs_topic *t = create_topic(8192);
    rs_sub *s;
    char out[64], c;
    size_t len;
    int pipefd[2], round;
    int64_t start, took, worst = 0;
    pid_t child;
    CHECK_RC(rs_topic_subscribe(t, 0, 0, SECOND, &s));
    CHECK(pipe(pipefd) == 0);
    for (round = 0; round < 5; round++) {
        child = fork();
        CHECK(child >= 0);
        if (child == 0) {
            rs_topic *mine = open_topic();
            rs_span span;
            if (rs_topic_reserve(mine, 5, &span, SECOND) != 0)
                _exit(1);
            memcpy(span.data, "ghost", 5);
            if (write(pipefd[1], "r", 1) != 1)
                _exit(1);
            pause();
            _exit(0);
        }
        CHECK(read(pipefd[0], &c, 1) == 1);
        CHECK(kill(child, SIGKILL) == 0);
        reap_killed(child);
        start = now_ns();
        CHECK_RC(rs_topic_publish(t, "alive", 5, 5 * SECOND));
        took = now_ns() - start;
        if (took > worst)
            worst = took;
        CHECK_RC(rs_sub_get(s, out, sizeof(out), &len, 0));
        CHECK(len == 5 && memcmp(out, "alive", 5) == 0);
        CHECK(rs_sub_get(s, out, sizeof(out), &len, 0) == RS_EMPTY);
    }
    printf("killed inside a reserve span: 5 times; the next publish took at most %.0f ms "
           "(recovery interval %.0f ms); the span's message never appeared\n",
           (double)worst / 1e6, RECOVERY * 1e3);
    CHECK(worst < SECOND);
    close(pipefd[0]);
    close(pipefd[1]);
    rs_sub_close(s);
    rs_topic_close(t);
    rs_unlink_name(name);
}

/* ---- 3. stopped subscribers ------------------------------------------------------ */

/* Message i is the number i; a reader that checks each against what it got
 * and missed, and reports them. */
static void counting_reader(unsigned flags, double stall) {
    rs_topic *t = open_topic();
    rs_sub *s;
    char out[256];
    size_t len;
    uint64_t got = 0, missed = 0, lags = 0, v;
    int rc;
    if ((rc = rs_topic_subscribe(t, flags, stall, SECOND, &s)) != 0)
        child_fail("subscribe: %lld", rc, 0, 0);
    __atomic_add_fetch(&shared->ready, 1, __ATOMIC_SEQ_CST);
    for (;;) {
        rc = rs_sub_get(s, out, sizeof(out), &len, 10 * SECOND);
        if (rc == RS_SHUTDOWN)
            break;
        if (rc == RS_LAGGED) {
            missed += rs_sub_missed(s);
            lags++;
            continue;
        }
        if (rc != 0)
            child_fail("counting reader: rc %lld", rc, 0, 0);
        memcpy(&v, out, 8);
        if (v != got + missed)
            child_fail("counting reader: message %lld where %lld + %lld", (long long)v,
                       (long long)got, (long long)missed);
        got++;
    }
    shared->got[0] = got;
    shared->missed[0] = missed;
    shared->lags[0] = lags;
    _exit(0);
}

static int publish_n(rs_topic *t, uint64_t n, int64_t timeout) {
    char buf[200];
    memset(buf, 'p', sizeof(buf));
    memcpy(buf, &n, 8);
    return rs_topic_publish(t, buf, sizeof(buf), timeout);
}

static pid_t start_counting_reader(unsigned flags, double stall) {
    pid_t child;
    shared->ready = 0;
    child = fork();
    CHECK(child >= 0);
    if (child == 0)
        counting_reader(flags, stall);
    wait_ready(1);
    return child;
}

static void stop(pid_t child) {
    int status;
    CHECK(kill(child, SIGSTOP) == 0);
    CHECK(waitpid(child, &status, WUNTRACED) == child && WIFSTOPPED(status));
}

static void test_stopped_tethered(void) {
    rs_topic *t = create_topic(8192);
    struct rs_topic_stats st;
    uint64_t n = 0;
    int64_t start, waited;
    pid_t child;
    int rc;
    memset(shared, 0, sizeof(*shared));
    child = start_counting_reader(0, 0);
    for (; n < 20; n++)
        CHECK_RC(publish_n(t, n, SECOND));
    stop(child);
    while ((rc = publish_n(t, n, 0)) == 0)
        n++;
    CHECK(rc == RS_FULL);
    start = now_ns();
    CHECK(publish_n(t, n, 300 * MS) == RS_FULL);   /* waits, then gives up */
    waited = now_ns() - start;
    CHECK(waited >= 290 * MS);
    CHECK(kill(child, SIGCONT) == 0);
    CHECK_RC(publish_n(t, n++, 5 * SECOND));
    CHECK_RC(rs_topic_shutdown(t));
    reap_clean(child, "the stopped tethered reader");
    CHECK(shared->got[0] == n && shared->missed[0] == 0);
    printf("stopped tethered subscriber: publishers waited (%.0f ms until their timeout), "
           "then it got all %llu\n", (double)waited / 1e6, (unsigned long long)n);
    rs_topic_close(t);

    /* With a stall_timeout of 0.3 s. */
    t = create_topic(8192);
    memset(shared, 0, sizeof(*shared));
    child = start_counting_reader(0, 0.3);
    for (n = 0; n < 20; n++)
        CHECK_RC(publish_n(t, n, SECOND));
    stop(child);
    start = now_ns();
    for (; n < 600; n++)
        CHECK_RC(publish_n(t, n, 5 * SECOND));
    waited = now_ns() - start;
    CHECK(waited >= 250 * MS && waited < 3 * SECOND);
    CHECK_RC(rs_topic_stats(t, &st));
    CHECK(st.stalls == 1);
    CHECK(kill(child, SIGCONT) == 0);
    CHECK_RC(rs_topic_shutdown(t));
    reap_clean(child, "the stalled reader");
    CHECK(shared->lags[0] >= 1 && shared->missed[0] > 0);
    CHECK(shared->got[0] + shared->missed[0] == n);
    printf("stopped subscriber with stall_timeout 0.3 s: publishers went on after %.0f ms; "
           "continued, it got %llu and was told of %llu missed (%llu RS_LAGGED), exactly %llu\n",
           (double)waited / 1e6, (unsigned long long)shared->got[0],
           (unsigned long long)shared->missed[0], (unsigned long long)shared->lags[0],
           (unsigned long long)n);
    rs_topic_close(t);

    /* Untethered: never waited for. */
    t = create_topic(8192);
    memset(shared, 0, sizeof(*shared));
    child = start_counting_reader(RS_SUB_UNTETHERED, 0);
    stop(child);
    start = now_ns();
    for (n = 0; n < 5000; n++)
        CHECK_RC(publish_n(t, n, 0));
    waited = now_ns() - start;
    CHECK_RC(rs_topic_stats(t, &st));
    CHECK(st.publish_waits == 0);
    CHECK(kill(child, SIGCONT) == 0);
    CHECK_RC(rs_topic_shutdown(t));
    reap_clean(child, "the stopped untethered reader");
    CHECK(shared->got[0] + shared->missed[0] == n && shared->missed[0] > 0);
    printf("stopped untethered subscriber: 5000 publishes with timeout 0 in %.1f ms, none "
           "waited; it got %llu, missed %llu (exact)\n", (double)waited / 1e6,
           (unsigned long long)shared->got[0], (unsigned long long)shared->missed[0]);
    rs_topic_close(t);
    rs_unlink_name(name);
}

/* ---- 4. many subscribers across processes --------------------------------------- */

#define GROUPS 5
#define PER_GROUP 14
#define MANY_MESSAGES 3000

static void group_reader(void) {
    rs_topic *t = open_topic();
    rs_sub *subs[PER_GROUP];
    char out[256];
    size_t len;
    uint64_t next[PER_GROUP], v;
    int i, rc, done = 0;
    for (i = 0; i < PER_GROUP; i++) {
        if ((rc = rs_topic_subscribe(t, 0, 0, SECOND, &subs[i])) != 0)
            child_fail("group subscribe: %lld", rc, 0, 0);
        next[i] = 0;
    }
    __atomic_add_fetch(&shared->ready, 1, __ATOMIC_SEQ_CST);
    while (done < PER_GROUP) {
        done = 0;
        for (i = 0; i < PER_GROUP; i++) {
            rc = rs_sub_get(subs[i], out, sizeof(out), &len, 0);
            if (rc == RS_SHUTDOWN) {
                done++;
                continue;
            }
            if (rc == RS_EMPTY)
                continue;
            if (rc != 0)
                child_fail("group reader: rc %lld", rc, 0, 0);
            memcpy(&v, out, 8);
            if (v != next[i])
                child_fail("group reader: %lld where %lld", (long long)v, (long long)next[i], 0);
            next[i]++;
        }
        if (done < PER_GROUP)
            sleep_us(0);
    }
    for (i = 0; i < PER_GROUP; i++)
        if (next[i] != MANY_MESSAGES)
            child_fail("group reader: %lld of %lld", (long long)next[i], MANY_MESSAGES, 0);
    _exit(0);
}

static void test_many_across_processes(void) {
    rs_topic *t = create_topic(1 << 15);
    struct rs_topic_stats st;
    pid_t children[GROUPS], extra;
    uint64_t n;
    int i, status;
    memset(shared, 0, sizeof(*shared));
    for (i = 0; i < GROUPS; i++) {
        children[i] = fork();
        CHECK(children[i] >= 0);
        if (children[i] == 0)
            group_reader();
    }
    wait_ready(GROUPS);
    CHECK_RC(rs_topic_stats(t, &st));
    CHECK(st.subscribers == GROUPS * PER_GROUP && st.tethered == GROUPS * PER_GROUP);
    extra = fork();
    CHECK(extra >= 0);
    if (extra == 0) {
        rs_topic *mine = open_topic();
        rs_sub *s;
        int k = 0, rc;
        while ((rc = rs_topic_subscribe(mine, RS_SUB_UNTETHERED, 0, SECOND, &s)) == 0)
            k++;
        _exit(rc == RS_NO_SLOT && k == RS_TOPIC_MAX_SUBSCRIBERS - GROUPS * PER_GROUP ? 0 : 1);
    }
    reap_clean(extra, "the process that fills the table");
    for (n = 0; n < MANY_MESSAGES; n++)
        CHECK_RC(publish_n(t, n, 10 * SECOND));
    CHECK_RC(rs_topic_shutdown(t));
    for (i = 0; i < GROUPS; i++) {
        CHECK(waitpid(children[i], &status, 0) == children[i]);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            fprintf(stderr, "group %d: %#x: %s\n", i, status, shared->why);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    printf("%d tethered subscribers in %d processes: each got all %d messages in order; a "
           "sixth process got the %d entries left, then RS_NO_SLOT\n", GROUPS * PER_GROUP,
           GROUPS, MANY_MESSAGES, RS_TOPIC_MAX_SUBSCRIBERS - GROUPS * PER_GROUP);
    rs_topic_close(t);
    rs_unlink_name(name);
}

int main(int argc, char **argv) {
    const char *only = argc > 1 ? argv[1] : "1234";
    creator = getpid();
    snprintf(name, sizeof(name), "ctest-topicfaults-%d", (int)creator);
    atexit(cleanup);
    signal(SIGPIPE, SIG_IGN);
    shared = mmap(NULL, sizeof(board), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1,
                  0);
    CHECK(shared != MAP_FAILED);
    rng ^= (uint64_t)now_ns();
    if (strchr(only, '2'))
        test_killed_in_reserve();
    if (strchr(only, '3'))
        test_stopped_tethered();
    if (strchr(only, '4'))
        test_many_across_processes();
    if (strchr(only, '1'))
        test_kills();
    printf("test_topic_faults: ok\n");
    return 0;
}
