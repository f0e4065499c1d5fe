/* rs_open_sysv racing rs_create_sysv of the same key: the opener either
 * finds nothing yet (RS_NOT_FOUND, and tries again) or a whole ring, never
 * RS_CORRUPTED from a creator between its segment and its header. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "ringshm.h"

int main(void) {
    int key = (int)(0x53000000u | (((unsigned)getpid() & 0xFFFFu) << 8) | 0x42u);
    int i, status;
    for (i = 0; i < 100; i++) {
        rs_ring *r, *o;
        pid_t child = fork();
        CHECK(child >= 0);
        if (child == 0) {
            int rc;
            while ((rc = rs_open_sysv(key, NULL, &o)) == RS_NOT_FOUND) {
            }
            CHECK_RC(rc);
            CHECK_RC(rs_close(o));
            _exit(0);
        }
        CHECK_RC(rs_create_sysv(key, 4096, NULL, &r));
        CHECK(waitpid(child, &status, 0) == child);
        CHECK_RC(rs_close(r));   /* the creator: IPC_RMID and the lock file */
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    printf("test_sysv_open_race: ok\n");
    return 0;
}
