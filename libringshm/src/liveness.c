/* Lock-holder liveness: slots of the segment's slot table held by OFD
 * locks (liveness.h says how and why). */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "liveness.h"

/* Every presence of this process, one per segment file.  Changed only by
 * attach and release, which the library serialises with presences_lock. */
static rs_presence *rs_presences = NULL;
static pthread_mutex_t presences_lock = PTHREAD_MUTEX_INITIALIZER;

rs_slot *rs_slot_at(char *header, uint32_t slot) {
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

static rs_presence *attach_locked(int fd) {
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

rs_presence *rs_presence_attach(int fd) {
    rs_presence *p;
    int saved;
    pthread_mutex_lock(&presences_lock);
    p = attach_locked(fd);
    saved = errno;
    pthread_mutex_unlock(&presences_lock);
    errno = saved;
    return p;
}

static void release_locked(rs_presence *p) {
    rs_presence **link;
    if (--p->refs > 0)
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

void rs_presence_release(rs_presence *p) {
    if (p == NULL)
        return;
    pthread_mutex_lock(&presences_lock);
    release_locked(p);
    pthread_mutex_unlock(&presences_lock);
}

static uint64_t claim_locked(rs_presence *p, char *header, int *error) {
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
        __atomic_store_n(&p->token, (uint64_t)generation << 32 | slot, __ATOMIC_RELEASE);
        return p->token;
    }
    *error = EUSERS;
    return 0;
}

uint64_t rs_presence_claim(rs_presence *p, char *header, int *error) {
    uint64_t token;
    pthread_mutex_lock(&presences_lock);
    token = __atomic_load_n(&p->token, __ATOMIC_ACQUIRE);   /* another thread was first */
    if (token == 0)
        token = claim_locked(p, header, error);
    pthread_mutex_unlock(&presences_lock);
    return token;
}

/* False only when the holder named by `token` is certainly gone: the token
 * names no slot, the slot was taken again since (another generation), or no
 * open file description holds the slot's lock any more.  When the kernel
 * cannot tell, alive: a wrong "alive" costs a wait, a wrong "dead" two
 * writers at once. */
int rs_holder_alive(const rs_presence *p, char *header, uint64_t token) {
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
int64_t rs_holder_pid(char *header, uint64_t token) {
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
void rs_presences_after_fork(void) {
    rs_presence *p;
    int fresh;
    pthread_mutex_unlock(&presences_lock);
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

/* fork() while another thread changes the list would leave the child a
 * list half-changed and a mutex held for ever: the prepare handler takes
 * the mutex, the parent and child handlers give it back. */
void rs_presences_before_fork(void) {
    pthread_mutex_lock(&presences_lock);
}

void rs_presences_after_fork_parent(void) {
    pthread_mutex_unlock(&presences_lock);
}
