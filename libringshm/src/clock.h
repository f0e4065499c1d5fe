/* The clock of every wait: CLOCK_MONOTONIC in nanoseconds (the wall clock
 * may jump), and deadlines.  static inline: a call that does not wait
 * never reads the clock. */
#ifndef RINGSHM_CLOCK_H
#define RINGSHM_CLOCK_H

#include <stdint.h>
#include <time.h>

#define RS_NS 1000000000LL
#define RS_NO_DEADLINE INT64_MAX
/* Even a non-blocking call waits this long for a lock: it is held for the
 * length of a copy, and failing then would report Full/Empty wrongly. */
#define RS_LOCK_PATIENCE_NS 1000000LL

static inline int64_t rs__now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * RS_NS + ts.tv_nsec;
}

/* A relative timeout (RS_FOREVER, 0, or ns) as an absolute deadline: 0 for
 * "already passed", RS_NO_DEADLINE for none. */
static inline int64_t rs__deadline(int64_t timeout_ns) {
    int64_t now;
    if (timeout_ns < 0)
        return RS_NO_DEADLINE;
    if (timeout_ns == 0)
        return 0;
    now = rs__now();
    return timeout_ns > RS_NO_DEADLINE - now ? RS_NO_DEADLINE : now + timeout_ns;
}

static inline int64_t rs__lock_deadline(int64_t deadline) {
    int64_t soon = rs__now() + RS_LOCK_PATIENCE_NS;
    return deadline > soon ? deadline : soon;
}

static inline void rs__timespec(int64_t until, struct timespec *ts) {
    ts->tv_sec = (time_t)(until / RS_NS);
    ts->tv_nsec = (long)(until % RS_NS);
}

#endif
