/* sysv.c: a ring in a System V shared-memory segment, found by key
 * (shmget(2)), between unrelated processes.
 *
 *   sysv consume KEY COUNT    creates the ring, prints "ready", checks COUNT
 *                             messages, removes the segment (IPC_RMID)
 *   sysv produce KEY COUNT    opens it, puts COUNT messages, shuts it down
 *
 * KEY is a number, 0x52494E47 or decimal: any key the two sides agree on,
 * or ftok(path, id) of a file both know (pass the number it returns).  The
 * segment is what `ipcs -m` lists; Python attaches with
 * Ring.open(sysv_key=KEY), e.g.
 *     python3 peer.py produce --sysv-key KEY --count COUNT
 * A System V ring keeps its lock slots in a small companion file,
 * /dev/shm/ringshm-sysv.0xKEY, made and removed with the segment.
 *
 * As in unrelated_file.c the consumer creates and the producer waits up to
 * 10 s for the key to appear.
 */
#include "example.h"

static int produce(int key, uint64_t count) {
    char buf[EX_MAX_MESSAGE];
    rs_ring *r;
    uint64_t i;
    int rc, tries = 0;

    while ((rc = rs_open_sysv(key, NULL, &r)) == RS_NOT_FOUND && tries++ < 1000)
        ex_sleep_ms(10);
    if (rc != 0)
        fail("rs_open_sysv", rc);

    for (i = 0; i < count; i++) {
        size_t len = ex_message(0, i, buf);
        if ((rc = rs_put(r, buf, len, EX_TIMEOUT_NS)) != 0)
            fail("rs_put", rc);
    }
    if ((rc = rs_shutdown(r, 0)) != 0)
        fail("rs_shutdown", rc);
    if ((rc = rs_close(r)) != 0)
        fail("rs_close", rc);
    printf("sysv: produced %" PRIu64 " messages\n", count);
    return 0;
}

static int consume(int key, uint64_t count) {
    char buf[EX_MAX_MESSAGE];
    ex_checker checker;
    rs_ring *r;
    size_t len;
    int rc;

    /* IPC_CREAT | IPC_EXCL: RS_EXISTS when the key is taken. */
    if ((rc = rs_create_sysv(key, EX_CAPACITY, NULL, &r)) != 0)
        fail("rs_create_sysv", rc);
    printf("ready\n");
    fflush(stdout);

    ex_checker_init(&checker, 1);
    for (;;) {
        rc = rs_get(r, buf, sizeof(buf), &len, EX_TIMEOUT_NS);
        if (rc == RS_SHUTDOWN)
            break;
        if (rc != 0)
            fail("rs_get", rc);
        ex_check(&checker, buf, len);
    }
    if ((rc = rs_close(r)) != 0)   /* the creator: IPC_RMID and the lock file */
        fail("rs_close", rc);
    if (checker.total != count) {
        fprintf(stderr, "received %" PRIu64 " messages, expected %" PRIu64 "\n", checker.total,
                count);
        return 1;
    }
    printf("sysv: consumed %" PRIu64 " messages, in order\n", count);
    return 0;
}

/* A key as shmget takes it: 0x... or decimal, 32 bits. */
static int parse_key(const char *arg) {
    char *end;
    unsigned long long key;
    errno = 0;
    key = strtoull(arg, &end, 0);
    if (errno != 0 || end == arg || *end != 0 || key == 0 || key > 0xFFFFFFFFull) {
        fprintf(stderr, "not a System V key (a nonzero 32-bit number): %s\n", arg);
        exit(2);
    }
    return (int)(uint32_t)key;
}

int main(int argc, char **argv) {
    if (argc != 4 || (strcmp(argv[1], "produce") != 0 && strcmp(argv[1], "consume") != 0)) {
        fprintf(stderr, "usage: %s produce|consume KEY COUNT\n", argv[0]);
        return 2;
    }
    if (strcmp(argv[1], "produce") == 0)
        return produce(parse_key(argv[2]), ex_count(argv[3]));
    return consume(parse_key(argv[2]), ex_count(argv[3]));
}
