/* One rs_ring * shared by 4 producer and 4 consumer threads, every way in
 * and out of the ring mixed: rs_put, rs_put_many, rs_reserve + rs_commit
 * (and rs_cancel), rs_get, rs_get_many, rs_view + rs_view_next + rs_release
 * (and rs_keep, rs_rewind).  Every message carries its producer, its
 * sequence number and a pattern derived from both; every message taken is
 * counted: no loss, no duplicate, no damaged byte, and each consumer sees
 * each producer's messages in order.  The ring is small, so producers and
 * consumers wait for each other all the time.  Exits non-zero on failure. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "ringshm.h"

#define PRODUCERS 4
#define CONSUMERS 4
#define PER_PRODUCER 20000
#define MAX_BODY 300
#ifndef TIMEOUT_NS
#define TIMEOUT_NS (20LL * 1000000000LL)
#endif   /* a stall, not a slow machine */

typedef struct {
    uint32_t producer;
    uint32_t seq;
    uint32_t len;   /* the whole message, header included */
    uint32_t sum;
} msg_head;

static rs_ring *ring;
static unsigned char seen[PRODUCERS][PER_PRODUCER];   /* atomic adds */
static uint64_t taken_total;

/* A length 16..16+MAX_BODY from (producer, seq), and a byte pattern. */
static size_t msg_len(uint32_t p, uint32_t s) {
    return sizeof(msg_head) + (size_t)((p * 7919u + s * 104729u) % MAX_BODY);
}

static void fill(unsigned char *buf, uint32_t p, uint32_t s) {
    msg_head h;
    size_t i, len = msg_len(p, s);
    h.producer = p;
    h.seq = s;
    h.len = (uint32_t)len;
    h.sum = 0;
    for (i = sizeof(h); i < len; i++) {
        buf[i] = (unsigned char)(p * 31u + s + i);
        h.sum += buf[i];
    }
    memcpy(buf, &h, sizeof(h));
}

#define FAIL(...)                                                                      \
    do {                                                                               \
        fprintf(stderr, __VA_ARGS__);                                                  \
        fprintf(stderr, " (detail: %s)\n", rs_detail());                               \
        exit(1);                                                                       \
    } while (0)

static void *producer(void *arg) {
    uint32_t p = (uint32_t)(uintptr_t)arg, s = 0, i, n;
    unsigned char bufs[4][sizeof(msg_head) + MAX_BODY];
    struct iovec batch[4];
    rs_span span;
    int rc, mode, cancelled = -1;
    while (s < PER_PRODUCER) {
        mode = (int)((s + p) % 4);
        if (mode == 0) {
            fill(bufs[0], p, s);
            rc = rs_put(ring, bufs[0], msg_len(p, s), TIMEOUT_NS);
            if (rc != 0)
                FAIL("producer %u: rs_put %u: %s", p, s, rs_strerror(rc));
            s++;
        } else if (mode == 1) {
            n = 1 + s % 4;
            if (n > PER_PRODUCER - s)
                n = PER_PRODUCER - s;
            for (i = 0; i < n; i++) {
                fill(bufs[i], p, s + i);
                batch[i].iov_base = bufs[i];
                batch[i].iov_len = msg_len(p, s + i);
            }
            rc = rs_put_many(ring, batch, n, TIMEOUT_NS);
            if (rc != 0)
                FAIL("producer %u: rs_put_many %u+%u: %s", p, s, n, rs_strerror(rc));
            s += n;
        } else {
            rc = rs_reserve(ring, msg_len(p, s), &span, TIMEOUT_NS);
            if (rc != 0)
                FAIL("producer %u: rs_reserve %u: %s", p, s, rs_strerror(rc));
            if (span.len != msg_len(p, s))
                FAIL("producer %u: reserve span of %zu bytes", p, span.len);
            if (mode == 3 && s % 8 == 3 && cancelled != (int)s) {
                /* A cancelled reserve publishes nothing: a message that
                 * must never be seen. */
                memset(span.data, 0xEE, span.len);
                rc = rs_cancel(ring, &span);
                if (rc != 0)
                    FAIL("producer %u: rs_cancel: %s", p, rs_strerror(rc));
                cancelled = (int)s;
                continue;   /* then the same sequence number again */
            }
            fill(span.data, p, s);
            rc = rs_commit(ring, &span);
            if (rc != 0)
                FAIL("producer %u: rs_commit %u: %s", p, s, rs_strerror(rc));
            s++;
        }
    }
    return NULL;
}

typedef struct {
    int id;
    int64_t last[PRODUCERS];   /* the last sequence this consumer saw of each producer */
    uint64_t count;
} consumer_state;

static void take(consumer_state *c, const void *data, size_t len) {
    msg_head h;
    const unsigned char *b = data;
    uint32_t sum = 0;
    size_t i;
    if (len < sizeof(h))
        FAIL("consumer %d: a message of %zu bytes", c->id, len);
    memcpy(&h, data, sizeof(h));
    if (h.producer >= PRODUCERS || h.seq >= PER_PRODUCER || h.len != len
            || len != msg_len(h.producer, h.seq))
        FAIL("consumer %d: a damaged message (producer %u seq %u len %u/%zu)", c->id,
             h.producer, h.seq, h.len, len);
    for (i = sizeof(h); i < len; i++) {
        if (b[i] != (unsigned char)(h.producer * 31u + h.seq + i))
            FAIL("consumer %d: producer %u seq %u: byte %zu damaged", c->id, h.producer, h.seq, i);
        sum += b[i];
    }
    if (sum != h.sum)
        FAIL("consumer %d: checksum", c->id);
    if ((int64_t)h.seq <= c->last[h.producer])
        FAIL("consumer %d: producer %u: seq %u after %lld (out of order or repeated)", c->id,
             h.producer, h.seq, (long long)c->last[h.producer]);
    c->last[h.producer] = h.seq;
    if (__atomic_add_fetch(&seen[h.producer][h.seq], 1, __ATOMIC_RELAXED) != 1)
        FAIL("consumer %d: producer %u seq %u taken twice", c->id, h.producer, h.seq);
    c->count++;
}

static void *consumer(void *arg) {
    consumer_state *c = arg;
    unsigned char buf[16 * (sizeof(msg_head) + MAX_BODY)];
    size_t len, lengths[16], off;
    rs_span span;
    int rc, i, n, round = 0, stepped;
    for (;; round++) {
        switch (round % 4) {
        case 0:
            rc = rs_get(ring, buf, sizeof(buf), &len, TIMEOUT_NS);
            if (rc == 0)
                take(c, buf, len);
            break;
        case 1:
            /* A buffer that may be too small for more than a few. */
            rc = rs_get_many(ring, buf, (size_t)(round % 7 + 1) * 200, lengths,
                             (size_t)(round % 16) + 1, TIMEOUT_NS);
            if (rc == RS_TOO_LARGE) {
                /* The next message is bigger than the buffer: take it alone. */
                rc = rs_get(ring, buf, sizeof(buf), &len, TIMEOUT_NS);
                if (rc == 0)
                    take(c, buf, len);
                break;
            }
            if (rc > 0) {
                for (i = 0, off = 0; i < rc; off += lengths[i], i++)
                    take(c, buf + off, lengths[i]);
                rc = 0;
            }
            break;
        case 2:
            /* View and step: release consumes all that was shown. */
            rc = rs_view(ring, &span, TIMEOUT_NS);
            if (rc != 0)
                break;
            n = round % 5;
            for (i = 0;; i++) {
                take(c, span.data, span.len);
                if (i == n || rs_view_next(ring, &span) != 0)
                    break;
            }
            rc = rs_release(ring, &span);
            if (rc != 0)
                FAIL("consumer %d: rs_release: %s", c->id, rs_strerror(rc));
            break;
        default:
            /* View and step past a few, then either rewind (nothing is
             * consumed) or keep (the messages stepped past are consumed,
             * the one shown stays). */
            rc = rs_view(ring, &span, TIMEOUT_NS);
            if (rc != 0)
                break;
            n = 1 + round % 3;
            stepped = 0;
            off = 0;
            while (stepped < n && span.data != NULL) {
                memcpy(buf + off, span.data, span.len);
                lengths[stepped++] = span.len;
                off += span.len;
                if (rs_view_next(ring, &span) != 0)
                    break;
            }
            if ((round / 4) % 2 == 0) {
                rs_rewind(ring, &span);
                CHECK(span.data == NULL && span.len == 0);
                stepped = 0;
            }
            rc = rs_keep(ring, &span);
            if (rc != 0)
                FAIL("consumer %d: rs_keep: %s", c->id, rs_strerror(rc));
            for (i = 0, off = 0; i < stepped; off += lengths[i], i++)
                take(c, buf + off, lengths[i]);
            break;
        }
        if (rc == RS_SHUTDOWN)
            break;
        if (rc != 0)
            FAIL("consumer %d: round %d: %s", c->id, round, rs_strerror(rc));
    }
    __atomic_add_fetch(&taken_total, c->count, __ATOMIC_RELAXED);
    return NULL;
}

int main(void) {
    pthread_t producers[PRODUCERS], consumers[CONSUMERS];
    consumer_state states[CONSUMERS];
    struct rs_stats st;
    rs_options o;
    int i, j;

    rs_options_init(&o);
    o.recovery_interval = 0.05;
    CHECK_RC(rs_anonymous(4096, &o, &ring));
    for (i = 0; i < CONSUMERS; i++) {
        states[i].id = i;
        states[i].count = 0;
        for (j = 0; j < PRODUCERS; j++)
            states[i].last[j] = -1;
        CHECK(pthread_create(&consumers[i], NULL, consumer, &states[i]) == 0);
    }
    for (i = 0; i < PRODUCERS; i++)
        CHECK(pthread_create(&producers[i], NULL, producer, (void *)(uintptr_t)i) == 0);
    for (i = 0; i < PRODUCERS; i++)
        CHECK(pthread_join(producers[i], NULL) == 0);
    /* Every message is in: a shutdown lets consumers drain, then stop. */
    CHECK_RC(rs_shutdown(ring, 0));
    for (i = 0; i < CONSUMERS; i++)
        CHECK(pthread_join(consumers[i], NULL) == 0);

    for (i = 0; i < PRODUCERS; i++)
        for (j = 0; j < PER_PRODUCER; j++)
            if (seen[i][j] != 1)
                FAIL("producer %d seq %d was taken %d times", i, j, seen[i][j]);
    CHECK(taken_total == (uint64_t)PRODUCERS * PER_PRODUCER);
    CHECK_RC(rs_stats(ring, &st));
    CHECK(st.messages == 0 && st.head == st.tail);
    CHECK(st.messages_put == (uint64_t)PRODUCERS * PER_PRODUCER);
    CHECK(st.messages_got == st.messages_put && st.bytes_got == st.bytes_put);
    CHECK(st.lock_recoveries == 0);
    /* A 4 KiB ring for 80,000 messages: somebody waited. */
    CHECK(st.put_waits + st.get_waits > 0);
    printf("test_threads: ok (%d messages; waits: put %llu, get %llu; per consumer:", PRODUCERS *
           PER_PRODUCER, (unsigned long long)st.put_waits, (unsigned long long)st.get_waits);
    for (i = 0; i < CONSUMERS; i++)
        printf(" %llu", (unsigned long long)states[i].count);
    printf(")\n");
    CHECK_RC(rs_close(ring));
    return 0;
}
