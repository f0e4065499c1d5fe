/* The byte layout of a ringshm segment, version 2 (docs/FORMAT.md).
 *
 * The header occupies the first page.  Fields written by producers and
 * fields written by consumers sit on separate 128-byte blocks so that the two
 * sides never write the same cache line (128, not 64: adjacent-line
 * prefetchers pull lines in pairs).  Offsets are fixed by the static
 * asserts below; another language can interoperate from FORMAT.md alone. */
#ifndef RINGSHM_LAYOUT_H
#define RINGSHM_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#define RS_MAGIC "RINGSHM\0"
#define RS_VERSION 2u
#define RS_HEADER_SIZE 4096u
#define RS_RECORD_HEADER 8u
#define RS_ALIGN 8u
#define RS_MIN_CAPACITY 4096ull
#define RS_MAX_CAPACITY (1ull << 40)
/* The length field of a record is 32 bits. */
#define RS_MAX_PAYLOAD 0xFFFFFFF0ull

/* Record kinds: distinctive values, so that garbage is recognised. */
#define RS_KIND_DATA 0x41544144u    /* "DATA" little-endian */
#define RS_KIND_PADDING 0x44444150u /* "PADD" little-endian */

#define RS_FLAG_SHUTDOWN 1ull
/* Made with persist=False: the name goes with its creator, so `ringshm gc`
 * may remove it once the creator is dead and nobody maps it.  An inverse
 * bit ("ephemeral", not "persistent") so that a 0.1 segment, which never
 * sets it, is never taken for a ring that may be collected. */
#define RS_FLAG_EPHEMERAL 2ull

/* One side's intent to publish: written before head/tail is published, so a
 * process that takes over the lock of a dead owner can finish the counters
 * the dead owner had published but not yet counted. */
typedef struct {
    uint64_t position;   /* the head (or tail) about to be published */
    uint64_t messages;   /* messages_put (or messages_got) once published */
    uint64_t bytes;      /* bytes_put (or bytes_got) once published */
} rs_intent;

/* A place to sleep: a flag that says somebody may sleep here, and a futex
 * word that a waker bumps.  The waker clears the flag when it wakes, so a
 * sleeper that died costs at most one wake, never a system call per message
 * for ever.  (Not a POSIX sem_t: glibc aborts the process when a sem_t holds
 * bytes it does not expect, and a peer may write any bytes; see DESIGN.md.) */
typedef struct {
    uint64_t wanted;
    uint32_t futex;
    uint32_t _pad;
    char _reserved[48];
} rs_waitq;

/* The tag of a tagged put (put_many(..., tag=T)), published with its head:
 * `position` names the head the tag belongs to and `value` the tag, both
 * written before the head; `last` is the tag of the last tagged put.  A
 * process that takes the put lock from a dead holder copies `value` to
 * `last` when the head is `position`, then clears `position` (repair_tag).
 * Only the producer side uses it; the consumer side's stays zero. */
typedef struct {
    uint64_t position;
    uint64_t value;
    uint64_t last;
} rs_tag;

/* A waiting producer's claim on room, "next in line" (0.3; docs/DESIGN.md,
 * "Many producers of big items"): a producer that found no room records
 * what it needs, under the put lock, when no live claim is there; until it
 * has put, other producers take room only where its batch would still fit
 * after theirs.  Bounded, so that a dead or departed claimant stops nobody
 * for long: it holds until `until`, which the claimant moves on while it
 * waits.  Only the producer side uses it; the consumer side's stays zero,
 * and a peer that does not know it (0.2) only ignores it. */
typedef struct {
    uint64_t ticket;     /* which claim; 0: none */
    uint64_t owner;      /* the claimant's lock token */
    uint64_t need;       /* bytes of its records, padding aside (at most half the ring) */
    uint64_t messages;   /* messages in its batch */
    uint64_t until;      /* CLOCK_MONOTONIC ns: ignored from then on */
} rs_claim;

/* One side of the ring: its counter (head for producers, tail for
 * consumers), its statistics and its intent, on a 128-byte block of its own. */
typedef struct {
    uint64_t position;   /* head or tail: a byte counter that only grows */
    uint64_t messages;   /* messages put, or got */
    uint64_t bytes;      /* payload bytes put, or got */
    uint64_t waits;      /* calls that had to wait for room, or for a message */
    uint64_t timeouts;   /* calls that raised Full, or Empty */
    rs_intent intent;
    rs_tag tag;          /* producer side only */
    rs_claim claim;      /* producer side only (0.3) */
} rs_side;

/* Counters of the NATS bridges (ringshm.bridge), for `ringshm info`: the
 * out bridge counts on its source ring, the in bridge on its destination.
 * Statistics only (relaxed adds), never read by the protocol. */
typedef struct {
    uint64_t sent;          /* out: messages published to JetStream */
    uint64_t acked;         /* out: messages JetStream acknowledged, then consumed */
    uint64_t received;      /* in: messages fetched from JetStream */
    uint64_t redelivered;   /* in: fetched again after a crash or a lost ack: dropped */
    uint64_t put;           /* in: messages put into the ring */
    uint64_t _reserved;
} rs_bridge;

typedef struct {
    uint64_t owner;        /* holder's token (generation << 32 | slot), 0 = free */
    uint64_t recoveries;   /* times a dead holder's lock was taken over */
    rs_waitq waitq;        /* those waiting for the lock */
} rs_lock;

typedef struct {
    /* 0: identity, written once by the creator; magic last. */
    char magic[8];
    uint32_t version;
    uint32_t header_size;
    uint64_t capacity;
    uint64_t max_messages;         /* 0 = unlimited */
    int64_t creator_pid;
    uint64_t creator_start_time;   /* clock ticks since boot, /proc/PID/stat */
    uint64_t created_ns;           /* CLOCK_REALTIME at creation */
    uint32_t recovery_interval_us;
    uint32_t spin_ns;
    uint64_t flags;                /* RS_FLAG_SHUTDOWN, RS_FLAG_EPHEMERAL */
    char _pad0[128 - 72];

    /* 128: the producer side, written under the put lock;
     * 256: the consumer side, written under the get lock. */
    rs_side producer;
    rs_side consumer;

    /* 384, 512: the locks. */
    rs_lock put_lock;
    char _pad3[128 - sizeof(rs_lock)];
    rs_lock get_lock;
    char _pad4[128 - sizeof(rs_lock)];

    /* 640: consumers waiting for data; 768: producers waiting for space. */
    rs_waitq data_waitq;
    char _pad5[128 - sizeof(rs_waitq)];
    rs_waitq space_waitq;
    char _pad6[128 - sizeof(rs_waitq)];

    /* 896: JoinableQueue's task count.  Unfinished tasks are the messages
     * put (the producer side's counter) minus tasks_done; zero in a ring
     * that no JoinableQueue uses, so older readers are unaffected. */
    uint64_t tasks_done;
    char _pad7[64 - 8];
    rs_waitq joined_waitq;   /* 960: join() sleeps here */

    /* 1024: 128 random bits, written once by the creator before the magic:
     * which ring this is, across renames and restarts (the bridges' message
     * ids).  All zero in a ring made before it existed. */
    uint8_t identity[16];
    rs_bridge bridge;        /* 1040..1087 */
} rs_header;

_Static_assert(sizeof(rs_waitq) == 64, "rs_waitq");
_Static_assert(offsetof(rs_header, flags) == 64, "flags");
_Static_assert(sizeof(rs_side) == 128, "rs_side");
_Static_assert(offsetof(rs_header, producer) == 128, "head");
_Static_assert(offsetof(rs_header, consumer) == 256, "tail");
_Static_assert(offsetof(rs_header, put_lock) == 384, "put_lock");
_Static_assert(offsetof(rs_header, get_lock) == 512, "get_lock");
_Static_assert(offsetof(rs_header, data_waitq) == 640, "data_waitq");
_Static_assert(offsetof(rs_header, space_waitq) == 768, "space_waitq");
_Static_assert(offsetof(rs_header, tasks_done) == 896, "tasks_done");
_Static_assert(offsetof(rs_header, joined_waitq) == 960, "joined_waitq");
_Static_assert(offsetof(rs_side, tag) == 64, "tag");
_Static_assert(offsetof(rs_side, claim) == 88, "claim");
_Static_assert(sizeof(rs_claim) == 40, "rs_claim");
_Static_assert(offsetof(rs_header, identity) == 1024, "identity");
_Static_assert(offsetof(rs_header, bridge) == 1040, "bridge");
_Static_assert(sizeof(rs_header) == 1088, "rs_header");
_Static_assert(sizeof(rs_header) <= RS_HEADER_SIZE, "header page");

/* 1088: the identity of the file on which presences hold their OFD locks
 * (_liveness.h), when that file is not the segment itself: a System V
 * segment has no file, so its lock slots live on a companion file.  The
 * creator writes its device and inode here; an opener whose companion is
 * another file refuses the ring, so two processes never judge liveness on
 * different files.  Zero for a segment that is its own lock file. */
#define RS_LIVENESS_ID_OFFSET 1088u

typedef struct {
    uint64_t dev;
    uint64_t ino;
} rs_liveness_id;

_Static_assert(RS_LIVENESS_ID_OFFSET >= sizeof(rs_header), "liveness identity after the header");

/* 2048..4095: the slot table of lock-holder liveness (_liveness.h).  A
 * process holds an OFD lock on its slot's bytes while it is attached. */
#define RS_SLOT_TABLE_OFFSET 2048u
#define RS_SLOTS 256u

typedef struct {
    uint32_t generation;   /* bumped by each process that takes the slot; 0: never taken */
    int32_t pid;           /* the taker's pid in its own PID namespace: for people only */
} rs_slot;

_Static_assert(sizeof(rs_slot) == 8, "rs_slot");
_Static_assert(RS_SLOT_TABLE_OFFSET + RS_SLOTS * sizeof(rs_slot) == RS_HEADER_SIZE, "slot table");

typedef struct {
    uint32_t length;   /* payload bytes (DATA) or bytes to the end after this header (PADDING) */
    uint32_t kind;     /* RS_KIND_DATA or RS_KIND_PADDING */
} rs_record;

/* ---- Topics (publish/subscribe, topic.c; docs/FORMAT.md, "Topics") -------
 *
 * A topic is a segment of the same header with another magic (so that a
 * reader of rings refuses it rather than consume from it), a table of
 * subscribers after the header page, an index of recent records' positions
 * for `history`, and a data area of records that carry a sequence number.
 * Publishers write the producer side under the put lock, as for a ring;
 * the consumer side is the log's tail (the oldest record still held), also
 * written by publishers under the put lock, as they free room. */
#define RS_TOPIC_MAGIC "RSTOPIC\0"
#define RS_TOPIC_BLOCK_OFFSET 1280u
#define RS_TOPIC_SUBSCRIBERS 128u
#define RS_TOPIC_TABLE_OFFSET 4096u
#define RS_TOPIC_INDEX_OFFSET (RS_TOPIC_TABLE_OFFSET + RS_TOPIC_SUBSCRIBERS * 128u)
#define RS_TOPIC_RECORD_HEADER 16u
#define RS_TOPIC_ALIGN 16u

typedef struct {
    uint32_t history;       /* K: a new subscriber starts up to K messages back */
    uint32_t subscribers;   /* entries in the table: RS_TOPIC_SUBSCRIBERS */
    uint64_t limit;         /* publishers' bound: no live tethered subscriber is behind it */
    uint64_t scans;         /* times a publisher recomputed `limit` from the table */
    uint64_t stalls;        /* tethered subscribers untethered by their stall_timeout */
    uint64_t reaped;        /* entries of dead subscribers freed */
    uint64_t subscribed;    /* subscriptions made */
    uint64_t looked_ns;     /* CLOCK_MONOTONIC of the last look for dead or stalled subscribers */
    char _pad[128 - 56];
} rs_topic_block;

/* Subscriber entry flags. */
#define RS_SUB_ACTIVE 1u
#define RS_SUB_TETHERED 2u
#define RS_SUB_STALLED 4u   /* was tethered; untethered by its stall_timeout */

/* One subscriber, on a 128-byte block of its own: its owner and flags are
 * written under the put lock (subscribe, and a publisher that frees a dead
 * subscriber's entry or untethers a stalled one) and by the subscriber when
 * it closes; the rest by the subscriber only. */
typedef struct {
    uint64_t owner;       /* the subscribing process's lock token; 0: free */
    uint32_t flags;       /* RS_SUB_* */
    uint32_t stall_ms;    /* 0: never untethered */
    uint64_t position;    /* the next byte it reads */
    uint64_t seq;         /* the sequence number of the next message it expects */
    uint64_t messages;    /* messages received */
    uint64_t bytes;       /* payload bytes received */
    uint64_t missed;      /* messages it lost, overrun (the sum of its Lagged counts) */
    uint64_t lags;        /* times it was told it lagged */
    uint64_t waits;
    uint64_t timeouts;
    int64_t pid;          /* for people only: the subscriber's pid in its namespace */
    uint64_t since_ns;    /* CLOCK_REALTIME when it subscribed */
    /* Written by publishers under the put lock, for stall_timeout: the
     * position it had when a waiting publisher last saw it move, and when. */
    uint64_t watched_position;
    uint64_t watched_ns;
    char _pad[128 - 112];
} rs_sub_entry;

/* A topic record: the ring's header and a sequence number, 16-aligned.
 * PADDING's length is the bytes to the end after its 16-byte header. */
typedef struct {
    uint32_t length;
    uint32_t kind;
    uint64_t seq;
} rs_topic_record;

_Static_assert(sizeof(rs_topic_block) == 128, "rs_topic_block");
_Static_assert(RS_TOPIC_BLOCK_OFFSET >= RS_LIVENESS_ID_OFFSET + sizeof(rs_liveness_id),
               "topic block after the liveness identity");
_Static_assert(RS_TOPIC_BLOCK_OFFSET + sizeof(rs_topic_block) <= RS_SLOT_TABLE_OFFSET,
               "topic block before the slot table");
_Static_assert(sizeof(rs_sub_entry) == 128, "rs_sub_entry");
_Static_assert(sizeof(rs_topic_record) == RS_TOPIC_RECORD_HEADER, "rs_topic_record");

/* A topic's header size: the header page, the table, the index, rounded to
 * a page. */
static inline uint64_t rs__topic_header_size(uint32_t history) {
    return (RS_TOPIC_INDEX_OFFSET + 8ull * history + 4095u) & ~4095ull;
}

#endif
