/* rs_wait over many rings: a put on a random ring from another thread is
 * reported (and only it), room waits, shutdown, a poke, more rings than one
 * futex_waitv takes, a handle closed during the wait, and the polling
 * fallback (run again with RINGSHM_NO_FUTEX_WAITV=1 by the test driver
 * when the argument "fallback" is given).  Exits non-zero on failure. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "ringshm.h"

#define RINGS 300
#define SECOND 1000000000LL

static rs_ring *rings[RINGS];
static rs_waiter items[RINGS];
static pid_t creator;

/* Remove this process's rings, also when a check fails (atexit). */
static void cleanup(void) {
    char name[64];
    size_t i;
    if (getpid() != creator)
        return;
    for (i = 0; i < RINGS; i++) {
        snprintf(name, sizeof(name), "ctest-wait-%d-%zu", (int)creator, i);
        rs_unlink_name(name);
    }
}

typedef struct {
    rs_ring *ring;
    rs_poke *poke;
    int action;   /* 0: put, 1: shutdown, 2: poke, 3: close */
} later;

static void *act_later(void *arg) {
    later *l = arg;
    struct timespec pause = {0, 20000000};
    nanosleep(&pause, NULL);
    if (l->action == 0)
        CHECK_RC(rs_put(l->ring, "x", 1, 0));
    else if (l->action == 1)
        CHECK_RC(rs_shutdown(l->ring, 0));
    else if (l->action == 2)
        rs_poke_send(l->poke);
    else
        CHECK_RC(rs_close(l->ring));
    return NULL;
}

static pthread_t start(later *l) {
    pthread_t t;
    CHECK(pthread_create(&t, NULL, act_later, l) == 0);
    return t;
}

static void data_items(size_t count) {
    size_t i;
    for (i = 0; i < count; i++) {
        items[i].ring = rings[i];
        items[i].events = RS_WAIT_DATA;
        items[i].room = 0;
        items[i].ready = 0;
    }
}

int main(int argc, char **argv) {
    char name[64], buf[64];
    size_t i, len, round;
    rs_poke poke;
    later l;
    pthread_t t;
    int rc, fallback = argc > 1 && strcmp(argv[1], "fallback") == 0;
    unsigned seed = (unsigned)getpid();

    if (fallback)
        setenv("RINGSHM_NO_FUTEX_WAITV", "1", 1);
    creator = getpid();
    atexit(cleanup);
    for (i = 0; i < RINGS; i++) {
        snprintf(name, sizeof(name), "ctest-wait-%d-%zu", (int)getpid(), i);
        CHECK_RC(rs_create_name(name, 4096, NULL, &rings[i]));
    }
    data_items(RINGS);
    CHECK(rs_wait(items, 16, NULL, 0, 0) == RS_EMPTY);
    CHECK(rs_wait(items, RINGS, NULL, 0, 10000000) == RS_EMPTY);
    CHECK(rs_wait_uses_futex_waitv() == !fallback);
    {
        /* Nothing to wait on: a sleep to the deadline, not a spin. */
        clock_t cpu = clock();
        CHECK(rs_wait(items, 0, NULL, 0, 100000000) == RS_EMPTY);
        CHECK(clock() - cpu < CLOCKS_PER_SEC / 20);
    }

    /* A put on a random ring, 200 rounds, over 16 and over all the rings. */
    for (round = 0; round < 200; round++) {
        size_t count = round % 2 ? RINGS : 16, which = (size_t)rand_r(&seed) % count;
        data_items(count);
        l.ring = rings[which];
        l.action = 0;
        t = start(&l);
        rc = rs_wait(items, count, NULL, 0, 10 * SECOND);
        CHECK(rc == 1);
        for (i = 0; i < count; i++)
            CHECK((items[i].ready != 0) == (i == which));
        CHECK(items[which].ready == RS_WAIT_DATA);
        pthread_join(t, NULL);
        CHECK_RC(rs_get(rings[which], buf, sizeof(buf), &len, 0));
    }

    /* Room: a full ring becomes ready when a message is taken. */
    {
        static char big[1000];
        while (rs_put(rings[3], big, sizeof(big), 0) == 0) {
        }
    }
    items[0].ring = rings[3];
    items[0].events = RS_WAIT_ROOM;
    items[0].room = 1000;
    CHECK(rs_wait(items, 1, NULL, 0, 0) == RS_EMPTY);
    CHECK(rs_get(rings[3], buf, sizeof(buf), &len, 0) == RS_TOO_LARGE);   /* it stays */
    CHECK(rs_wait(items, 1, NULL, 0, 0) == RS_EMPTY);
    {
        static char big[1000];
        CHECK_RC(rs_get(rings[3], big, sizeof(big), &len, 0));
    }
    CHECK(rs_wait(items, 1, NULL, 0, 0) == 1 && items[0].ready == RS_WAIT_ROOM);
    items[0].room = 1u << 20;
    CHECK(rs_wait(items, 1, NULL, 0, 0) == RS_TOO_LARGE);
    {
        static char big[1000];
        while (rs_get(rings[3], big, sizeof(big), &len, 0) == 0) {
        }
    }

    /* A poke ends the wait; one sent before the wait started too. */
    rs_poke_init(&poke);
    data_items(16);
    l.poke = &poke;
    l.action = 2;
    t = start(&l);
    CHECK(rs_wait(items, 16, &poke, rs_poke_seen(&poke), 10 * SECOND) == RS_POKED);
    pthread_join(t, NULL);
    CHECK(rs_wait(items, 16, &poke, rs_poke_seen(&poke) - 1, 10 * SECOND) == RS_POKED);

    /* Shutdown is ready; a handle closed during the wait ends it. */
    data_items(RINGS);
    l.ring = rings[RINGS - 1];
    l.action = 1;
    t = start(&l);
    CHECK(rs_wait(items, RINGS, NULL, 0, 10 * SECOND) == 1);
    CHECK(items[RINGS - 1].ready & RS_WAIT_SHUTDOWN);
    pthread_join(t, NULL);
    data_items(RINGS - 1);
    l.ring = rings[200];
    l.action = 3;
    t = start(&l);
    CHECK(rs_wait(items, RINGS - 1, NULL, 0, 10 * SECOND) == RS_CLOSED);
    pthread_join(t, NULL);

    for (i = 0; i < RINGS; i++)
        if (i != 200)
            CHECK_RC(rs_close(rings[i]));
    printf("test_wait_many%s: ok\n", fallback ? " (fallback)" : "");
    if (!fallback) {
        /* Once more, with the fallback forced. */
        int status;
        pid_t child;
        fflush(stdout);
        child = fork();
        CHECK(child >= 0);
        if (child == 0) {
            execl(argv[0], argv[0], "fallback", (char *)NULL);
            _exit(127);
        }
        CHECK(waitpid(child, &status, 0) == child);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    return 0;
}
