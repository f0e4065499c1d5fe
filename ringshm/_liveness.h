/* Lock-holder liveness: how a dead lock holder is detected, in any PID
 * namespace (docs/DESIGN.md, "Liveness"; the bytes in docs/FORMAT.md).
 *
 * A process that takes one of a ring's locks first takes a *slot* of the
 * segment's slot table (rs_slot, at RS_SLOT_TABLE_OFFSET): it holds an OFD
 * write lock (fcntl F_OFD_SETLK) on the slot's 8 bytes of the segment file,
 * then bumps the slot's generation.  Its lock token names the slot and that
 * generation.  The kernel drops an OFD lock when the last descriptor of its
 * open file description closes, so when its process dies, however it dies,
 * in whatever PID namespace: pids, which mean nothing across namespaces,
 * are not consulted.  A waiter that suspects a holder compares the slot's
 * generation (a slot taken again since belongs to somebody else, so the
 * holder is gone) and asks the kernel whether the slot is still locked
 * (F_OFD_GETLK): two loads and one system call, on the slow path only.
 *
 * One presence per process and segment (device and inode): every mapping of
 * a segment in a process shares one descriptor and one slot, whatever the
 * number of Ring objects and threads.  After fork() the child's copies of
 * the descriptors still name the parent's open file descriptions, which
 * would keep the parent's slots locked after the parent died: the atfork
 * child handler gives each presence a fresh open file description of the
 * same file (/proc/self/fd/N) and forgets the slot; the child takes a slot
 * of its own on its first lock.
 *
 * The list of presences changes only with the GIL held (mappings are made
 * and dropped by Python code), and os.fork() holds the GIL too.
 */
#ifndef RINGSHM_LIVENESS_H
#define RINGSHM_LIVENESS_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "_layout.h"

#ifndef F_OFD_GETLK   /* Linux >= 3.15; older C libraries lack the names */
#define F_OFD_GETLK 36
#define F_OFD_SETLK 37
#endif

/* A token: generation << 32 | slot index.  Never 0: a taken slot's
 * generation is never 0. */
#define RS_TOKEN_SLOT(token) ((uint32_t)((token) & 0xFFFFFFFFu))
#define RS_TOKEN_GENERATION(token) ((uint32_t)((token) >> 32))

typedef struct rs_presence {
    struct rs_presence *next;
    dev_t dev;
    ino_t ino;
    int fd;            /* our own open file description of the segment; -1: lost at fork */
    int lost_errno;    /* why fd is -1 */
    int refs;          /* mappings of this segment in this process */
    uint64_t token;    /* our lock token; 0 until a slot is taken (again after fork) */
} rs_presence;

static rs_presence *rs_presences = NULL;

static inline rs_slot *rs_slot_at(char *header, uint32_t slot) {
    return (rs_slot *)(header + RS_SLOT_TABLE_OFFSET) + slot;
}

/* Lock (F_WRLCK), or test for a conflicting lock of another open file
 * description (F_OFD_GETLK), the bytes of one slot. */
static inline int rs_slot_fcntl(int fd, int command, struct flock *fl, uint32_t slot) {
    fl->l_type = F_WRLCK;
    fl->l_whence = SEEK_SET;
    fl->l_start = RS_SLOT_TABLE_OFFSET + (off_t)slot * sizeof(rs_slot);
    fl->l_len = sizeof(rs_slot);
    fl->l_pid = 0;   /* must be 0 for OFD locks */
    return fcntl(fd, command, fl);
}

/* A new open file description of the file behind `fd`, close-on-exec; -1
 * (errno set) when /proc is missing or the file may no longer be opened. */
static inline int rs_open_again(int fd) {
    /* Built by hand: this runs in an atfork child handler, where only
     * async-signal-safe calls belong (snprintf is not one). */
    char path[32] = "/proc/self/fd/";
    char digits[12];
    int n = 0, i = 14;
    unsigned v = (unsigned)fd;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (n > 0)
        path[i++] = digits[--n];
    path[i] = 0;
    return open(path, O_RDWR | O_CLOEXEC);
}

/* The presence of this process in the segment open as `fd` (a new one, or
 * the one its other mappings share); NULL with errno set on failure. */
static rs_presence *rs_presence_attach(int fd) {
    struct stat st;
    rs_presence *p;
    if (fstat(fd, &st) != 0)
        return NULL;
    for (p = rs_presences; p != NULL; p = p->next) {
        if (p->dev == st.st_dev && p->ino == st.st_ino) {
            p->refs++;
            return p;
        }
    }
    p = (rs_presence *)calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    /* Our own open file description, not a dup of the caller's: whatever
     * the caller does with its descriptor cannot touch our slot lock, and
     * the mapping (made from the caller's) does not keep the lock alive in
     * a forked child, which inherits the mapping. */
    p->fd = rs_open_again(fd);
    if (p->fd < 0) {
        int saved = errno;
        free(p);
        errno = saved;
        return NULL;
    }
    p->dev = st.st_dev;
    p->ino = st.st_ino;
    p->refs = 1;
    p->next = rs_presences;
    rs_presences = p;
    return p;
}

/* Drop one mapping's share; the last closes the descriptor, which frees the
 * slot (the kernel drops the OFD lock). */
static void rs_presence_release(rs_presence *p) {
    rs_presence **link;
    if (p == NULL || --p->refs > 0)
        return;
    for (link = &rs_presences; *link != NULL; link = &(*link)->next) {
        if (*link == p) {
            *link = p->next;
            break;
        }
    }
    if (p->fd >= 0)
        close(p->fd);
    free(p);
}

/* Take the first free slot of the table in `header` and return our token;
 * 0 with *error set: EUSERS when every slot is held by a live process, else
 * the errno of fcntl (EINVAL: the file system has no OFD locks). */
static uint64_t rs_presence_claim(rs_presence *p, char *header, int *error) {
    struct flock fl;
    uint32_t slot, generation;
    rs_slot *entry;
    if (p->fd < 0) {
        *error = p->lost_errno;
        return 0;
    }
    for (slot = 0; slot < RS_SLOTS; slot++) {
        if (rs_slot_fcntl(p->fd, F_OFD_SETLK, &fl, slot) != 0) {
            if (errno == EAGAIN || errno == EACCES)
                continue;   /* a live process holds it */
            *error = errno;
            return 0;
        }
        /* The slot is ours alone now: nobody else writes this entry. */
        entry = rs_slot_at(header, slot);
        generation = __atomic_load_n(&entry->generation, __ATOMIC_RELAXED) + 1;
        if (generation == 0)
            generation = 1;
        __atomic_store_n(&entry->pid, (int32_t)getpid(), __ATOMIC_RELAXED);
        /* Release: whoever reads our token from a lock word (acquire) and
         * then the entry sees this generation. */
        __atomic_store_n(&entry->generation, generation, __ATOMIC_RELEASE);
        p->token = (uint64_t)generation << 32 | slot;
        return p->token;
    }
    *error = EUSERS;
    return 0;
}

/* False only when the holder named by `token` is certainly gone: the token
 * names no slot, the slot was taken again since (another generation), or no
 * open file description holds the slot's lock any more.  When the kernel
 * cannot tell, alive: a wrong "alive" costs a wait, a wrong "dead" two
 * writers at once. */
static int rs_holder_alive(const rs_presence *p, char *header, uint64_t token) {
    struct flock fl;
    uint32_t slot = RS_TOKEN_SLOT(token);
    if (slot >= RS_SLOTS)
        return 0;   /* garbage a peer wrote: nobody can hold that */
    if (__atomic_load_n(&rs_slot_at(header, slot)->generation, __ATOMIC_ACQUIRE)
            != RS_TOKEN_GENERATION(token))
        return 0;
    if (p->fd < 0 || rs_slot_fcntl(p->fd, F_OFD_GETLK, &fl, slot) != 0)
        return 1;
    return fl.l_type != F_UNLCK;
}

/* The pid (in its own PID namespace) that took the slot named by `token`,
 * for people and tests; 0 for no token, -1 when the slot is not that
 * holder's any more. */
static int64_t rs_holder_pid(char *header, uint64_t token) {
    uint32_t slot = RS_TOKEN_SLOT(token);
    rs_slot *entry;
    if (token == 0)
        return 0;
    if (slot >= RS_SLOTS)
        return -1;
    entry = rs_slot_at(header, slot);
    if (__atomic_load_n(&entry->generation, __ATOMIC_ACQUIRE) != RS_TOKEN_GENERATION(token))
        return -1;
    return __atomic_load_n(&entry->pid, __ATOMIC_RELAXED);
}

/* The pthread_atfork child handler (see the top of this file). */
static void rs_presences_after_fork(void) {
    rs_presence *p;
    int fresh;
    for (p = rs_presences; p != NULL; p = p->next) {
        p->token = 0;
        if (p->fd < 0)
            continue;
        fresh = rs_open_again(p->fd);
        if (fresh >= 0 && dup2(fresh, p->fd) >= 0) {
            fcntl(p->fd, F_SETFD, FD_CLOEXEC);
            close(fresh);
            continue;
        }
        p->lost_errno = errno;
        if (fresh >= 0)
            close(fresh);
        close(p->fd);
        p->fd = -1;
    }
}

#endif
