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

/* Write a fresh header (the creator only, before anyone attaches): the
 * magic last, so an opener that sees it sees a whole header.  `liveness`:
 * the companion file's identity when the lock slots live on another file
 * than the segment (System V), else NULL. */
void rs__init_header(void *base, uint64_t capacity, double recovery_interval, double spin,
                     uint64_t max_messages, int ephemeral, const rs_liveness_id *liveness,
                     const unsigned char identity[16]) {
    rs_header *h = base;
    struct timespec ts;
    memset((char *)h + 8, 0, RS_HEADER_SIZE - 8);
    if (liveness != NULL)
        *liveness_id(h) = *liveness;
    h->version = RS_VERSION;
    h->header_size = RS_HEADER_SIZE;
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
    rs_store_release((uint64_t *)h->magic, magic_word());
}

/* Check a header written by somebody else before trusting it.  `exact`:
 * the segment must be exactly one header and the capacity (a file); else
 * at least (a System V segment, which a C program may have made larger).
 * `liveness`: the identity of the file our lock slots live on when it is
 * not the segment, else NULL.  0 or RS_CORRUPTED (rs_detail says why). */
int rs__validate(const void *base, size_t mapped_length, int exact,
                 const rs_liveness_id *liveness) {
    const rs_header *h = base;
    rs_liveness_id none = {0, 0};
    const rs_liveness_id *recorded;
    uint64_t cap, need;
    if (mapped_length < RS_HEADER_SIZE)
        return rs__fail(RS_CORRUPTED, "segment is truncated: %zu bytes, less than one header "
                        "(%u)", mapped_length, RS_HEADER_SIZE);
    if (memcmp(h->magic, RS_MAGIC, 8) != 0)
        return rs__fail(RS_CORRUPTED, "not a ringshm segment (bad magic)");
    if (h->version != RS_VERSION)
        return rs__fail(RS_CORRUPTED, "unknown layout version %u (this ringshm reads version "
                        "%u)", h->version, RS_VERSION);
    if (h->header_size != RS_HEADER_SIZE)
        return rs__fail(RS_CORRUPTED, "unexpected header size %u", h->header_size);
    cap = h->capacity;
    if (cap < RS_MIN_CAPACITY || cap > RS_MAX_CAPACITY || (cap & (cap - 1)) != 0)
        return rs__fail(RS_CORRUPTED, "invalid capacity %llu", (unsigned long long)cap);
    need = RS_HEADER_SIZE + cap;
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

/* Read the settings once (see the top of this file). */
void rs__adopt_header(rs_ring *r) {
    rs_header *h = r->hdr;
    uint64_t half;
    int64_t slice_us = h->recovery_interval_us;
    r->capacity = h->capacity;
    r->mask = h->capacity - 1;
    r->data = (char *)h + RS_HEADER_SIZE;
    /* Half the ring: an empty ring then takes any single message without a
     * consumer's help, wherever the head stands (padding + record fit). */
    half = r->capacity / 2 - RS_RECORD_HEADER;
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
    *out = r;
    return 0;
}
