/* A segment: writing a fresh header, checking one somebody else wrote, and
 * making a handle over a mapping of it.  Whatever backs the segment (a name,
 * a file, an anonymous mapping, System V) is backing.c's; this unit only
 * sees memory.  The header is read once when the handle is made: a peer
 * that rewrites the capacity later cannot make us read outside the mapping,
 * since the handle keeps its own copy. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* What a claimed blank segment holds in its magic while its claimer writes
 * the header: not the magic, not zero ("RINGINIT" little-endian). */
#define CLAIMED_MAGIC 0x54494e49474e4952ull

static inline uint64_t magic_word(void) {
    uint64_t word;
    memcpy(&word, RS_MAGIC, 8);
    return word;
}

/* May this process write the header of this blank segment (and must it:
 * nobody else will)?  A segment made outside ringshm (a C program's shmget)
 * is blank only when every byte (`whole`) is zero; a segment this process
 * has just made, when its magic is.  A compare-and-swap on the magic: of
 * two processes racing to adopt the same segment one wins. */
int rs__claim_blank(void *base, size_t length, int whole) {
    const unsigned char *p = base;
    size_t i;
    if (whole)
        for (i = 0; i < length; i++)
            if (p[i] != 0)
                return 0;
    return rs_cas((uint64_t *)base, 0, CLAIMED_MAGIC);
}

/* False while the creator may still be writing the header. */
int rs__magic_present(const void *base) {
    uint64_t magic = rs_load_acquire((const uint64_t *)base);
    return magic != 0 && magic != CLAIMED_MAGIC;
}

static inline rs_liveness_id *liveness_id(rs_header *h) {
    return (rs_liveness_id *)((char *)h + RS_LIVENESS_ID_OFFSET);
}

static inline uint64_t topic_magic_word(void) {
    uint64_t word;
    memcpy(&word, RS_TOPIC_MAGIC, 8);
    return word;
}

/* Write a fresh header (the creator only, before anyone attaches): the
 * magic last, so an opener that sees it sees a whole header.  `liveness`:
 * the companion file's identity when the lock slots live on another file
 * than the segment (System V), else NULL.  `topic`: a topic's header
 * (its table and index too) with `history`; else a ring's. */
static void init_header(void *base, uint64_t capacity, double recovery_interval, double spin,
                        uint64_t max_messages, int ephemeral, const rs_liveness_id *liveness,
                        const unsigned char identity[16], int topic, uint32_t history) {
    rs_header *h = base;
    rs_topic_block *tb;
    struct timespec ts;
    uint64_t header_size = topic ? rs__topic_header_size(history) : RS_HEADER_SIZE;
    memset((char *)h + 8, 0, header_size - 8);
    if (liveness != NULL)
        *liveness_id(h) = *liveness;
    h->version = RS_VERSION;
    h->header_size = (uint32_t)header_size;
    h->capacity = capacity;
    h->max_messages = max_messages;
    h->creator_pid = getpid();
    h->creator_start_time = rs__proc_start_time(getpid(), NULL);
    clock_gettime(CLOCK_REALTIME, &ts);
    h->created_ns = (uint64_t)ts.tv_sec * RS_NS + (uint64_t)ts.tv_nsec;
    h->recovery_interval_us = (uint32_t)(recovery_interval * 1e6);
    h->spin_ns = (uint32_t)(spin * 1e3);
    h->flags = ephemeral ? RS_FLAG_EPHEMERAL : 0;
    memcpy(h->identity, identity, 16);
    if (topic) {
        tb = (rs_topic_block *)((char *)h + RS_TOPIC_BLOCK_OFFSET);
        tb->history = history;
        tb->subscribers = RS_TOPIC_SUBSCRIBERS;
        tb->limit = UINT64_MAX;
    }
    rs_store_release((uint64_t *)h->magic, topic ? topic_magic_word() : magic_word());
}

void rs__init_header(void *base, uint64_t capacity, double recovery_interval, double spin,
                     uint64_t max_messages, int ephemeral, const rs_liveness_id *liveness,
                     const unsigned char identity[16]) {
    init_header(base, capacity, recovery_interval, spin, max_messages, ephemeral, liveness,
                identity, 0, 0);
}

void rs__init_topic_header(void *base, uint64_t capacity, double recovery_interval,
                           double spin, int ephemeral, const rs_liveness_id *liveness,
                           const unsigned char identity[16], uint32_t history) {
    init_header(base, capacity, recovery_interval, spin, 0, ephemeral, liveness, identity, 1,
                history);
}

/* What the magic says the segment is: 0 a ring, 1 a topic, -1 neither. */
int rs__segment_kind(const void *base) {
    if (memcmp(base, RS_MAGIC, 8) == 0)
        return 0;
    if (memcmp(base, RS_TOPIC_MAGIC, 8) == 0)
        return 1;
    return -1;
}

/* Check a header written by somebody else before trusting it.  `exact`:
 * the segment must be exactly one header and the capacity (a file); else
 * at least (a System V segment, which a C program may have made larger).
 * `liveness`: the identity of the file our lock slots live on when it is
 * not the segment, else NULL.  0 or RS_CORRUPTED (rs_detail says why). */
static int validate(const void *base, size_t mapped_length, int exact,
                    const rs_liveness_id *liveness, int topic) {
    const rs_header *h = base;
    const rs_topic_block *tb = (const rs_topic_block *)((const char *)base
                                                        + RS_TOPIC_BLOCK_OFFSET);
    rs_liveness_id none = {0, 0};
    const rs_liveness_id *recorded;
    uint64_t cap, need, header_size = RS_HEADER_SIZE;
    int kind;
    if (mapped_length < RS_HEADER_SIZE)
        return rs__fail(RS_CORRUPTED, "segment is truncated: %zu bytes, less than one header "
                        "(%u)", mapped_length, RS_HEADER_SIZE);
    kind = rs__segment_kind(base);
    if (kind < 0)
        return rs__fail(RS_CORRUPTED, "not a ringshm segment (bad magic)");
    if (kind != topic)
        return rs__fail(RS_WRONG_KIND, kind ? "a topic, not a ring: open it as a topic"
                                            : "a ring, not a topic: open it as a ring");
    if (h->version != RS_VERSION)
        return rs__fail(RS_CORRUPTED, "unknown layout version %u (this ringshm reads version "
                        "%u)", h->version, RS_VERSION);
    if (topic) {
        if (tb->history > RS_TOPIC_MAX_HISTORY || tb->subscribers != RS_TOPIC_SUBSCRIBERS)
            return rs__fail(RS_CORRUPTED, "topic of %u subscriber entries and history %u: "
                            "this ringshm reads %u entries, history up to %u",
                            tb->subscribers, tb->history, RS_TOPIC_SUBSCRIBERS,
                            RS_TOPIC_MAX_HISTORY);
        header_size = rs__topic_header_size(tb->history);
    }
    if (h->header_size != header_size)
        return rs__fail(RS_CORRUPTED, "unexpected header size %u", h->header_size);
    cap = h->capacity;
    if (cap < RS_MIN_CAPACITY || cap > RS_MAX_CAPACITY || (cap & (cap - 1)) != 0)
        return rs__fail(RS_CORRUPTED, "invalid capacity %llu", (unsigned long long)cap);
    need = header_size + cap;
    if (need > mapped_length || (exact && need != mapped_length))
        return rs__fail(RS_CORRUPTED, "segment is %zu bytes but its header says %llu: "
                        "truncated or damaged", mapped_length, (unsigned long long)need);
    if (liveness == NULL)
        liveness = &none;
    recorded = (const rs_liveness_id *)((const char *)h + RS_LIVENESS_ID_OFFSET);
    if (recorded->dev != liveness->dev || recorded->ino != liveness->ino)
        return rs__fail(RS_CORRUPTED, "the ring's lock slots live on another file than this "
                        "one: the header names device %llu inode %llu, this process has %llu, "
                        "%llu", (unsigned long long)recorded->dev,
                        (unsigned long long)recorded->ino, (unsigned long long)liveness->dev,
                        (unsigned long long)liveness->ino);
    return 0;
}

int rs__validate(const void *base, size_t mapped_length, int exact,
                 const rs_liveness_id *liveness) {
    return validate(base, mapped_length, exact, liveness, 0);
}

int rs__validate_topic(const void *base, size_t mapped_length, int exact,
                       const rs_liveness_id *liveness) {
    return validate(base, mapped_length, exact, liveness, 1);
}

/* Read the settings once (see the top of this file): each word of the
 * header once, into the handle.  Validated (or written) by us before; but
 * a peer may have rewritten them since, so what the handle keeps is
 * checked again against the mapping (rs__attach). */
void rs__adopt_header(rs_ring *r) {
    rs_header *h = r->hdr;
    uint64_t half;
    int64_t slice_us = h->recovery_interval_us;
    uint32_t header_size = __atomic_load_n(&h->header_size, __ATOMIC_RELAXED);
    r->capacity = __atomic_load_n(&h->capacity, __ATOMIC_RELAXED);
    r->mask = r->capacity - 1;
    r->data = (char *)h + header_size;
    r->topic = rs__segment_kind(h) == 1;
    if (r->topic) {
        r->tblock = (rs_topic_block *)((char *)h + RS_TOPIC_BLOCK_OFFSET);
        r->subs = (rs_sub_entry *)((char *)h + RS_TOPIC_TABLE_OFFSET);
        r->index = (uint64_t *)((char *)h + RS_TOPIC_INDEX_OFFSET);
        r->history = __atomic_load_n(&r->tblock->history, __ATOMIC_RELAXED);
    }
    /* Half the ring: an empty ring then takes any single message without a
     * consumer's help, wherever the head stands (padding + record fit). */
    half = r->capacity / 2 - (r->topic ? RS_TOPIC_RECORD_HEADER : RS_RECORD_HEADER);
    r->max_payload = half < RS_MAX_PAYLOAD ? half : RS_MAX_PAYLOAD;
    r->max_messages = h->max_messages;
    if (slice_us < 1000)
        slice_us = 1000;
    if (slice_us > 60000000)
        slice_us = 60000000;
    r->slice_ns = slice_us * 1000;
    r->spin_ns = h->spin_ns < 1000000000u ? (int64_t)h->spin_ns : 1000000000;
    rs_store_release(&r->cached_tail, rs_load_acquire(&h->consumer.position));
    rs_store_release(&r->cached_head, rs_load_acquire(&h->producer.position));
    rs_store_relaxed(&r->put_seen, rs_load_relaxed(&r->cached_head));
}

/* The values the handle adopted still describe a segment inside the
 * `length` bytes mapped (a peer may rewrite the header between the
 * validation and the adoption). */
static int adopted_fits(const rs_ring *r, size_t length) {
    uint64_t header_size = (uint64_t)(r->data - (char *)r->hdr);
    if (r->capacity < RS_MIN_CAPACITY || r->capacity > RS_MAX_CAPACITY
            || (r->capacity & (r->capacity - 1)) != 0)
        return 0;
    if (r->topic && (r->history > RS_TOPIC_MAX_HISTORY
                     || header_size != rs__topic_header_size(r->history)))
        return 0;
    if (!r->topic && header_size != RS_HEADER_SIZE)
        return 0;
    return header_size + r->capacity <= length;
}

/* A handle over a validated (or freshly written) header at `base`; the
 * mapping and the presence stay the caller's until it says otherwise
 * (map_base/unmap, owns_presence). */
int rs__attach(void *base, size_t length, rs_presence *presence, rs_ring **out) {
    rs_ring *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return rs__fail(-12, "out of memory");
    rs__register_atfork();
    r->hdr = base;
    r->map_length = length;
    r->presence = presence;
    r->refs = 1;
    r->fd = -1;
    r->unlink_sysv_id = -1;
    r->forks = rs__forks;
    rs__adopt_header(r);
    if (!adopted_fits(r, length)) {
        free(r);
        return rs__fail(RS_CORRUPTED, "the segment's header changed while it was attached: "
                        "capacity or header size no longer fit the mapping");
    }
    *out = r;
    return 0;
}
