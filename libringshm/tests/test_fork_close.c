/* A forked child's rs_close of its parent's handle detaches only: the name
 * of a ring made without persist stays until the creating process closes
 * it (as Python's Ring, which only its creator's pid unlinks). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "ringshm.h"

int main(void) {
    rs_ring *r, *again;
    char name[64], path[128];
    int status;
    pid_t child;

    snprintf(name, sizeof(name), "ctest-forkclose-%d", (int)getpid());
    snprintf(path, sizeof(path), "/dev/shm/ringshm.%s", name);
    CHECK_RC(rs_create_name(name, 4096, NULL, &r));
    child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        CHECK_RC(rs_put(r, "from the child", 14, 0));
        CHECK_RC(rs_close(r));
        _exit(0);
    }
    CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(access(path, F_OK) == 0);
    CHECK_RC(rs_open_name(name, NULL, &again));
    CHECK(rs_count(again) == 1);
    CHECK_RC(rs_close(again));   /* an opener: detaches only */
    CHECK(access(path, F_OK) == 0);
    CHECK_RC(rs_close(r));       /* the creator: the name goes */
    CHECK(access(path, F_OK) != 0);
    printf("test_fork_close: ok\n");
    return 0;
}
