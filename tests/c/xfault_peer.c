/* A C producer or consumer for tests/test_cross_faults.py: it runs on a ring
 * that Python made, next to Python peers, until the test SIGKILLs it or
 * asks it to stop, and keeps what a SIGKILL must not erase in files the test
 * reads after the kill (stores into MAP_SHARED file pages outlive the
 * process).
 *
 *   xfault_peer produce NAME LEDGER SLOT PRODUCER START_SEQ SEED
 *   xfault_peer consume NAME LEDGER SLOT LOG LOG_CAP SEED
 *   xfault_peer hold put|get NAME      rs_reserve (writing "held by C") or
 *                                      rs_view, say "held" (a view: and the
 *                                      message) on stdout, sleep for ever
 *   xfault_peer once put|get NAME MS   one rs_put of "put by C" or rs_get
 *                                      with a timeout of MS ms; print the
 *                                      message got; exit 0 on success
 *
 * LEDGER is a file of 64-byte slots made by the test; this incarnation uses
 * slot SLOT (its number is also the incarnation in each message it puts).
 *
 * Producer slot: [0] start, [1] pending (the sequence number after the put
 * it is about to make, stored before it), [2] committed (the same, stored
 * after rs_commit / rs_put / rs_put_many returned 0), [3] stop (the test's
 * request, honoured only after a first commit: that put takes over a lock a
 * killed peer left), [4] state (1: the ring is open), [5] exit reason.
 * Numbers below `committed` are certainly published, those in [committed,
 * pending) may or may not be, none at or past `pending` may exist.
 *
 * Consumer slot: [0] logged (entries in LOG), [1] phase, [2] stop (unused:
 * a consumer ends on RS_SHUTDOWN), [3] state, [4] messages it could not
 * parse, [5] exit reason, [6] viewing.  LOG is a file of LOG_CAP u64
 * entries, one per message got, written before `logged` counts it.
 * Phases:
 *   1  inside rs_get (set before the call, cleared after the message is
 *      logged): a SIGKILL here may have consumed a message never logged;
 *   2  inside rs_view, before the message is logged: nothing consumed;
 *   3  the viewed message is logged, rs_release not yet returned;
 *   0  between messages.
 * `viewing` is the index + 1 in LOG of the message shown by rs_view, stored
 * after its entry and before `logged` counts it, cleared after rs_release
 * returned: a SIGKILL while it is set may leave that message in the ring,
 * to be delivered again (whether or not `logged` counted it yet).  One
 * word, so no kill between two stores can leave a logged message unmarked.
 *
 * The message format (little-endian, 32-byte header, then the payload):
 * u32 magic "XFLT", u16 producer, u16 flags, u32 incarnation, u32 payload
 * length, u64 sequence, u32 crc32 of the payload (zlib's), u32 zero.
 * A log entry: producer << 56 | incarnation << 32 | sequence; all ones for
 * a message that did not parse. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ringshm.h"

#define MAGIC 0x544C4658u   /* "XFLT" */
#define HEADER 32
#define MAX_PAYLOAD 200
#define MAX_BATCH 8
#define SLOT_WORDS 8
#define WAIT_NS 100000000LL   /* 0.1 s: then look at the stop flag */
#define BAD_ENTRY UINT64_MAX

enum { P_START, P_PENDING, P_COMMITTED, P_STOP, P_STATE, P_EXIT };
enum { C_LOGGED, C_PHASE, C_STOP, C_STATE, C_BAD, C_EXIT, C_VIEWING };

static uint64_t rng_state;

static uint64_t rnd(void) {   /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}

static uint32_t crc_table[256];

static void crc_init(void) {
    uint32_t c, n, k;
    for (n = 0; n < 256; n++) {
        c = n;
        for (k = 0; k < 8; k++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
}

static uint32_t crc32(const unsigned char *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    while (n--)
        c = crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static void store(volatile uint64_t *slot, int word, uint64_t value) {
    __atomic_store_n(&slot[word], value, __ATOMIC_RELEASE);
}

static uint64_t load(volatile uint64_t *slot, int word) {
    return __atomic_load_n(&slot[word], __ATOMIC_ACQUIRE);
}

static void *map_file(const char *path, size_t length, int create) {
    int fd = open(path, O_RDWR | (create ? O_CREAT | O_EXCL : 0), 0600);
    void *p;
    if (fd < 0) {
        perror(path);
        exit(2);
    }
    if (create && ftruncate(fd, (off_t)length) != 0) {
        perror("ftruncate");
        exit(2);
    }
    p = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    close(fd);
    return p;
}

static volatile uint64_t *ledger_slot(const char *path, long slot) {
    struct stat st;
    int fd = open(path, O_RDWR);
    size_t need = (size_t)(slot + 1) * SLOT_WORDS * 8;
    if (fd < 0 || fstat(fd, &st) != 0 || (size_t)st.st_size < need) {
        fprintf(stderr, "ledger %s: no slot %ld\n", path, slot);
        exit(2);
    }
    close(fd);
    return (volatile uint64_t *)map_file(path, need, 0) + slot * SLOT_WORDS;
}

static void fail(volatile uint64_t *slot, int word, const char *what, int rc) {
    fprintf(stderr, "xfault_peer %d: %s: %s (%s)\n", (int)getpid(), what, rs_strerror(rc),
            rs_detail());
    store(slot, word, (uint64_t)(int64_t)rc);
    exit(1);
}

/* A pause of a few microseconds: a spin (the lock holder keeps its CPU) or
 * a sleep (it is off the CPU while holding the lock). */
static void pause_a_little(void) {
    struct timespec ts, until, now;
    long us = 1 + (long)(rnd() % 40);
    if (rnd() % 2) {
        ts.tv_sec = 0;
        ts.tv_nsec = us * 1000;
        nanosleep(&ts, NULL);
        return;
    }
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += us * 1000;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    do
        clock_gettime(CLOCK_MONOTONIC, &now);
    while (now.tv_sec < until.tv_sec || (now.tv_sec == until.tv_sec && now.tv_nsec < until.tv_nsec));
}

/* Write message (producer, incarnation, seq) with a random payload at p;
 * returns its length. */
static size_t make_message(unsigned char *p, unsigned producer, uint32_t incarnation,
                           uint64_t seq, size_t payload) {
    uint32_t u32;
    uint16_t u16;
    size_t i;
    for (i = 0; i < payload; i++)
        p[HEADER + i] = (unsigned char)rnd();
    u32 = MAGIC;
    memcpy(p, &u32, 4);
    u16 = (uint16_t)producer;
    memcpy(p + 4, &u16, 2);
    u16 = 0;
    memcpy(p + 6, &u16, 2);
    memcpy(p + 8, &incarnation, 4);
    u32 = (uint32_t)payload;
    memcpy(p + 12, &u32, 4);
    memcpy(p + 16, &seq, 8);
    u32 = crc32(p + HEADER, payload);
    memcpy(p + 24, &u32, 4);
    u32 = 0;
    memcpy(p + 28, &u32, 4);
    return HEADER + payload;
}

static int produce(rs_ring *r, volatile uint64_t *slot, unsigned producer, uint32_t incarnation,
                   uint64_t seq) {
    static unsigned char buf[MAX_BATCH][HEADER + MAX_PAYLOAD];
    struct iovec iov[MAX_BATCH];
    rs_span span;
    size_t len, i, n;
    int rc, op, commits = 0;
    store(slot, P_PENDING, seq);
    store(slot, P_COMMITTED, seq);
    store(slot, P_STATE, 1);
    for (;;) {
        if (commits > 0 && load(slot, P_STOP))
            return 0;
        op = (int)(rnd() % 8);
        n = op >= 5 ? 1 + (size_t)(rnd() % MAX_BATCH) : 1;
        store(slot, P_PENDING, seq + n);
        if (op < 3) {            /* reserve, write (a pause now and then), commit */
            len = HEADER + (size_t)(rnd() % (MAX_PAYLOAD + 1));
            rc = rs_reserve(r, len, &span, WAIT_NS);
            if (rc == 0) {
                make_message(span.data, producer, incarnation, seq, len - HEADER);
                if (rnd() % 3 == 0)
                    pause_a_little();
                rc = rs_commit(r, &span);
                if (rc != 0)
                    fail(slot, P_EXIT, "rs_commit", rc);
            }
        } else if (op < 5) {
            len = make_message(buf[0], producer, incarnation, seq,
                               (size_t)(rnd() % (MAX_PAYLOAD + 1)));
            rc = rs_put(r, buf[0], len, WAIT_NS);
        } else {
            for (i = 0; i < n; i++) {
                iov[i].iov_base = buf[i];
                iov[i].iov_len = make_message(buf[i], producer, incarnation, seq + i,
                                              (size_t)(rnd() % (MAX_PAYLOAD + 1)));
            }
            rc = rs_put_many(r, iov, n, WAIT_NS);
        }
        if (rc == RS_FULL)
            continue;   /* nothing was published: the same numbers again */
        if (rc != 0)
            fail(slot, P_EXIT, "put", rc);
        seq += n;
        store(slot, P_COMMITTED, seq);
        commits++;
    }
}

static uint64_t entry_of(volatile uint64_t *slot, const unsigned char *p, size_t len) {
    uint32_t magic, incarnation, length, crc;
    uint16_t producer;
    uint64_t seq;
    if (len < HEADER)
        goto bad;
    memcpy(&magic, p, 4);
    memcpy(&producer, p + 4, 2);
    memcpy(&incarnation, p + 8, 4);
    memcpy(&length, p + 12, 4);
    memcpy(&seq, p + 16, 8);
    memcpy(&crc, p + 24, 4);
    if (magic != MAGIC || length != len - HEADER || crc32(p + HEADER, length) != crc
            || producer > 0xFF || incarnation > 0xFFFFFF || seq > 0xFFFFFFFFu)
        goto bad;
    return (uint64_t)producer << 56 | (uint64_t)incarnation << 32 | seq;
bad:
    store(slot, C_BAD, load(slot, C_BAD) + 1);
    return BAD_ENTRY;
}

static int consume(rs_ring *r, volatile uint64_t *slot, volatile uint64_t *log, uint64_t cap) {
    static unsigned char buf[HEADER + MAX_PAYLOAD + 64];
    uint64_t logged = 0;
    rs_span span;
    size_t len;
    int rc;
    store(slot, C_STATE, 1);
    for (;;) {
        if (logged == cap) {
            fprintf(stderr, "xfault_peer: the log is full (%llu entries)\n",
                    (unsigned long long)cap);
            exit(3);
        }
        if (rnd() % 2) {
            store(slot, C_PHASE, 1);
            rc = rs_get(r, buf, sizeof(buf), &len, WAIT_NS);
            if (rc == 0) {
                __atomic_store_n(&log[logged], entry_of(slot, buf, len), __ATOMIC_RELEASE);
                store(slot, C_LOGGED, ++logged);
            }
        } else {
            store(slot, C_PHASE, 2);
            rc = rs_view(r, &span, WAIT_NS);
            if (rc == 0) {
                __atomic_store_n(&log[logged], entry_of(slot, span.data, span.len),
                                 __ATOMIC_RELEASE);
                store(slot, C_VIEWING, logged + 1);
                store(slot, C_LOGGED, ++logged);
                store(slot, C_PHASE, 3);
                if (rnd() % 3 == 0)
                    pause_a_little();
                rc = rs_release(r, &span);
                if (rc != 0)
                    fail(slot, C_EXIT, "rs_release", rc);
                store(slot, C_VIEWING, 0);
            }
        }
        store(slot, C_PHASE, 0);
        if (rc == RS_SHUTDOWN)
            return 0;
        if (rc != 0 && rc != RS_EMPTY)
            fail(slot, C_EXIT, "get", rc);
    }
}

static int hold(const char *side, const char *name) {
    rs_ring *r;
    rs_span span;
    int rc = rs_open_name(name, NULL, &r);
    if (rc == 0 && strcmp(side, "put") == 0) {
        rc = rs_reserve(r, 9, &span, RS_FOREVER);
        if (rc == 0) {
            memcpy(span.data, "held by C", 9);
            printf("held\n");
        }
    } else if (rc == 0) {
        rc = rs_view(r, &span, RS_FOREVER);
        if (rc == 0)
            printf("held %.*s\n", (int)span.len, (const char *)span.data);
    }
    if (rc != 0) {
        fprintf(stderr, "hold %s: %s (%s)\n", side, rs_strerror(rc), rs_detail());
        return 1;
    }
    fflush(stdout);
    for (;;)
        pause();
}

static int once(const char *side, const char *name, long ms) {
    char buf[256];
    size_t len = 0;
    rs_ring *r;
    int rc = rs_open_name(name, NULL, &r);
    if (rc == 0 && strcmp(side, "put") == 0)
        rc = rs_put(r, "put by C", 8, (int64_t)ms * 1000000);
    else if (rc == 0)
        rc = rs_get(r, buf, sizeof(buf), &len, (int64_t)ms * 1000000);
    if (rc != 0) {
        fprintf(stderr, "once %s: %s (%s)\n", side, rs_strerror(rc), rs_detail());
        return 1;
    }
    printf("%.*s\n", (int)len, buf);
    rs_close(r);
    return 0;
}

int main(int argc, char **argv) {
    volatile uint64_t *slot;
    rs_ring *r;
    int rc;
    crc_init();
    if (argc == 4 && strcmp(argv[1], "hold") == 0)
        return hold(argv[2], argv[3]);
    if (argc == 5 && strcmp(argv[1], "once") == 0)
        return once(argv[2], argv[3], atol(argv[4]));
    if (argc == 8 && strcmp(argv[1], "produce") == 0) {
        slot = ledger_slot(argv[3], atol(argv[4]));
        rng_state = strtoull(argv[7], NULL, 10) * 2654435761u + 1;
        store(slot, P_START, strtoull(argv[6], NULL, 10));
        rc = rs_open_name(argv[2], NULL, &r);
        if (rc != 0)
            fail(slot, P_EXIT, "rs_open_name", rc);
        rc = produce(r, slot, (unsigned)atoi(argv[5]), (uint32_t)atol(argv[4]),
                     strtoull(argv[6], NULL, 10));
    } else if (argc == 8 && strcmp(argv[1], "consume") == 0) {
        uint64_t cap = strtoull(argv[6], NULL, 10);
        slot = ledger_slot(argv[3], atol(argv[4]));
        rng_state = strtoull(argv[7], NULL, 10) * 2654435761u + 1;
        rc = rs_open_name(argv[2], NULL, &r);
        if (rc != 0)
            fail(slot, C_EXIT, "rs_open_name", rc);
        rc = consume(r, slot, (volatile uint64_t *)map_file(argv[5], cap * 8, 1), cap);
    } else {
        fprintf(stderr, "usage: xfault_peer produce NAME LEDGER SLOT PRODUCER START_SEQ SEED\n"
                        "       xfault_peer consume NAME LEDGER SLOT LOG LOG_CAP SEED\n"
                        "       xfault_peer hold put|get NAME\n"
                        "       xfault_peer once put|get NAME MS\n");
        return 2;
    }
    rs_close(r);
    return rc;
}
