/* Status codes in words (rs_strerror), and what the calling thread's last
 * failure was about (rs_detail): the only text the library makes.  It never
 * prints: the caller decides what to show. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

static _Thread_local char detail[320];

const char *rs_detail(void) {
    return detail;
}

int rs__fail(int code, const char *format, ...) {
    va_list args;
    va_start(args, format);
    vsnprintf(detail, sizeof(detail), format, args);
    va_end(args);
    return code;
}

int rs__not_a_ring(void) {
    return rs__fail(RS_WRONG_KIND, "a topic's handle where a ring was expected: publish and "
                    "subscribe with the rs_topic_* and rs_sub_* calls");
}

int rs__errno(const char *what) {
    int saved = errno ? errno : EIO;
    char buf[128];
    /* The GNU strerror_r returns its message (maybe not in buf). */
    const char *message = strerror_r(saved, buf, sizeof(buf));
    rs__fail(-saved, "%s: %s", what, message);
    errno = saved;
    return -saved;
}

const char *rs_strerror(int code) {
    switch (code) {
    case RS_OK: return "success";
    case RS_FULL: return "no room in the ring";
    case RS_EMPTY: return "no message in the ring";
    case RS_SHUTDOWN: return "the ring was shut down";
    case RS_TOO_LARGE: return "message too large for the ring";
    case RS_CLOSED: return "the ring was closed";
    case RS_CORRUPTED: return "ring segment is corrupted";
    case RS_PERMISSION: return "permission denied";
    case RS_NOT_FOUND: return "no such ring";
    case RS_EXISTS: return "the ring exists";
    case RS_NO_SPACE: return "no space left to reserve the ring";
    case RS_INVALID: return "invalid argument";
    case RS_DEADLOCK: return "this thread holds the lock the call needs (inside its own block)";
    case RS_NOT_OWNER: return "the block was opened by the process this one was forked from";
    case RS_NO_SLOT: return "every liveness slot of the ring is held by a live process";
    case RS_INTERRUPTED: return "interrupted";
    case RS_BUSY: return "the ring's lock did not come in time";
    case RS_POKED: return "the wait was poked";
    case RS_LAGGED: return "the subscriber was overrun and lost messages";
    case RS_WRONG_KIND: return "a topic where a ring was expected, or a ring where a topic was";
    default:
        break;
    }
    if (code < 0 && code > -4096) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 32)
        const char *description = strerrordesc_np(-code);   /* thread-safe, unlike strerror */
        return description ? description : "unknown error";
#else
        return strerror(-code);
#endif
    }
    return "unknown status";
}
