/* anonymous.c: a ring in anonymous shared memory, shared by a parent and the
 * children it forks afterwards (the classic mmap(MAP_SHARED|MAP_ANONYMOUS)
 * before fork()).
 *
 *   anonymous COUNT [PRODUCERS]    PRODUCERS forked children (default 2) each
 *                                  put COUNT messages; the parent checks them all
 *
 * An anonymous ring has no name, path or key: nothing outside this process
 * tree can find it, and a child that calls exec() loses the mapping.  That
 * is why this is the one example without a Python peer: a Python program
 * is always a new exec'd image (Python's own Ring.anonymous() is, likewise,
 * shared only with children that Python forks).  To share a ring with a
 * program that is exec'd, give it a name (shm_open.c), a path
 * (parent_child_file.c, unrelated_file.c) or a key (sysv.c).
 *
 * It also shows several producers at once: each message goes to exactly
 * one consumer, and each producer's messages arrive in its order (two
 * producers' messages interleave).
 */
#include "example.h"

#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static void produce(rs_ring *r, unsigned producer, uint64_t count) {
    char buf[EX_MAX_MESSAGE];
    uint64_t i;
    int rc;
    for (i = 0; i < count; i++) {
        size_t len = ex_message(producer, i, buf);
        if ((rc = rs_put(r, buf, len, EX_TIMEOUT_NS)) != 0)
            fail("child: rs_put", rc);
    }
    /* No rs_shutdown here: the other producers may not be done.  The
     * parent ends the stream when every child has exited. */
    if ((rc = rs_close(r)) != 0)
        fail("child: rs_close", rc);
}

int main(int argc, char **argv) {
    char buf[EX_MAX_MESSAGE];
    pid_t children[EX_MAX_PRODUCERS];
    struct rs_stats stats;
    ex_checker checker;
    rs_ring *r;
    uint64_t count;
    unsigned producers = 2, p;
    size_t len;
    int rc, status, failed = 0;

    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s COUNT [PRODUCERS (1-%d)]\n", argv[0], EX_MAX_PRODUCERS);
        return 2;
    }
    count = ex_count(argv[1]);
    if (argc == 3 && (producers = (unsigned)ex_count(argv[2])) > EX_MAX_PRODUCERS) {
        fprintf(stderr, "at most %d producers\n", EX_MAX_PRODUCERS);
        return 2;
    }

    /* The ring exists from here on in this process and every child forked
     * after this line; it goes when the last of them closes it or exits. */
    if ((rc = rs_anonymous(EX_CAPACITY, NULL, &r)) != 0)
        fail("rs_anonymous", rc);

    fflush(stdout);
    for (p = 0; p < producers; p++) {
        if ((children[p] = fork()) < 0) {
            perror("fork");
            return 1;   /* the children already forked time out in rs_put */
        }
        if (children[p] == 0) {
            produce(r, p, count);   /* the inherited handle works in the child */
            _exit(0);
        }
    }

    /* Exactly producers * COUNT messages, each the next of its producer. */
    ex_checker_init(&checker, producers);
    while (checker.total < (uint64_t)producers * count) {
        if ((rc = rs_get(r, buf, sizeof(buf), &len, EX_TIMEOUT_NS)) != 0)
            fail("parent: rs_get", rc);
        ex_check(&checker, buf, len);
    }
    for (p = 0; p < producers; p++) {
        if (waitpid(children[p], &status, 0) != children[p]) {
            perror("waitpid");
            return 1;
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "child %u failed (status 0x%x)\n", p, (unsigned)status);
            failed = 1;
        }
    }
    /* Every producer is gone: end the stream and make sure nothing more came. */
    if ((rc = rs_shutdown(r, 0)) != 0)
        fail("rs_shutdown", rc);
    rc = rs_get(r, buf, sizeof(buf), &len, 0);
    if (rc != RS_SHUTDOWN) {
        fprintf(stderr, "after the last message: %s, expected RS_SHUTDOWN\n",
                rc == 0 ? "one more message" : rs_strerror(rc));
        return 1;
    }
    /* The counters live in the segment: every process's puts and gets. */
    if ((rc = rs_stats(r, &stats)) != 0)
        fail("rs_stats", rc);
    if (stats.messages_put != checker.total || stats.messages_got != checker.total) {
        fprintf(stderr, "stats: %" PRIu64 " put, %" PRIu64 " got, %" PRIu64 " checked\n",
                stats.messages_put, stats.messages_got, checker.total);
        return 1;
    }
    if ((rc = rs_close(r)) != 0)
        fail("rs_close", rc);
    if (failed)
        return 1;
    printf("anonymous: %" PRIu64 " messages from %u forked children, each in order "
           "(%" PRIu64 " waits for room)\n", checker.total, producers, stats.put_waits);
    return 0;
}
