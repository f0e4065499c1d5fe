/* shm_open.c: a ring in POSIX shared memory, found by name (shm_open(3)),
 * between unrelated processes.
 *
 *   shm_open consume NAME COUNT    creates the ring, prints "ready", checks
 *                                  COUNT messages, removes the name
 *   shm_open produce NAME COUNT    opens it, puts COUNT messages, shuts it down
 *
 * NAME is a ring name without '/': the segment is /dev/shm/ringshm.NAME,
 * the very ring Python's Ring.create("NAME") / Ring.open("NAME") use (and
 * `ringshm ls` lists), so either side may be Python:
 *     python3 peer.py consume --name NAME --count COUNT
 * As in unrelated_file.c the consumer creates and the producer waits up to
 * 10 s for the name.
 *
 * This one moves messages in batches: rs_put_many publishes up to BATCH
 * messages at once, all or nothing and contiguous; rs_get_many waits for
 * one message, then takes every message that is ready and fits.
 */
#include "example.h"

#include <sys/uio.h>

#define BATCH 16

static int produce(const char *name, uint64_t count) {
    char bufs[BATCH][EX_MAX_MESSAGE];
    struct iovec batch[BATCH];
    rs_ring *r;
    uint64_t i = 0;
    size_t n;
    int rc, tries = 0;

    while ((rc = rs_open_name(name, NULL, &r)) == RS_NOT_FOUND && tries++ < 1000)
        ex_sleep_ms(10);
    if (rc != 0)
        fail("rs_open_name", rc);

    while (i < count) {
        for (n = 0; n < BATCH && i < count; n++, i++) {
            batch[n].iov_base = bufs[n];
            batch[n].iov_len = ex_message(0, i, bufs[n]);
        }
        /* Waits until the whole batch fits; a batch larger than
         * rs_max_message_size() is RS_TOO_LARGE at once. */
        if ((rc = rs_put_many(r, batch, n, EX_TIMEOUT_NS)) != 0)
            fail("rs_put_many", rc);
    }
    if ((rc = rs_shutdown(r, 0)) != 0)
        fail("rs_shutdown", rc);
    if ((rc = rs_close(r)) != 0)
        fail("rs_close", rc);
    printf("shm_open: produced %" PRIu64 " messages\n", count);
    return 0;
}

static int consume(const char *name, uint64_t count) {
    static char out[EX_CAPACITY];   /* room for everything the ring can hold */
    size_t lengths[256];
    ex_checker checker;
    rs_ring *r;
    int rc, k;

    if ((rc = rs_create_name(name, EX_CAPACITY, NULL, &r)) != 0)
        fail("rs_create_name", rc);
    printf("ready\n");
    fflush(stdout);

    ex_checker_init(&checker, 1);
    for (;;) {
        /* rc messages, one after another in out, their lengths in lengths[]. */
        rc = rs_get_many(r, out, sizeof(out), lengths, 256, EX_TIMEOUT_NS);
        if (rc == RS_SHUTDOWN)
            break;
        if (rc < 0)
            fail("rs_get_many", rc);
        const char *p = out;
        for (k = 0; k < rc; k++) {
            ex_check(&checker, p, lengths[k]);
            p += lengths[k];
        }
    }
    if ((rc = rs_close(r)) != 0)   /* the creator: also removes the name */
        fail("rs_close", rc);
    if (checker.total != count) {
        fprintf(stderr, "received %" PRIu64 " messages, expected %" PRIu64 "\n", checker.total,
                count);
        return 1;
    }
    printf("shm_open: consumed %" PRIu64 " messages, in order\n", count);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4 || (strcmp(argv[1], "produce") != 0 && strcmp(argv[1], "consume") != 0)) {
        fprintf(stderr, "usage: %s produce|consume NAME COUNT\n", argv[0]);
        return 2;
    }
    if (strcmp(argv[1], "produce") == 0)
        return produce(argv[2], ex_count(argv[3]));
    return consume(argv[2], ex_count(argv[3]));
}
