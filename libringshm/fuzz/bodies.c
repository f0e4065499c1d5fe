/* The fuzz bodies (bodies.h).  Every call into the library must return one
 * of the statuses its documentation allows; anything else aborts (a crash
 * for libFuzzer).  Segments live in a memfd mapped between two PROT_NONE
 * guard pages, so that a read or write past the segment faults even though
 * ASan does not watch mmap'd memory; a view's or reserve's span is also
 * checked to lie inside the data area. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bodies.h"
#include "internal.h"

typedef struct {
    int fd;
    char *region;
    size_t region_len;
    char *base;
} guarded;

static void die(const char *what, int rc) {
    fprintf(stderr, "fuzz: %s returned %d: %s (%s)\n", what, rc, rs_strerror(rc), rs_detail());
    abort();
}

/* A memfd of `len` bytes holding `data`, mapped shared with a guard page
 * on each side. */
static void map_guarded(guarded *g, const void *data, size_t len) {
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    size_t rounded = (len + pg - 1) & ~(pg - 1);
    g->fd = memfd_create("ringshm-fuzz", MFD_CLOEXEC);
    if (g->fd < 0)
        die("memfd_create", -errno);
    if (ftruncate(g->fd, (off_t)len) != 0)
        die("ftruncate", -errno);
    g->region_len = rounded + 2 * pg;
    g->region = mmap(NULL, g->region_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
    if (g->region == MAP_FAILED)
        die("mmap", -errno);
    g->base = mmap(g->region + pg, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, g->fd, 0);
    if (g->base == MAP_FAILED)
        die("mmap fixed", -errno);
    if (data != NULL)
        memcpy(g->base, data, len);
}

static void unmap_guarded(guarded *g) {
    munmap(g->region, g->region_len);
    close(g->fd);
}

/* ---- the calls ----------------------------------------------------------- */

static int get_ok(int rc) {
    return rc >= 0 || rc == RS_EMPTY || rc == RS_CORRUPTED || rc == RS_TOO_LARGE
           || rc == RS_SHUTDOWN;
}

static int put_ok(int rc) {
    return rc == 0 || rc == RS_FULL || rc == RS_CORRUPTED || rc == RS_TOO_LARGE
           || rc == RS_SHUTDOWN;
}

#define EXPECT(ok, call)                                                               \
    do {                                                                               \
        int expect_rc_ = (call);                                                       \
        if (!ok(expect_rc_))                                                           \
            die(#call, expect_rc_);                                                    \
    } while (0)

static void span_inside(rs_ring *r, const rs_span *span, const char *what) {
    const char *p = span->data;
    if (p == NULL)
        return;
    if (p < r->data || span->len > r->capacity || p + span->len > r->data + r->capacity) {
        fprintf(stderr, "fuzz: %s: span [%p, +%zu) outside the data area [%p, +%llu)\n", what,
                (const void *)p, span->len, (void *)r->data, (unsigned long long)r->capacity);
        abort();
    }
}

unsigned long fuzz_handles, fuzz_records_read;

static unsigned char scratch[1 << 17];

static void calls(rs_ring *r, uint32_t sel) {
    size_t len, lengths[64], total;
    struct iovec three[3];
    struct rs_stats st;
    rs_span span;
    int rc, i;

    if (rs_stats(r, &st) != 0)
        die("rs_stats", -1);
    (void)rs_count(r);
    (void)rs_full(r);
    (void)rs_unfinished_tasks(r);
    (void)rs_is_shutdown(r);
    rc = rs_wait_data(r, 0);
    if (rc != 0 && rc != RS_EMPTY)
        die("rs_wait_data", rc);

    EXPECT(get_ok, rs_get(r, scratch, (sel & 1) ? sizeof(scratch) : 16, &len, 0));

    rc = rs_view(r, &span, 0);
    EXPECT(get_ok, rc);
    if (rc == 0) {
        fuzz_records_read++;
        span_inside(r, &span, "rs_view");
        for (i = 0; i < 4096; i++) {
            rc = rs_view_next(r, &span);
            if (rc != 0)
                break;
            span_inside(r, &span, "rs_view_next");
            if (span.len)
                scratch[0] = ((const unsigned char *)span.data)[span.len - 1];
        }
        if (rc != 0 && rc != RS_EMPTY && rc != RS_CORRUPTED)
            die("rs_view_next", rc);
        switch ((sel >> 1) % 3) {
        case 0:
            rc = rs_release(r, &span);
            break;
        case 1:
            rc = rs_keep(r, &span);
            break;
        default:
            rs_rewind(r, &span);
            rc = rs_keep(r, &span);
        }
        if (rc != 0)
            die("end of a view", rc);
    }

    rc = rs_get_many(r, scratch, (sel & 8) ? 100 : sizeof(scratch), lengths, 64, 0);
    EXPECT(get_ok, rc);
    for (i = 0, total = 0; i < rc; i++)
        total += lengths[i];
    if (rc > 0 && total > ((sel & 8) ? 100 : sizeof(scratch)))
        die("rs_get_many: more bytes than the buffer", rc);

    EXPECT(put_ok, rs_put(r, scratch, (sel >> 4) % 700, 0));
    rc = rs_reserve(r, (sel >> 8) % 300, &span, 0);
    EXPECT(put_ok, rc);
    if (rc == 0) {
        span_inside(r, &span, "rs_reserve");
        memset(span.data, 0x5a, span.len);
        rc = (sel & 2) ? rs_commit(r, &span) : rs_cancel(r, &span);
        if (rc != 0)
            die("end of a reserve", rc);
    }
    for (i = 0; i < 3; i++) {
        three[i].iov_base = scratch;
        three[i].iov_len = (sel >> (12 + 4 * i)) % 16 * 9;
    }
    EXPECT(put_ok, rs_put_many(r, three, 3, 0));
    EXPECT(get_ok, rs_get(r, scratch, sizeof(scratch), &len, 0));
    rc = rs_wait_room(r, (sel >> 24) * 8, 0);
    if (rc != 0 && rc != RS_FULL && rc != RS_TOO_LARGE)
        die("rs_wait_room", rc);
    rc = rs_task_done(r, 1);
    if (rc != 0 && rc != RS_INVALID)
        die("rs_task_done", rc);
    rc = rs_wait_joined(r, 0);
    if (rc != 0 && rc != RS_BUSY)
        die("rs_wait_joined", rc);
}

/* A handle over the guarded segment, the calls, and everything let go. */
static void with_handle(guarded *g, size_t len, uint32_t sel) {
    rs_presence *presence = rs_presence_attach(g->fd);
    rs_ring *r;
    int rc;
    if (presence == NULL)
        die("rs_presence_attach", -errno);
    rc = rs__attach(g->base, len, presence, &r);
    if (rc != 0)
        die("rs__attach", rc);
    fuzz_handles++;
    calls(r, sel);
    rs_close(r);
    rs_presence_release(presence);
}

static uint32_t hash(const uint8_t *data, size_t size) {
    uint32_t h = 2166136261u;
    size_t i;
    for (i = 0; i < size; i += 1 + size / 64)
        h = (h ^ data[i]) * 16777619u;
    return h;
}

void fuzz_validate_one(const uint8_t *data, size_t size) {
    unsigned char *copy;
    guarded g;
    int exact, loose;
    if (size > FUZZ_SEED_MAX)
        return;
    /* On the heap first, where ASan sees a read past the end. */
    copy = malloc(size ? size : 1);
    if (copy == NULL)
        abort();
    memcpy(copy, data, size);
    exact = rs__validate(copy, size, 1, NULL);
    loose = rs__validate(copy, size, 0, NULL);
    free(copy);
    /* A refusal is RS_CORRUPTED, or RS_WRONG_KIND for a topic's magic. */
    if ((exact != 0 && exact != RS_CORRUPTED && exact != RS_WRONG_KIND)
            || (loose != 0 && loose != RS_CORRUPTED && loose != RS_WRONG_KIND)
            || (exact == 0 && loose != 0))
        die("rs__validate", exact != 0 ? exact : loose);
    if (loose != 0)
        return;
    map_guarded(&g, data, size);
    with_handle(&g, size, hash(data, size));
    unmap_guarded(&g);
}

/* ---- a live ring from the input ------------------------------------------
 * The input, little-endian, missing bytes zero:
 *    0  u8   flags: 1 raw positions, 2 lock words, 4 shut down
 *    1  u8   max_messages
 *    2  u16  tail: this far behind the head (unless raw)
 *    4  u32  head (unless raw)
 *    8  u64  raw head
 *   16  u64  raw tail
 *   24  u16  messages put, 26 u16 messages got
 *   28  u32  which calls (calls()'s `sel`)
 *   32  u64  put lock word, 40 u64 get lock word
 *   48  ...  the data area (4096 bytes) */

#define REC_CAPACITY 4096u
#define REC_PREFIX 48u

typedef struct {
    uint8_t flags, max_messages;
    uint16_t tail_behind;
    uint32_t head;
    uint64_t raw_head, raw_tail;
    uint16_t messages_put, messages_got;
    uint32_t sel;
    uint64_t put_owner, get_owner;
} rec_prefix;

_Static_assert(sizeof(rec_prefix) == REC_PREFIX, "rec_prefix");

void fuzz_records_one(const uint8_t *data, size_t size) {
    static const unsigned char no_identity[16];
    rec_prefix p;
    rs_header *h;
    guarded g;
    size_t n;
    memset(&p, 0, sizeof(p));
    memcpy(&p, data, size < REC_PREFIX ? size : REC_PREFIX);
    map_guarded(&g, NULL, RS_HEADER_SIZE + REC_CAPACITY);
    rs__init_header(g.base, REC_CAPACITY, 0.001, 0.0, p.max_messages, 0, NULL, no_identity);
    h = (rs_header *)g.base;
    h->producer.position = (p.flags & 1) ? p.raw_head : p.head;
    h->consumer.position = (p.flags & 1) ? p.raw_tail : (uint64_t)p.head - p.tail_behind;
    h->producer.messages = p.messages_put;
    h->consumer.messages = p.messages_got;
    if (p.flags & 2) {
        h->put_lock.owner = p.put_owner;
        h->get_lock.owner = p.get_owner;
    }
    if (p.flags & 4)
        h->flags |= RS_FLAG_SHUTDOWN;
    if (size > REC_PREFIX) {
        n = size - REC_PREFIX < REC_CAPACITY ? size - REC_PREFIX : REC_CAPACITY;
        memcpy(g.base + RS_HEADER_SIZE, data + REC_PREFIX, n);
    }
    with_handle(&g, RS_HEADER_SIZE + REC_CAPACITY, p.sel);
    unmap_guarded(&g);
}

/* ---- seeds: real rings ---------------------------------------------------- */

/* A ring of 4096 in state `which`; NULL past the last state. */
static rs_ring *seed_ring(int which) {
    static const char text[] = "a message of some length, for the seeds: 0123456789abcdef";
    rs_ring *r;
    unsigned char buf[2048];
    size_t len;
    int i;
    if (which > 5)
        return NULL;
    if (rs_anonymous(REC_CAPACITY, NULL, &r) != 0)
        die("rs_anonymous", -1);
    memset(buf, 'm', sizeof(buf));
    switch (which) {
    case 0:   /* empty */
        break;
    case 1:   /* a few messages */
        for (i = 0; i < 5; i++)
            rs_put(r, text, (size_t)(7 * i + 3), 0);
        break;
    case 2:   /* wrapped: a padding record before the head */
        for (i = 0; i < 3; i++) {
            rs_put(r, buf, 1200, 0);
            rs_get(r, buf, sizeof(buf), &len, 0);
        }
        rs_put(r, text, sizeof(text), 0);
        rs_put(r, buf, 1500, 0);
        break;
    case 3:   /* full */
        while (rs_put(r, text, sizeof(text) - 1, 0) == 0) {
        }
        break;
    case 4:   /* many laps, one message held */
        for (i = 0; i < 1000; i++) {
            rs_put(r, text, (size_t)(i % 50), 0);
            rs_get(r, buf, sizeof(buf), &len, 0);
        }
        rs_put(r, text, 20, 0);
        break;
    default:  /* a batch and a half-read view */
        {
            struct iovec v[3] = {{(void *)text, 10}, {(void *)text, 0}, {buf, 300}};
            rs_span span;
            rs_put_many(r, v, 3, 0);
            if (rs_view(r, &span, 0) == 0)
                rs_release(r, &span);
        }
        break;
    }
    return r;
}

static size_t topic_seed(int which, uint8_t *out, size_t cap);

size_t fuzz_seed(const char *target, int which, uint8_t *out, size_t cap) {
    rs_ring *r;
    if (strcmp(target, "topic") == 0 || strcmp(target, "fuzz_topic") == 0)
        return topic_seed(which, out, cap);
    r = seed_ring(which);
    rs_header *h;
    rec_prefix p;
    size_t size;
    if (r == NULL)
        return 0;
    h = r->hdr;
    if (strcmp(target, "validate") == 0 || strcmp(target, "fuzz_validate") == 0) {
        size = RS_HEADER_SIZE + r->capacity;
        if (size > cap)
            abort();
        memcpy(out, h, size);
        /* This process's lock slot is nobody's in a copy. */
        memset(out + RS_SLOT_TABLE_OFFSET, 0, RS_SLOTS * sizeof(rs_slot));
    } else {
        memset(&p, 0, sizeof(p));
        p.head = (uint32_t)h->producer.position;
        p.tail_behind = (uint16_t)(h->producer.position - h->consumer.position);
        p.messages_put = (uint16_t)h->producer.messages;
        p.messages_got = (uint16_t)h->consumer.messages;
        p.sel = (uint32_t)which * 0x9E3779B9u;
        size = REC_PREFIX + r->capacity;
        if (size > cap)
            abort();
        memcpy(out, &p, REC_PREFIX);
        memcpy(out + REC_PREFIX, r->data, r->capacity);
    }
    rs_close(r);
    return size;
}

/* ---- a live topic from the input ------------------------------------------
 * A topic of capacity 4096 whose header words, history index, first
 * subscriber entries and data area come from the input (little-endian,
 * missing bytes zero):
 *    0  u8   flags: 1 raw positions, 2 put lock word, 4 shut down, 8 the
 *            table's first 4 entries, 16 the index, 32 the header's
 *            identity words (then rs__validate_topic decides)
 *    1  u8   history (mod 9)
 *    2  u16  tail: this far behind the head (unless raw)
 *    4  u32  head (unless raw)
 *    8  u64  raw head,  16 u64 raw tail
 *   24  u32  messages published (the next seq), 28 u32 messages freed (the oldest seq)
 *   32  u32  which calls
 *   36  u32  history word of the topic block (flag 32)
 *   40  u64  limit,  48 u64 looked_ns,  56 u64 put lock word
 *   64  u32  header_size (flag 32), 68 u32 subscribers word (flag 32)
 *   72  u64  capacity (flag 32)
 *   80  ...  zero up to 128
 *  128  8 u64: the index
 *  192  4 x 128: subscriber entries 0-3
 *  704  the data area (4096 bytes) */

#define TOPIC_CAPACITY 4096u
#define TOPIC_PREFIX 128u
#define TOPIC_INDEX_AT 128u
#define TOPIC_TABLE_AT 192u
#define TOPIC_TABLE_ENTRIES 4u
#define TOPIC_DATA_AT (TOPIC_TABLE_AT + TOPIC_TABLE_ENTRIES * 128u)

typedef struct {
    uint8_t flags, history;
    uint16_t tail_behind;
    uint32_t head;
    uint64_t raw_head, raw_tail;
    uint32_t next_seq, oldest_seq;
    uint32_t sel;
    uint32_t history_word;
    uint64_t limit, looked_ns, put_owner;
    uint32_t header_size, subscribers;
    uint64_t capacity;
    char _zero[TOPIC_PREFIX - 80];
} topic_prefix;

_Static_assert(sizeof(topic_prefix) == TOPIC_PREFIX, "topic_prefix");

static int sub_ok(int rc) {
    return rc >= 0 || rc == RS_EMPTY || rc == RS_LAGGED || rc == RS_CORRUPTED
           || rc == RS_TOO_LARGE || rc == RS_SHUTDOWN;
}

static int pub_ok(int rc) {
    return rc == 0 || rc == RS_FULL || rc == RS_CORRUPTED || rc == RS_TOO_LARGE
           || rc == RS_SHUTDOWN;
}

static int subscribe_ok(int rc) {
    return rc == 0 || rc == RS_CORRUPTED || rc == RS_NO_SLOT || rc == RS_SHUTDOWN
           || rc == RS_BUSY;
}

unsigned long fuzz_topic_messages;

static void read_some(rs_ring *r, rs_sub *s, uint32_t sel) {
    size_t len, lengths[16], total;
    rs_span span;
    int rc, i;
    for (i = 0; i < 3; i++) {
        rc = rs_sub_get(s, scratch, (sel & 1) ? sizeof(scratch) : 24, &len, 0);
        EXPECT(sub_ok, rc);
        fuzz_topic_messages += rc == 0;
    }
    rc = rs_sub_get_many(s, scratch, (sel & 8) ? 100 : sizeof(scratch), lengths, 16, 0);
    EXPECT(sub_ok, rc);
    for (i = 0, total = 0; i < rc; i++)
        total += lengths[i];
    if (rc > 0 && total > ((sel & 8) ? 100 : sizeof(scratch)))
        die("rs_sub_get_many: more bytes than the buffer", rc);
    rc = rs_sub_view(s, &span, 0);
    EXPECT(sub_ok, rc);
    if (rc == 0) {
        span_inside(r, &span, "rs_sub_view");
        if (span.len)
            scratch[0] = ((const unsigned char *)span.data)[span.len - 1];
        rc = (sel & 2) ? rs_sub_release(s, &span) : rs_sub_keep(s, &span);
        if (rc != 0 && rc != RS_LAGGED)
            die("end of a subscription's view", rc);
    }
    rc = rs_sub_wait(s, 0);
    if (rc != 0 && rc != RS_EMPTY && rc != RS_SHUTDOWN)
        die("rs_sub_wait", rc);
    (void)rs_sub_lag(s);
    (void)rs_sub_missed(s);
    (void)rs_sub_tethered(s);
}

static void topic_calls(rs_topic *t, uint32_t sel) {
    rs_ring *r = rs_topic_ring(t);
    struct rs_topic_stats st;
    static rs_sub_info infos[RS_TOPIC_MAX_SUBSCRIBERS];
    struct iovec three[3];
    rs_sub *subs[2] = {NULL, NULL};
    rs_span span;
    int rc, i, n;
    if (rs_topic_stats(t, &st) != 0)
        die("rs_topic_stats", -1);
    n = rs_topic_subscribers(t, infos, RS_TOPIC_MAX_SUBSCRIBERS);
    if (n < 0 || n > (int)RS_TOPIC_MAX_SUBSCRIBERS)
        die("rs_topic_subscribers", n);
    (void)rs_topic_is_shutdown(t);
    EXPECT(subscribe_ok, rs_topic_subscribe(t, 0, (sel & 4) ? 0.001 : 0, 0, &subs[0]));
    EXPECT(subscribe_ok, rs_topic_subscribe(t, RS_SUB_UNTETHERED, 0, 0, &subs[1]));
    for (i = 0; i < 2; i++)
        if (subs[i] != NULL)
            read_some(r, subs[i], sel >> (4 * i));
    EXPECT(pub_ok, rs_topic_publish(t, scratch, (sel >> 4) % 900, 0));
    for (i = 0; i < 3; i++) {
        three[i].iov_base = scratch;
        three[i].iov_len = (sel >> (12 + 4 * i)) % 16 * 9;
    }
    EXPECT(pub_ok, rs_topic_publish_many(t, three, 3, 0));
    rc = rs_topic_reserve(t, (sel >> 8) % 300, &span, 0);
    EXPECT(pub_ok, rc);
    if (rc == 0) {
        span_inside(r, &span, "rs_topic_reserve");
        memset(span.data, 0x5a, span.len);
        rc = (sel & 16) ? rs_topic_commit(t, &span) : rs_topic_cancel(t, &span);
        if (rc != 0)
            die("end of a topic's reserve", rc);
    }
    for (i = 0; i < 2; i++)
        if (subs[i] != NULL) {
            read_some(r, subs[i], sel >> (8 + 4 * i));
            rs_sub_close(subs[i]);
        }
    /* A second subscriber from the history, after what was published. */
    if (rs_topic_subscribe(t, 0, 0, 0, &subs[0]) == 0) {
        read_some(r, subs[0], sel >> 20);
        rs_sub_close(subs[0]);
    }
}

void fuzz_topic_one(const uint8_t *data, size_t size) {
    static const unsigned char no_identity[16];
    topic_prefix p;
    rs_presence *presence;
    rs_header *h;
    rs_topic_block *tb;
    rs_ring *r;
    guarded g;
    uint32_t history;
    size_t len, n;
    int rc;
    memset(&p, 0, sizeof(p));
    memcpy(&p, data, size < TOPIC_PREFIX ? size : TOPIC_PREFIX);
    history = p.history % 9u;
    len = rs__topic_header_size(history) + TOPIC_CAPACITY;
    map_guarded(&g, NULL, len);
    rs__init_topic_header(g.base, TOPIC_CAPACITY, 0.001, 0.0, 0, NULL, no_identity, history);
    h = (rs_header *)g.base;
    tb = (rs_topic_block *)(g.base + RS_TOPIC_BLOCK_OFFSET);
    h->producer.position = (p.flags & 1) ? p.raw_head : p.head;
    h->consumer.position = (p.flags & 1) ? p.raw_tail : (uint64_t)p.head - p.tail_behind;
    h->producer.messages = p.next_seq;
    h->consumer.messages = p.oldest_seq;
    tb->limit = p.limit;
    tb->looked_ns = p.looked_ns;
    if (p.flags & 2)
        h->put_lock.owner = p.put_owner;
    if (p.flags & 4)
        h->flags |= RS_FLAG_SHUTDOWN;
    if ((p.flags & 16) && size > TOPIC_INDEX_AT) {
        n = size - TOPIC_INDEX_AT < 8u * history ? size - TOPIC_INDEX_AT : 8u * history;
        memcpy(g.base + RS_TOPIC_INDEX_OFFSET, data + TOPIC_INDEX_AT, n);
    }
    if ((p.flags & 8) && size > TOPIC_TABLE_AT) {
        n = size - TOPIC_TABLE_AT < TOPIC_TABLE_ENTRIES * 128u ? size - TOPIC_TABLE_AT
                                                               : TOPIC_TABLE_ENTRIES * 128u;
        memcpy(g.base + RS_TOPIC_TABLE_OFFSET, data + TOPIC_TABLE_AT, n);
    }
    if (size > TOPIC_DATA_AT) {
        n = size - TOPIC_DATA_AT < TOPIC_CAPACITY ? size - TOPIC_DATA_AT : TOPIC_CAPACITY;
        memcpy(g.base + rs__topic_header_size(history), data + TOPIC_DATA_AT, n);
    }
    if (p.flags & 32) {
        tb->history = p.history_word;
        tb->subscribers = p.subscribers;
        h->header_size = p.header_size;
        h->capacity = p.capacity;
    }
    rc = rs__validate_topic(g.base, len, 1, NULL);
    if (rc != 0 && rc != RS_CORRUPTED)
        die("rs__validate_topic", rc);
    if (rc == 0 && rs__validate(g.base, len, 1, NULL) != RS_WRONG_KIND)
        die("rs__validate of a topic", -1);
    if (rc == 0) {
        presence = rs_presence_attach(g.fd);
        if (presence == NULL)
            die("rs_presence_attach", -errno);
        rc = rs__attach(g.base, len, presence, &r);
        if (rc != 0)
            die("rs__attach", rc);
        fuzz_handles++;
        topic_calls((rs_topic *)r, p.sel);
        if (rs_put(r, scratch, 1, 0) != RS_WRONG_KIND)
            die("rs_put on a topic", -1);
        rs_topic_close((rs_topic *)r);
        rs_presence_release(presence);
    }
    unmap_guarded(&g);
}

/* ---- seeds: real topics ---------------------------------------------------- */

/* A topic of 4096 in state `which`, its subscriptions in keep[0..2] (to be
 * closed after the copy: in the copy they are a dead process's entries);
 * NULL past the last state. */
static rs_topic *seed_topic(int which, rs_sub *keep[3]) {
    static const char text[] = "a message of a topic, for the seeds: 0123456789abcdef";
    rs_topic *t;
    rs_sub *s;
    char buf[1500];
    size_t len;
    int i;
    if (which > 6)
        return NULL;
    if (rs_topic_anonymous(TOPIC_CAPACITY, which == 0 ? 0 : 4, NULL, &t) != 0)
        die("rs_topic_anonymous", -1);
    memset(buf, 't', sizeof(buf));
    for (i = 0; i < 3; i++)
        keep[i] = NULL;
    switch (which) {
    case 0:   /* empty, no history */
        break;
    case 1:   /* a few messages, a subscriber behind them */
        rs_topic_subscribe(t, 0, 0, 0, &keep[0]);
        for (i = 0; i < 5; i++)
            rs_topic_publish(t, text, (size_t)(7 * i + 3), 0);
        break;
    case 2:   /* wrapped: a padding record */
        rs_topic_subscribe(t, 0, 0, 0, &keep[0]);
        for (i = 0; i < 3; i++) {
            rs_topic_publish(t, buf, 1200, 0);
            rs_sub_get(keep[0], buf, sizeof(buf), &len, 0);
        }
        rs_topic_publish(t, text, sizeof(text), 0);
        rs_topic_publish(t, buf, 1000, 0);
        break;
    case 3:   /* full: a tethered subscriber that took nothing */
        rs_topic_subscribe(t, 0, 0, 0, &keep[0]);
        while (rs_topic_publish(t, text, sizeof(text) - 1, 0) == 0) {
        }
        break;
    case 4:   /* many laps; an untethered subscriber overrun, a tethered one keeping up */
        rs_topic_subscribe(t, RS_SUB_UNTETHERED, 0, 0, &keep[0]);
        rs_topic_subscribe(t, 0, 0.5, 0, &keep[1]);
        for (i = 0; i < 500; i++) {
            rs_topic_publish(t, text, (size_t)(i % 50), 0);
            rs_sub_get(keep[1], buf, sizeof(buf), &len, 0);
        }
        break;
    case 5:   /* a batch, subscribers that came and went, shut down */
        {
            struct iovec v[3] = {{(void *)text, 10}, {(void *)text, 0}, {buf, 300}};
            rs_topic_subscribe(t, 0, 0, 0, &s);
            rs_sub_close(s);
            rs_topic_subscribe(t, 0, 0, 0, &keep[0]);
            rs_topic_publish_many(t, v, 3, 0);
            rs_topic_shutdown(t);
        }
        break;
    default:  /* a stalled subscriber, publishing went on */
        rs_topic_subscribe(t, 0, 0.001, 0, &keep[0]);
        for (i = 0; i < 200; i++)
            rs_topic_publish(t, text, 40, (int64_t)5000000);
        break;
    }
    return t;
}

static size_t topic_seed(int which, uint8_t *out, size_t cap) {
    rs_sub *keep[3];
    rs_topic *t = seed_topic(which, keep);
    topic_prefix p;
    int i;
    rs_ring *r;
    rs_header *h;
    size_t size = TOPIC_DATA_AT + TOPIC_CAPACITY;
    if (t == NULL)
        return 0;
    if (size > cap)
        abort();
    r = rs_topic_ring(t);
    h = r->hdr;
    memset(&p, 0, sizeof(p));
    memset(out, 0, size);
    p.flags = 8 | 16 | (rs_topic_is_shutdown(t) ? 4 : 0);
    p.history = (uint8_t)r->history;
    p.head = (uint32_t)h->producer.position;
    p.tail_behind = (uint16_t)(h->producer.position - h->consumer.position);
    p.next_seq = (uint32_t)h->producer.messages;
    p.oldest_seq = (uint32_t)h->consumer.messages;
    p.sel = (uint32_t)which * 0x9E3779B9u;
    p.limit = r->tblock->limit;
    p.looked_ns = r->tblock->looked_ns;
    memcpy(out, &p, TOPIC_PREFIX);
    memcpy(out + TOPIC_INDEX_AT, r->index, 8u * r->history);
    memcpy(out + TOPIC_TABLE_AT, r->subs, TOPIC_TABLE_ENTRIES * 128u);
    memcpy(out + TOPIC_DATA_AT, r->data, TOPIC_CAPACITY);
    for (i = 0; i < 3; i++)
        rs_sub_close(keep[i]);
    rs_topic_close(t);
    return size;
}
