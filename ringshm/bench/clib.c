/*
 * The C API of libringshm in the benchmarks: the library from C, without
 * Python, beside the C reference ring (cring.c) that shows the machine's
 * limit.  Linked with the library this package ships (ringshm.get_include(),
 * ringshm.get_library_dir()).
 *
 *   clib throughput SIZE CAPACITY SECONDS        rs_put / rs_get, C -> C
 *   clib batch SIZE CAPACITY SECONDS BATCH       rs_put_many of BATCH / rs_get_many (<= 1024)
 *   clib pingpong SIZE COUNT WARMUP              64-byte round trips over two rings
 *   clib produce NAME SIZE SECONDS               rs_put into the named ring, then rs_shutdown
 *   clib consume NAME                            rs_get from the named ring until it is shut down
 *
 * The first three make an anonymous ring (rs_anonymous) and fork the
 * consumer, as cring does; the last two are one side of a C <-> Python pair
 * (ringshm.bench.clib): the Python side made the ring.  Blocking calls with
 * the library's default waits (spin, then sleep): what a user gets.
 *
 * Prints one JSON object on stdout; exits 1 when a message was lost.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ringshm.h"

#define GET_MANY_LIMIT 1024

typedef struct {
    uint64_t received, received_bytes;
    double seconds;
} report_t;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what, int rc) {
    fprintf(stderr, "clib: %s: %s (%s)\n", what, rs_strerror(rc), rs_detail());
    exit(2);
}

static void *shared_alloc(size_t size) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    memset(p, 0, size);
    return p;
}

/* Messages between two reads of the clock: about 4 MiB of traffic. */
static uint64_t check_every(uint32_t size) {
    uint64_t every = size >= (4u << 20) ? 1 : (4u << 20) / (size ? size : 1);
    return every > 1024 ? 1024 : every;
}

/* The consumer's loop: rs_get until the ring is shut down and drained; the
 * clock runs from the first message to the end of the drain (the first
 * message's own wait is left out: at least 10^4 messages a run). */
static void consume(rs_ring *r, uint32_t size, report_t *out) {
    size_t cap = size ? size : 1, len;
    unsigned char *buf = malloc(cap);
    uint64_t n = 0, nbytes = 0;
    double t0 = 0;
    int rc;
    while ((rc = rs_get(r, buf, cap, &len, RS_FOREVER)) == 0) {
        if (n++ == 0)
            t0 = now();   /* from the first message: the producer may start later */
        nbytes += len;
    }
    if (rc != RS_SHUTDOWN)
        die("rs_get", rc);
    out->seconds = now() - t0;
    out->received = n;
    out->received_bytes = nbytes;
    free(buf);
}

static void consume_many(rs_ring *r, report_t *out) {
    size_t cap = 256u << 10, lengths[GET_MANY_LIMIT];
    uint64_t n = 0, nbytes = 0;
    unsigned char *buf;
    double t0;
    int rc, i;
    if (cap < rs_max_message_size(r))
        cap = rs_max_message_size(r);
    buf = malloc(cap);
    t0 = 0;
    while ((rc = rs_get_many(r, buf, cap, lengths, GET_MANY_LIMIT, RS_FOREVER)) > 0) {
        if (n == 0)
            t0 = now();
        n += (uint64_t)rc;
        for (i = 0; i < rc; i++)
            nbytes += lengths[i];
    }
    if (rc != RS_SHUTDOWN)
        die("rs_get_many", rc);
    out->seconds = now() - t0;
    out->received = n;
    out->received_bytes = nbytes;
    free(buf);
}

/* The producer's loop for `seconds`: rs_put, or rs_put_many of `batch`. */
static uint64_t produce(rs_ring *r, uint32_t size, double seconds, uint64_t batch) {
    unsigned char *msg = malloc(size ? size : 1);
    struct iovec *iov = NULL;
    uint64_t sent = 0, i, every = check_every(size);
    double stop_at = now() + seconds;
    int rc;
    memset(msg, 'x', size);   /* real pages, like Python's b"x" * size */
    if (batch > 1) {
        iov = malloc(sizeof(*iov) * batch);
        for (i = 0; i < batch; i++) {
            iov[i].iov_base = msg;
            iov[i].iov_len = size;
        }
        every = every / batch ? every / batch : 1;
    }
    do {
        for (i = 0; i < every; i++) {
            rc = iov ? rs_put_many(r, iov, batch, RS_FOREVER) : rs_put(r, msg, size, RS_FOREVER);
            if (rc != 0)
                die(iov ? "rs_put_many" : "rs_put", rc);
        }
        sent += every * (iov ? batch : 1);
    } while (now() < stop_at);
    free(iov);
    free(msg);
    return sent;
}

static int print_throughput(uint64_t sent, const report_t *c) {
    printf("{\"sent\": %llu, \"received\": %llu, \"received_bytes\": %llu, \"seconds\": %.9f}\n",
           (unsigned long long)sent, (unsigned long long)c->received,
           (unsigned long long)c->received_bytes, c->seconds);
    return sent == c->received ? 0 : 1;
}

static int throughput(uint32_t size, uint64_t capacity, double seconds, uint64_t batch) {
    rs_ring *r;
    report_t *c = shared_alloc(sizeof(report_t));
    uint64_t sent;
    pid_t pid;
    int rc = rs_anonymous(capacity, NULL, &r), status;
    if (rc != 0)
        die("rs_anonymous", rc);
    pid = fork();
    if (pid < 0) {
        perror("fork");
        return 2;
    }
    if (pid == 0) {
        if (batch > 1)
            consume_many(r, c);
        else
            consume(r, size, c);
        _exit(0);
    }
    sent = produce(r, size, seconds, batch);
    rs_shutdown(r, 0);
    waitpid(pid, &status, 0);
    rs_close(r);
    rc = print_throughput(sent, c);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? rc : 1;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int pingpong(uint32_t size, uint64_t count, uint64_t warmup) {
    rs_ring *ping, *pong;
    size_t cap = size ? size : 1, len;
    unsigned char *msg = malloc(cap), *buf = malloc(cap);
    double *rtt = malloc(sizeof(double) * count), sum = 0, t0;
    uint64_t i, received = 0;
    pid_t pid;
    int rc, status;
    if ((rc = rs_anonymous(1 << 16, NULL, &ping)) != 0 || (rc = rs_anonymous(1 << 16, NULL, &pong)) != 0)
        die("rs_anonymous", rc);
    memset(msg, 'x', size);
    pid = fork();
    if (pid < 0) {
        perror("fork");
        return 2;
    }
    if (pid == 0) {
        while (rs_get(ping, buf, cap, &len, RS_FOREVER) == 0)
            if (rs_put(pong, buf, len, RS_FOREVER) != 0)
                _exit(1);
        _exit(0);
    }
    for (i = 0; i < warmup + count; i++) {
        t0 = now();
        if ((rc = rs_put(ping, msg, size, RS_FOREVER)) != 0)
            die("rs_put", rc);
        if ((rc = rs_get(pong, buf, cap, &len, RS_FOREVER)) != 0)
            die("rs_get", rc);
        if (i >= warmup) {
            rtt[i - warmup] = now() - t0;
            received += len == size;
        }
    }
    rs_shutdown(ping, 0);
    waitpid(pid, &status, 0);
    rs_close(ping);
    rs_close(pong);
    qsort(rtt, count, sizeof(double), cmp_double);
    for (i = 0; i < count; i++)
        sum += rtt[i];
    printf("{\"count\": %llu, \"received\": %llu, \"p50_us\": %.4f, \"p99_us\": %.4f, "
           "\"min_us\": %.4f, \"mean_us\": %.4f}\n",
           (unsigned long long)count, (unsigned long long)received, rtt[count / 2] * 1e6,
           rtt[(count * 99) / 100] * 1e6, rtt[0] * 1e6, sum / count * 1e6);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 && received == count ? 0 : 1;
}

static rs_ring *open_named(const char *name) {
    rs_ring *r;
    int rc = rs_open_name(name, NULL, &r);
    if (rc != 0)
        die("rs_open_name", rc);
    return r;
}

int main(int argc, char **argv) {
    if ((argc == 5 || argc == 6) && (strcmp(argv[1], "throughput") == 0
                                     || strcmp(argv[1], "batch") == 0)) {
        int batched = strcmp(argv[1], "batch") == 0;
        uint64_t batch = batched && argc == 6 ? strtoull(argv[5], NULL, 10) : 1;
        if (batched != (argc == 6) || batch == 0) {
            fprintf(stderr, "clib batch needs BATCH > 0\n");
            return 2;
        }
        return throughput((uint32_t)strtoul(argv[2], NULL, 10), strtoull(argv[3], NULL, 10),
                          atof(argv[4]), batched ? batch : 1);
    }
    if (argc == 5 && strcmp(argv[1], "pingpong") == 0) {
        uint64_t count = strtoull(argv[3], NULL, 10);
        if (count == 0) {
            fprintf(stderr, "count must be > 0\n");
            return 2;
        }
        return pingpong((uint32_t)strtoul(argv[2], NULL, 10), count, strtoull(argv[4], NULL, 10));
    }
    if (argc == 5 && strcmp(argv[1], "produce") == 0) {
        rs_ring *r = open_named(argv[2]);
        uint64_t sent = produce(r, (uint32_t)strtoul(argv[3], NULL, 10), atof(argv[4]), 1);
        rs_shutdown(r, 0);
        rs_close(r);
        printf("{\"sent\": %llu}\n", (unsigned long long)sent);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "consume") == 0) {
        rs_ring *r = open_named(argv[2]);
        report_t c;
        consume(r, (uint32_t)rs_max_message_size(r), &c);
        rs_close(r);
        printf("{\"received\": %llu, \"received_bytes\": %llu, \"seconds\": %.9f}\n",
               (unsigned long long)c.received, (unsigned long long)c.received_bytes, c.seconds);
        return 0;
    }
    fprintf(stderr, "usage: clib throughput SIZE CAPACITY SECONDS | batch SIZE CAPACITY SECONDS "
                    "BATCH | pingpong SIZE COUNT WARMUP | produce NAME SIZE SECONDS | "
                    "consume NAME\n");
    return 2;
}
