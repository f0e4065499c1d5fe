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
 * The list of presences, and the claim of a presence's slot, are guarded by
 * one mutex: two threads that claimed at once would take two slots, and
 * each would find the other's lock word held by no one it can see (an OFD
 * lock never conflicts with its own open file description).
 */
#ifndef RINGSHM_LIVENESS_H
#define RINGSHM_LIVENESS_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "layout.h"

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

rs_slot *rs_slot_at(char *header, uint32_t slot);
/* The presence of this process in the segment open as `fd` (a new one, or
 * the one its other mappings share); NULL with errno set on failure. */
rs_presence *rs_presence_attach(int fd);
/* Drop one mapping's share; the last closes the descriptor, which frees the
 * slot (the kernel drops the OFD lock). */
void rs_presence_release(rs_presence *p);
/* Take the first free slot of the table in `header` and return our token;
 * 0 with *error set: EUSERS when every slot is held by a live process, else
 * the errno of fcntl (EINVAL: the file system has no OFD locks). */
uint64_t rs_presence_claim(rs_presence *p, char *header, int *error);
/* False only when the holder named by `token` is certainly gone. */
int rs_holder_alive(const rs_presence *p, char *header, uint64_t token);
/* The pid (in its own PID namespace) that took the slot named by `token`;
 * 0 for no token, -1 when the slot is not that holder's any more. */
int64_t rs_holder_pid(char *header, uint64_t token);
/* The pthread_atfork handlers: before (prepare), in the parent, in the
 * child (which also gives each presence a fresh open file description). */
void rs_presences_before_fork(void);
void rs_presences_after_fork_parent(void);
void rs_presences_after_fork(void);

#endif
