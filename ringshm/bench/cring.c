/*
 * The C reference ring: the machine's limit for the ringshm benchmarks.
 *
 * A lock-free single-producer single-consumer byte ring in shared memory
 * (MAP_SHARED | MAP_ANONYMOUS, shared with a forked child), with the record
 * format ringshm uses (8-byte header, payload padded to 8, a PADDING record
 * at the wrap), so the only differences left are Python and the locks.
 * Both sides busy-wait (pause, then sched_yield after a while so a busy
 * machine is not starved); no system call on the hot path.
 *
 *   cring throughput SIZE CAPACITY SECONDS   producer = parent, consumer = child
 *   cring batch SIZE CAPACITY SECONDS BATCH  the same, batched: BATCH records, then one
 *                                            store of the head; the consumer takes all
 *                                            it sees (<= 1024), then one store of the tail
 *   cring pingpong SIZE COUNT WARMUP         64-byte round trips over two rings
 *
 * Prints one JSON object on stdout.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LINE 128 /* two cache lines: keeps the adjacent-line prefetcher out */
#define REC_DATA 1u
#define REC_PAD 2u
#define REC_END 3u

typedef struct {
    _Alignas(LINE) uint64_t head;     /* written by the producer only */
    _Alignas(LINE) uint64_t tail;     /* written by the consumer only */
    _Alignas(LINE) uint64_t capacity; /* read-only after setup */
    unsigned char *data;              /* same address in both: mapped before fork */
} ring_t;

typedef struct {
    _Alignas(LINE) uint32_t ready; /* child -> parent: attached */
    _Alignas(LINE) uint32_t go;    /* parent -> child: start the clock */
    _Alignas(LINE) uint64_t received, received_bytes;
    double seconds;
} control_t;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Spin politely: pause first, yield the core once it looks like the peer
 * is not running (a shared 2-core machine would otherwise stall for a tick). */
static inline void backoff(unsigned *spins) {
    if (++*spins < 4096)
        cpu_relax();
    else
        sched_yield();
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t align8(uint64_t n) { return (n + 7) & ~(uint64_t)7; }

static void *shared_alloc(size_t size) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    memset(p, 0, size); /* fault every page in now, not inside the timed loop */
    return p;
}

static ring_t *ring_new(uint64_t capacity) {
    ring_t *r = shared_alloc(sizeof(ring_t));
    r->capacity = capacity;
    r->data = shared_alloc(capacity);
    return r;
}

/* Producer side. cached_tail is the producer's private copy of tail: the
 * shared line is read only when the copy says the ring is full. */
static void ring_put(ring_t *r, uint64_t *head, uint64_t *cached_tail, const void *msg,
                     uint32_t len, uint32_t type) {
    const uint64_t cap = r->capacity, mask = cap - 1;
    uint64_t pos = *head & mask, need = 8 + align8(len);
    uint64_t pad = pos + need > cap ? cap - pos : 0;
    unsigned spins = 0;
    while (*head + pad + need - *cached_tail > cap) {
        *cached_tail = __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE);
        if (*head + pad + need - *cached_tail > cap) backoff(&spins);
    }
    if (pad) {
        uint32_t hdr[2] = {(uint32_t)(pad - 8), REC_PAD};
        memcpy(r->data + pos, hdr, 8);
        *head += pad;
        pos = 0;
    }
    uint32_t hdr[2] = {len, type};
    memcpy(r->data + pos, hdr, 8);
    memcpy(r->data + pos + 8, msg, len);
    *head += need;
    __atomic_store_n(&r->head, *head, __ATOMIC_RELEASE);
}

/* Consumer side: copies the next record into buf, returns its type. */
static uint32_t ring_get(ring_t *r, uint64_t *tail, uint64_t *cached_head, void *buf,
                         uint32_t *len) {
    const uint64_t cap = r->capacity, mask = cap - 1;
    for (;;) {
        unsigned spins = 0;
        while (*tail == *cached_head) {
            *cached_head = __atomic_load_n(&r->head, __ATOMIC_ACQUIRE);
            if (*tail == *cached_head) backoff(&spins);
        }
        uint64_t pos = *tail & mask;
        uint32_t hdr[2];
        memcpy(hdr, r->data + pos, 8);
        if (hdr[1] == REC_PAD) {
            *tail += cap - pos;
            continue;
        }
        memcpy(buf, r->data + pos + 8, hdr[0]);
        *len = hdr[0];
        *tail += 8 + align8(hdr[0]);
        __atomic_store_n(&r->tail, *tail, __ATOMIC_RELEASE);
        return hdr[1];
    }
}

/* The batched producer: room for `count` records (and a padding), all of
 * them written, then the head published once.  A batch and a record more
 * are at most half the ring (main checks). */
static void ring_put_batch(ring_t *r, uint64_t *head, uint64_t *cached_tail, const void *msg,
                           uint32_t len, uint64_t count) {
    const uint64_t cap = r->capacity, mask = cap - 1, need = 8 + align8(len);
    const uint64_t room = count * need + need;   /* a padding is shorter than a record */
    uint64_t pos, i;
    unsigned spins = 0;
    while (*head + room - *cached_tail > cap) {
        *cached_tail = __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE);
        if (*head + room - *cached_tail > cap) backoff(&spins);
    }
    for (i = 0; i < count; i++) {
        pos = *head & mask;
        if (pos + need > cap) {
            uint32_t pad[2] = {(uint32_t)(cap - pos - 8), REC_PAD};
            memcpy(r->data + pos, pad, 8);
            *head += cap - pos;
            pos = 0;
        }
        uint32_t hdr[2] = {len, REC_DATA};
        memcpy(r->data + pos, hdr, 8);
        memcpy(r->data + pos + 8, msg, len);
        *head += need;
    }
    __atomic_store_n(&r->head, *head, __ATOMIC_RELEASE);
}

/* The batched consumer: the records published (at most `limit`, at most
 * `buf_cap` bytes but one at least) copied into buf one after another, then
 * the tail published once.  Adds the count to *n and the bytes to *nbytes;
 * returns 1 once the END record is taken. */
static int ring_get_batch(ring_t *r, uint64_t *tail, uint64_t *cached_head, unsigned char *buf,
                          uint64_t buf_cap, uint64_t limit, uint64_t *n, uint64_t *nbytes) {
    const uint64_t cap = r->capacity, mask = cap - 1;
    uint64_t taken = 0, used = 0;
    unsigned spins = 0;
    int end = 0;
    while (*tail == *cached_head) {
        *cached_head = __atomic_load_n(&r->head, __ATOMIC_ACQUIRE);
        if (*tail == *cached_head) backoff(&spins);
    }
    while (*tail != *cached_head && taken < limit) {
        uint64_t pos = *tail & mask;
        uint32_t hdr[2];
        memcpy(hdr, r->data + pos, 8);
        if (hdr[1] == REC_PAD) {
            *tail += cap - pos;
            continue;
        }
        if (hdr[1] == REC_END) {
            *tail += 8;
            end = 1;
            break;
        }
        if (taken > 0 && used + hdr[0] > buf_cap)
            break;
        memcpy(buf + used, r->data + pos + 8, hdr[0]);
        used += hdr[0];
        *tail += 8 + align8(hdr[0]);
        taken++;
    }
    __atomic_store_n(&r->tail, *tail, __ATOMIC_RELEASE);
    *n += taken;
    *nbytes += used;
    return end;
}

static void wait_flag(uint32_t *flag) {
    unsigned spins = 0;
    while (!__atomic_load_n(flag, __ATOMIC_ACQUIRE)) backoff(&spins);
}

static int throughput(uint32_t size, uint64_t capacity, double seconds, uint64_t batch) {
    ring_t *r = ring_new(capacity);
    control_t *c = shared_alloc(sizeof(control_t));
    unsigned char *msg = malloc(size ? size : 1);
    memset(msg, 'x', size); /* real pages, like Python's b"x" * size */
    /* Check the clock about every 4 MiB of traffic: often enough to stop on
     * time, rarely enough to cost nothing. */
    uint64_t check_every = size >= (4u << 20) ? 1 : (4u << 20) / (size ? size : 1);
    if (check_every > 1024) check_every = 1024;

    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 2;
    }
    if (pid == 0) {
        uint64_t buf_cap = batch > 1 && size < (256u << 10) ? 256u << 10 : (size ? size : 1);
        unsigned char *buf = malloc(buf_cap);
        uint64_t tail = 0, cached_head = 0, n = 0, nbytes = 0;
        uint32_t len;
        __atomic_store_n(&c->ready, 1, __ATOMIC_RELEASE);
        wait_flag(&c->go);
        double t0 = now();
        if (batch > 1) {
            while (!ring_get_batch(r, &tail, &cached_head, buf, buf_cap, 1024, &n, &nbytes)) {
            }
        } else {
            while (ring_get(r, &tail, &cached_head, buf, &len) == REC_DATA) {
                n++;
                nbytes += len;
            }
        }
        c->seconds = now() - t0;
        c->received = n;
        c->received_bytes = nbytes;
        _exit(0);
    }
    wait_flag(&c->ready);
    uint64_t head = 0, cached_tail = 0, sent = 0;
    double t0 = now(), stop_at = t0 + seconds;
    __atomic_store_n(&c->go, 1, __ATOMIC_RELEASE);
    if (batch > 1) {
        check_every = check_every / batch ? check_every / batch : 1;
        do {
            for (uint64_t i = 0; i < check_every; i++)
                ring_put_batch(r, &head, &cached_tail, msg, size, batch);
            sent += check_every * batch;
        } while (now() < stop_at);
    } else {
        do {
            for (uint64_t i = 0; i < check_every; i++)
                ring_put(r, &head, &cached_tail, msg, size, REC_DATA);
            sent += check_every;
        } while (now() < stop_at);
    }
    ring_put(r, &head, &cached_tail, msg, 0, REC_END);
    int status;
    waitpid(pid, &status, 0);
    printf("{\"sent\": %llu, \"received\": %llu, \"received_bytes\": %llu, \"seconds\": %.9f}\n",
           (unsigned long long)sent, (unsigned long long)c->received,
           (unsigned long long)c->received_bytes, c->seconds);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int pingpong(uint32_t size, uint64_t count, uint64_t warmup) {
    ring_t *ping = ring_new(1 << 16), *pong = ring_new(1 << 16);
    unsigned char *msg = malloc(size ? size : 1), *buf = malloc(size ? size : 1);
    memset(msg, 'x', size);
    uint32_t len;
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 2;
    }
    if (pid == 0) {
        uint64_t tail = 0, cached_head = 0, head = 0, cached_tail = 0;
        while (ring_get(ping, &tail, &cached_head, buf, &len) == REC_DATA)
            ring_put(pong, &head, &cached_tail, buf, len, REC_DATA);
        _exit(0);
    }
    double *rtt = malloc(sizeof(double) * (count ? count : 1));
    uint64_t head = 0, cached_tail = 0, tail = 0, cached_head = 0, received = 0;
    for (uint64_t i = 0; i < warmup + count; i++) {
        double t0 = now();
        ring_put(ping, &head, &cached_tail, msg, size, REC_DATA);
        if (ring_get(pong, &tail, &cached_head, buf, &len) == REC_DATA && len == size && i >= warmup)
            received++;
        if (i >= warmup) rtt[i - warmup] = now() - t0;
    }
    ring_put(ping, &head, &cached_tail, msg, 0, REC_END);
    int status;
    waitpid(pid, &status, 0);
    qsort(rtt, count, sizeof(double), cmp_double);
    double sum = 0;
    for (uint64_t i = 0; i < count; i++) sum += rtt[i];
    printf("{\"count\": %llu, \"received\": %llu, \"p50_us\": %.4f, \"p99_us\": %.4f, "
           "\"min_us\": %.4f, \"mean_us\": %.4f}\n",
           (unsigned long long)count, (unsigned long long)received,
           rtt[count / 2] * 1e6, rtt[(count * 99) / 100] * 1e6, rtt[0] * 1e6, sum / count * 1e6);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "throughput") == 0) {
        uint64_t capacity = strtoull(argv[3], NULL, 10);
        if (capacity < 4096 || (capacity & (capacity - 1))) {
            fprintf(stderr, "capacity must be a power of two >= 4096\n");
            return 2;
        }
        return throughput((uint32_t)strtoul(argv[2], NULL, 10), capacity, atof(argv[4]), 1);
    }
    if (argc == 6 && strcmp(argv[1], "batch") == 0) {
        uint64_t capacity = strtoull(argv[3], NULL, 10), batch = strtoull(argv[5], NULL, 10);
        uint32_t size = (uint32_t)strtoul(argv[2], NULL, 10);
        if (capacity < 4096 || (capacity & (capacity - 1)) || batch == 0
                || 2 * (batch + 1) * (8 + align8(size)) > capacity) {
            fprintf(stderr, "capacity must be a power of two >= 4096, a batch (and a "
                            "record more) at most half of it\n");
            return 2;
        }
        return throughput(size, capacity, atof(argv[4]), batch);
    }
    if (argc == 5 && strcmp(argv[1], "pingpong") == 0) {
        uint64_t count = strtoull(argv[3], NULL, 10);
        if (count == 0) {
            fprintf(stderr, "count must be > 0\n");
            return 2;
        }
        return pingpong((uint32_t)strtoul(argv[2], NULL, 10), count, strtoull(argv[4], NULL, 10));
    }
    fprintf(stderr, "usage: cring throughput SIZE CAPACITY SECONDS | batch SIZE CAPACITY SECONDS "
                    "BATCH | pingpong SIZE COUNT WARMUP\n");
    return 2;
}
