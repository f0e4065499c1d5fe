/* example.h: what the five examples share.
 *
 *   - the messages: message i of producer p is "p.i:" followed by a filler
 *     whose length and letter depend on p and i (2 to ~190 bytes, so records
 *     of many sizes wrap around the ring).  peer.py makes exactly the same
 *     bytes, so either side can check the other;
 *   - a checker that takes each message received and fails on anything but
 *     the next expected message of its producer (loss, duplicate, reorder,
 *     damaged bytes);
 *   - fail(): print what failed with rs_strerror() and rs_detail(), exit 1.
 *
 * Every call of the examples has a timeout (EX_TIMEOUT_NS): a peer that died
 * or never came ends an example with an error instead of a hang.
 */
#ifndef RINGSHM_EXAMPLE_H
#define RINGSHM_EXAMPLE_H

#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ringshm.h>

#define EX_TIMEOUT_NS (10 * 1000000000LL)   /* 10 s for any one put or get */
#define EX_CAPACITY 16384                   /* small: producers often wait for room */
#define EX_MAX_MESSAGE 256                  /* no example message is longer */
#define EX_MAX_PRODUCERS 8

/* Print "what: the code's name (the detail)" and exit 1. */
static inline void fail(const char *what, int rc) {
    const char *detail = rs_detail();
    fprintf(stderr, "%s: %s%s%s%s\n", what, rs_strerror(rc), detail[0] ? " (" : "", detail,
            detail[0] ? ")" : "");
    exit(1);
}

/* Message i of producer p into buf (at least EX_MAX_MESSAGE bytes); its length. */
static inline size_t ex_message(unsigned p, uint64_t i, char *buf) {
    int n = snprintf(buf, EX_MAX_MESSAGE, "%u.%" PRIu64 ":", p, i);
    size_t len = (size_t)n, filler = (size_t)((i * 37 + p * 11) % 151);
    memset(buf + len, 'a' + (int)((i + p) % 26), filler);
    return len + filler;
}

/* A count from the command line (a positive decimal number). */
static inline uint64_t ex_count(const char *arg) {
    char *end;
    unsigned long long n;
    errno = 0;
    n = strtoull(arg, &end, 10);
    if (errno != 0 || end == arg || *end != 0 || n == 0) {
        fprintf(stderr, "not a positive count: %s\n", arg);
        exit(2);
    }
    return (uint64_t)n;
}

static inline void ex_sleep_ms(long ms) {
    struct timespec pause = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&pause, NULL);
}

/* The receiving side's bookkeeping: the next index expected of each producer. */
typedef struct ex_checker {
    unsigned producers;
    uint64_t next[EX_MAX_PRODUCERS];
    uint64_t total;
} ex_checker;

static inline void ex_checker_init(ex_checker *c, unsigned producers) {
    memset(c, 0, sizeof(*c));
    c->producers = producers;
}

/* Check one received message; on a mismatch say which and exit 1. */
static inline void ex_check(ex_checker *c, const void *data, size_t len) {
    char expected[EX_MAX_MESSAGE], head[24];
    size_t want, n = len < sizeof(head) - 1 ? len : sizeof(head) - 1;
    unsigned p;
    /* The header "p.i:" names the producer; the index must be its next. */
    memcpy(head, data, n);
    head[n] = 0;
    if (sscanf(head, "%u.", &p) != 1 || p >= c->producers) {
        fprintf(stderr, "message %" PRIu64 ": not from producer 0 to %u: %.*s\n", c->total,
                c->producers - 1, (int)(len < 40 ? len : 40), (const char *)data);
        exit(1);
    }
    want = ex_message(p, c->next[p], expected);
    if (len != want || memcmp(data, expected, len) != 0) {
        fprintf(stderr, "message %" PRIu64 ": expected %.*s... of %zu bytes, got %.*s... of %zu\n",
                c->total, (int)(want < 16 ? want : 16), expected, want, (int)(len < 16 ? len : 16), (const char *)data, len);
        exit(1);
    }
    c->next[p]++;
    c->total++;
}

#endif
