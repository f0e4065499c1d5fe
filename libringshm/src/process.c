/* Processes by pid: the creator fields of the header (`ringshm ls`,
 * "creator alive").  Lock holders are not judged by pid: a pid means
 * nothing in another PID namespace; liveness.c names them by an OFD-locked
 * slot. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

/* Start time of `pid` in clock ticks since boot (field 22 of
 * /proc/PID/stat), or 0 when it cannot be read; its state letter (field 3)
 * goes to *state.  With the pid the start time names a process uniquely: a
 * reused pid has a later one. */
uint64_t rs__proc_start_time(int pid, char *state) {
    char path[64], buf[1024];
    char *p;
    ssize_t n;
    int fd, field;
    if (pid <= 0)
        return 0;
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    /* The command name (field 2) is in parentheses and may hold spaces or
     * parentheses itself: fields are counted after the last ')'. */
    p = strrchr(buf, ')');
    if (p == NULL)
        return 0;
    if (state != NULL && p[1] == ' ')
        *state = p[2];
    for (field = 2; *p != 0; p++) {
        if (*p == ' ' && ++field == 22)
            return strtoull(p + 1, NULL, 10);
    }
    return 0;
}

/* False only when the process is certainly gone: no such pid, a zombie
 * (it will never release anything, and its parent may be the very process
 * asking), or a pid that now belongs to a process started later. */
int rs__process_alive(int pid, uint64_t start_time) {
    uint64_t start;
    char state = 0;
    if (pid <= 0)
        return 0;
    if (kill(pid, 0) != 0 && errno == ESRCH)
        return 0;
    start = rs__proc_start_time(pid, &state);
    if (state == 'Z' || state == 'X')
        return 0;
    if (start != 0 && start_time != 0 && (start & 0xFFFFFFFFu) != (start_time & 0xFFFFFFFFu))
        return 0;
    return 1;
}
