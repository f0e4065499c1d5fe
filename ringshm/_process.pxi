# Processes by pid: the creator fields of the header (`ringshm ls`, "creator
# alive") and process_alive() for the tools and tests.  Included into
# _ring.pyx.  Lock holders are not judged by pid: a pid means nothing in
# another PID namespace; _liveness.h names them by an OFD-locked slot.

from libc.errno cimport errno, ESRCH
from libc.stdint cimport uint64_t
from libc.stdio cimport FILE, fopen, fclose, fread
from libc.stdlib cimport strtoull
from libc.string cimport memcpy, strrchr

cdef uint64_t LOW32 = 0xFFFFFFFF


cdef uint64_t proc_start_time(int pid, char *state) noexcept nogil:
    """Start time of `pid` in clock ticks since boot (field 22 of
    /proc/PID/stat), or 0 when it cannot be read; its state letter (field 3)
    goes to *state when `state` is not NULL.  With the pid the start time
    names a process uniquely: a pid that was reused has a later one."""
    cdef char path[64]
    cdef char buf[1024]
    cdef FILE *f
    cdef size_t n
    cdef char *p
    cdef int field
    # snprintf is not declared nogil by Cython; build the path by hand.
    cdef char digits[16]
    cdef int nd = 0, i = 0, k
    cdef int v = pid
    if pid <= 0:
        return 0
    while v > 0 and nd < 15:
        digits[nd] = <char>(48 + v % 10)
        v //= 10
        nd += 1
    memcpy(path, b"/proc/", 6)
    i = 6
    for k in range(nd - 1, -1, -1):
        path[i] = digits[k]
        i += 1
    memcpy(path + i, b"/stat\0", 6)
    f = fopen(path, "r")
    if f == NULL:
        return 0
    n = fread(buf, 1, sizeof(buf) - 1, f)
    fclose(f)
    buf[n] = 0
    # The command name (field 2) is in parentheses and may hold spaces or
    # parentheses itself: fields are counted after the last ')'.
    p = strrchr(buf, 41)  # ')'
    if p == NULL:
        return 0
    if state != NULL and p[1] == 32:
        state[0] = p[2]
    field = 2
    while p[0] != 0:
        if p[0] == 32:  # ' '
            field += 1
            if field == 22:
                return strtoull(p + 1, NULL, 10)
        p += 1
    return 0


cdef inline uint64_t make_token(int pid, uint64_t start) noexcept nogil:
    return (<uint64_t>pid << 32) | (start & LOW32)


cdef bint owner_alive(uint64_t token) noexcept nogil:
    """False only when the process named by `token` is certainly gone:
    no such pid, a zombie (killed, not yet reaped: it will never release a
    lock, and its parent may be the very process waiting for it), or a pid
    that now belongs to a process started later."""
    cdef int pid = <int>(token >> 32)
    cdef uint64_t start
    cdef char state = 0
    if pid <= 0:
        return False
    if kill(pid, 0) != 0 and errno == ESRCH:
        return False
    start = proc_start_time(pid, &state)
    if state == 90 or state == 88:  # 'Z', 'X'
        return False
    if start != 0 and (start & LOW32) != (token & LOW32):
        return False
    return True


def process_alive(int pid, uint64_t start_time=0):
    """True unless process `pid` (started at `start_time` clock ticks after
    boot, when given) is certainly gone."""
    return owner_alive(make_token(pid, start_time if start_time else proc_start_time(pid, NULL)))


def process_start_time(int pid):
    """Start time of `pid` in clock ticks since boot, 0 if unknown."""
    return proc_start_time(pid, NULL)
