/* The fuzz bodies, shared by the libFuzzer targets (fuzz_validate.c,
 * fuzz_records.c, fuzz_topic.c) and the seeded-random driver without libFuzzer
 * (fuzz_random.c).  A body never fails by returning: a wrong status or a
 * hang aborts, a read or write outside the mapping faults on a guard page
 * (ASan does not watch mmap'd memory, so every segment is mapped between
 * two PROT_NONE pages). */
#ifndef RINGSHM_FUZZ_BODIES_H
#define RINGSHM_FUZZ_BODIES_H

#include <stddef.h>
#include <stdint.h>

/* Random bytes as a whole segment: rs__validate; when valid, a handle over
 * it and every call that reads records, with timeout 0. */
void fuzz_validate_one(const uint8_t *data, size_t size);

/* A valid ring (capacity 4096) whose positions, counters, lock words and
 * data area come from the input (bodies.c says the layout), then gets,
 * views, puts with timeout 0. */
void fuzz_records_one(const uint8_t *data, size_t size);

/* A valid topic (capacity 4096, history 0-8) whose positions, counters,
 * limit, look time, lock word, history index, first subscriber entries and
 * data area come from the input, and optionally its identity words
 * (validated then); subscribes, gets, views, publishes with timeout 0
 * (bodies.c says the layout). */
void fuzz_topic_one(const uint8_t *data, size_t size);

/* Seed number `which` (0, 1, ...) of a target ("validate", "records" or
 * "topic"): real rings (topics) in several states.  Returns its size (0: no such seed). */
size_t fuzz_seed(const char *target, int which, uint8_t *out, size_t cap);

#define FUZZ_SEED_MAX (4096 + 65536)

/* Inputs that got as far as a handle, and calls that returned a record. */
extern unsigned long fuzz_handles, fuzz_records_read, fuzz_topic_messages;

#endif
