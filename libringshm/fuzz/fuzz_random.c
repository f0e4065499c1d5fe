/* The fuzz bodies without libFuzzer: inputs made from the seeds (real rings
 * in several states) by random mutations from a fixed seed, so that a
 * failure is reproduced by running again with the same --seed.
 *
 *   fuzz_random --iterations N --seed S     run N inputs per body
 *   fuzz_random --seeds DIR --target T      write T's seeds (libFuzzer's corpus)
 *
 * Built with any C compiler (make fuzz-random: gcc, ASan, UBSan).  A hang
 * is caught by alarm(): the process dies of SIGALRM. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bodies.h"

#define SEEDS 8      /* at most, per body */
#define BODIES 3
static const char *const body_names[BODIES] = {"validate", "records", "topic"};
/* The part of each body's input that is header, not data: mutated most. */
static const size_t body_hot[BODIES] = {1088, 48, 704};

static uint64_t rng_state;

static uint64_t next_random(void) {   /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

static uint64_t below(uint64_t n) {
    return n ? next_random() % n : 0;
}

static const uint64_t interesting[] = {
    0, 1, 7, 8, 16, 0xFFFFFFFFFFFFFFFFull, 0xFFFFFFFFFFFFFFF8ull, 2040, 2048, 4080, 4088,
    4095, 4096, 4104, 8192, 0xFFFFFFF0ull, 0xFFFFFFFFull, 1ull << 40, 1ull << 63,
    0x41544144ull /* DATA */, 0x44444150ull /* PADD */, 0x4441544100000010ull,
};

/* A few random changes, in place; returns the new size. */
static size_t mutate(uint8_t *b, size_t size, size_t cap, size_t hot) {
    int k, changes = 1 + (int)below(8);
    uint64_t v;
    size_t at, n;
    for (k = 0; k < changes; k++) {
        switch (below(6)) {
        case 0:   /* a byte */
            if (size)
                b[below(size)] = (uint8_t)next_random();
            break;
        case 1:   /* an interesting word at an aligned place, mostly the hot part */
            v = interesting[below(sizeof(interesting) / sizeof(interesting[0]))];
            if (below(4) == 0)
                v += below(64) - 32;
            n = below(3) ? (hot < size ? hot : size) : size;
            if (n >= 8) {
                at = below(n / 8) * 8;
                memcpy(b + at, &v, 8);
            }
            break;
        case 2:   /* a bit */
            if (size)
                b[below(size)] ^= (uint8_t)(1u << below(8));
            break;
        case 3:   /* a record header in the data area */
            if (size > hot + 8) {
                at = hot + below((size - hot) / 8) * 8;
                v = below(2) ? 0x41544144ull : 0x44444150ull;
                v = v << 32 | (below(2) ? below(64) : below(5000));
                memcpy(b + at, &v, 8);
            }
            break;
        case 4:   /* another size */
            n = below(3) == 0 ? below(cap) : size + below(64) - 32;
            if (n > cap)
                n = cap;
            if (n > size)
                memset(b + size, (int)below(256), n - size);
            size = n;
            break;
        default:  /* a run of random bytes */
            if (size) {
                at = below(size);
                n = below(64);
                while (n-- && at < size)
                    b[at++] = (uint8_t)next_random();
            }
            break;
        }
    }
    return size;
}

static void write_seeds(const char *dir, const char *target) {
    static uint8_t buf[FUZZ_SEED_MAX];
    char path[4096];
    size_t size;
    FILE *f;
    int which;
    for (which = 0; (size = fuzz_seed(target, which, buf, sizeof(buf))) != 0; which++) {
        snprintf(path, sizeof(path), "%s/seed-%d", dir, which);
        f = fopen(path, "wb");
        if (f == NULL || fwrite(buf, 1, size, f) != size || fclose(f) != 0) {
            perror(path);
            exit(1);
        }
    }
}

int main(int argc, char **argv) {
    static uint8_t seeds[BODIES][SEEDS][FUZZ_SEED_MAX], input[FUZZ_SEED_MAX];
    static size_t seed_sizes[BODIES][SEEDS];
    int seed_count[BODIES];
    const char *seeds_dir = NULL, *target = NULL;
    long iterations = 10000, i;
    uint64_t seed = 1;
    size_t size, cap = 8192 + 64;
    int a, t, s;
    struct timespec t0, t1;

    for (a = 1; a + 1 < argc; a += 2) {
        if (strcmp(argv[a], "--iterations") == 0)
            iterations = atol(argv[a + 1]);
        else if (strcmp(argv[a], "--seed") == 0)
            seed = strtoull(argv[a + 1], NULL, 0);
        else if (strcmp(argv[a], "--seeds") == 0)
            seeds_dir = argv[a + 1];
        else if (strcmp(argv[a], "--target") == 0)
            target = argv[a + 1];
        else
            break;
    }
    if (a != argc) {
        fprintf(stderr, "usage: %s [--iterations N] [--seed S] | --seeds DIR --target T\n",
                argv[0]);
        return 2;
    }
    if (seeds_dir != NULL) {
        write_seeds(seeds_dir, target != NULL ? target : "validate");
        return 0;
    }

    for (t = 0; t < BODIES; t++) {
        for (s = 0; s < SEEDS; s++) {
            seed_sizes[t][s] = fuzz_seed(body_names[t], s, seeds[t][s], FUZZ_SEED_MAX);
            if (seed_sizes[t][s] == 0)
                break;
        }
        seed_count[t] = s;
        if (s == 0) {
            fprintf(stderr, "fuzz_random: no seed for %s\n", body_names[t]);
            return 1;
        }
    }
    rng_state = seed * 0x9E3779B97F4A7C15ull + 1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (i = 0; i < iterations; i++) {
        for (t = 0; t < BODIES; t++) {
            s = (int)below((uint64_t)seed_count[t]);
            if (t == 0 && below(16) == 0) {
                /* Bytes from nowhere, now and then. */
                size = (size_t)below(cap);
                for (a = 0; a < (int)size; a++)
                    input[a] = (uint8_t)next_random();
            } else {
                size = seed_sizes[t][s];
                memcpy(input, seeds[t][s], size);
                size = mutate(input, size, cap, body_hot[t]);
            }
            alarm(30);
            if (t == 0)
                fuzz_validate_one(input, size);
            else if (t == 1)
                fuzz_records_one(input, size);
            else
                fuzz_topic_one(input, size);
        }
    }
    alarm(0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("fuzz_random: %ld inputs per body (validate, records, topic), seed %llu: %lu "
           "handles, %lu views of a record, %lu topic messages read; ok in %.1f s\n",
           iterations, (unsigned long long)seed, fuzz_handles, fuzz_records_read,
           fuzz_topic_messages,
           (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    return 0;
}
