/* unrelated_file.c: a ring in a mapped file, shared by two processes that
 * are not related: each maps the same file by its path.
 *
 *   unrelated_file consume PATH COUNT    creates the ring, prints "ready",
 *                                        checks COUNT messages, removes PATH
 *   unrelated_file produce PATH COUNT    opens it, puts COUNT messages, shuts it down
 *
 * Start them in either order, from two shells, or one of them as the Python
 * peer (python3 peer.py produce --path PATH --count COUNT).  The consumer
 * creates the ring because it is the side that stays to the end: the name
 * of a ring made without `persist` goes when its creator closes it, and a
 * producer that created, filled and closed it could be gone, with the name,
 * before the consumer came.  The producer waits up to 10 s for the file.
 *
 * The messages go through the ring without a copy of their own:
 * rs_reserve/rs_commit write straight into the ring, rs_view/rs_release read
 * straight out of it.  A span holds the ring's put (or get) lock until it
 * ends: keep it short, never wait inside one.
 */
#include "example.h"

static int produce(const char *path, uint64_t count) {
    char buf[EX_MAX_MESSAGE];
    rs_ring *r;
    rs_span span;
    uint64_t i;
    int rc, tries = 0;

    /* rs_open_path validates the file (a regular file of this user, never a
     * symbolic link, a ring of this layout) before using a byte of it. */
    while ((rc = rs_open_path(path, NULL, &r)) == RS_NOT_FOUND && tries++ < 1000)
        ex_sleep_ms(10);
    if (rc != 0)
        fail("rs_open_path", rc);

    for (i = 0; i < count; i++) {
        size_t len = ex_message(0, i, buf);
        /* Room for one message of len bytes, in the ring itself. */
        if ((rc = rs_reserve(r, len, &span, EX_TIMEOUT_NS)) != 0)
            fail("rs_reserve", rc);
        memcpy(span.data, buf, len);   /* a real producer would build it in place */
        if ((rc = rs_commit(r, &span)) != 0)   /* published: a consumer sees it */
            fail("rs_commit", rc);
    }
    if ((rc = rs_shutdown(r, 0)) != 0)
        fail("rs_shutdown", rc);
    if ((rc = rs_close(r)) != 0)
        fail("rs_close", rc);
    printf("unrelated_file: produced %" PRIu64 " messages\n", count);
    return 0;
}

static int consume(const char *path, uint64_t count) {
    ex_checker checker;
    rs_ring *r;
    rs_span span;
    int rc;

    if ((rc = rs_create_path(path, EX_CAPACITY, NULL, &r)) != 0)
        fail("rs_create_path", rc);
    printf("ready\n");   /* a test waits for this line before it starts a producer */
    fflush(stdout);

    ex_checker_init(&checker, 1);
    for (;;) {
        /* The oldest message, in place: span.data, span.len. */
        rc = rs_view(r, &span, EX_TIMEOUT_NS);
        if (rc == RS_SHUTDOWN)
            break;
        if (rc != 0)
            fail("rs_view", rc);
        ex_check(&checker, span.data, span.len);
        if ((rc = rs_release(r, &span)) != 0)   /* consumed: its room is free again */
            fail("rs_release", rc);
    }
    if ((rc = rs_close(r)) != 0)   /* the creator: also removes PATH */
        fail("rs_close", rc);
    if (checker.total != count) {
        fprintf(stderr, "received %" PRIu64 " messages, expected %" PRIu64 "\n", checker.total,
                count);
        return 1;
    }
    printf("unrelated_file: consumed %" PRIu64 " messages, in order\n", count);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4 || (strcmp(argv[1], "produce") != 0 && strcmp(argv[1], "consume") != 0)) {
        fprintf(stderr, "usage: %s produce|consume PATH COUNT\n", argv[0]);
        return 2;
    }
    if (strcmp(argv[1], "produce") == 0)
        return produce(argv[2], ex_count(argv[3]));
    return consume(argv[2], ex_count(argv[3]));
}
