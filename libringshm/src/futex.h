/* Sleeping and waking on a 32-bit word of the shared segment with futex(2),
 * which Cython cannot spell.  Shared (not FUTEX_PRIVATE) futexes, since the
 * sleepers and wakers are different processes.  Errors come back as errno
 * values for the caller to handle: nothing here can abort the process,
 * whatever a peer wrote into the word. */
#ifndef RINGSHM_FUTEX_H
#define RINGSHM_FUTEX_H

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Sleep while *word == expected, until woken or until the absolute
 * CLOCK_MONOTONIC time `until` (FUTEX_WAIT_BITSET takes an absolute
 * monotonic deadline, so a wall-clock jump changes nothing).
 * 0: woken; else EAGAIN (the word had changed), ETIMEDOUT, EINTR, ... */
static inline int rs_futex_wait(uint32_t *word, uint32_t expected, const struct timespec *until) {
    long rc = syscall(SYS_futex, word, FUTEX_WAIT_BITSET, expected, until, NULL,
                      FUTEX_BITSET_MATCH_ANY);
    return rc == 0 ? 0 : errno;
}

/* Wake up to `count` sleepers of `word`. */
static inline void rs_futex_wake(uint32_t *word, int count) {
    syscall(SYS_futex, word, FUTEX_WAKE, count, NULL, NULL, 0);
}

#define RS_WAKE_ALL INT_MAX

#endif
