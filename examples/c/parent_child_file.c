/* parent_child_file.c: a ring in a mapped file, shared by a parent and the
 * child it forks (the classic "open a file, mmap it MAP_SHARED, fork").
 *
 *   parent_child_file PATH COUNT                the child is this program, forked
 *   parent_child_file PATH COUNT -- CMD ARG...  the child runs CMD, e.g. the Python
 *       peer: -- python3 peer.py produce --path PATH --count COUNT
 *
 * The parent creates the ring in the file PATH (rs_create_path: a new
 * regular file, its space reserved now, removed again by the parent's
 * rs_close), forks the producer, and consumes COUNT messages, checking each,
 * until the producer shuts the ring down (the end of the stream).
 *
 * A forked child keeps the parent's mapping and may use the parent's
 * rs_ring * as it is: the library notices the fork (pthread_atfork) and
 * gives the child its own liveness slot, so a child killed holding a lock
 * is taken over like any other process.  Its rs_close detaches only; the
 * file stays the creating process's to remove.  A child that execs another
 * program loses the mapping and attaches again by path (rs_open_path, or
 * Ring.open(path=...) in Python): the two are unrelated from then on, as in
 * unrelated_file.c.
 */
#include "example.h"

#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* The forked child: COUNT messages with rs_put, then the end of the stream. */
static void produce(rs_ring *r, uint64_t count) {
    char buf[EX_MAX_MESSAGE];
    uint64_t i;
    int rc;
    for (i = 0; i < count; i++) {
        size_t len = ex_message(0, i, buf);
        /* Waits (up to the timeout) while the ring is full. */
        if ((rc = rs_put(r, buf, len, EX_TIMEOUT_NS)) != 0)
            fail("child: rs_put", rc);
    }
    /* Wakes the parent; its gets drain what is left, then say RS_SHUTDOWN. */
    if ((rc = rs_shutdown(r, 0)) != 0)
        fail("child: rs_shutdown", rc);
    if ((rc = rs_close(r)) != 0)
        fail("child: rs_close", rc);
}

int main(int argc, char **argv) {
    char buf[EX_MAX_MESSAGE];
    ex_checker checker;
    rs_ring *r;
    size_t len;
    uint64_t count;
    pid_t child;
    int rc, status;

    if (argc < 3 || (argc > 3 && (strcmp(argv[3], "--") != 0 || argc == 4))) {
        fprintf(stderr, "usage: %s PATH COUNT [-- CMD ARG...]\n", argv[0]);
        return 2;
    }
    count = ex_count(argv[2]);

    /* NULL options: mode 0600, not persistent (rs_close removes the file). */
    if ((rc = rs_create_path(argv[1], EX_CAPACITY, NULL, &r)) != 0)
        fail("rs_create_path", rc);

    fflush(stdout);   /* nothing buffered may be written twice */
    child = fork();
    if (child < 0) {
        perror("fork");
        rs_close(r);
        return 1;
    }
    if (child == 0) {
        if (argc > 4) {
            /* The child program attaches by path itself. */
            execvp(argv[4], argv + 4);
            perror(argv[4]);
            _exit(127);
        }
        produce(r, count);
        _exit(0);
    }

    /* The parent consumes and checks: rs_get copies the oldest message out. */
    ex_checker_init(&checker, 1);
    for (;;) {
        rc = rs_get(r, buf, sizeof(buf), &len, EX_TIMEOUT_NS);
        if (rc == RS_SHUTDOWN)   /* shut down and drained: the end */
            break;
        if (rc != 0)
            fail("parent: rs_get", rc);
        ex_check(&checker, buf, len);
    }

    if (waitpid(child, &status, 0) != child) {
        perror("waitpid");
        return 1;
    }
    if ((rc = rs_close(r)) != 0)   /* the creator: also removes PATH */
        fail("parent: rs_close", rc);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "the child failed (status 0x%x)\n", (unsigned)status);
        return 1;
    }
    if (checker.total != count) {
        fprintf(stderr, "received %" PRIu64 " messages, expected %" PRIu64 "\n", checker.total,
                count);
        return 1;
    }
    printf("parent_child_file: %" PRIu64 " messages from the %s child, in order\n", count,
           argc > 4 ? "exec'd" : "forked");
    return 0;
}
