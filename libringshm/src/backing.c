/* Where a C program's rings live: a POSIX shared-memory name (the file
 * /dev/shm/ringshm.NAME, as Python's Ring.create(NAME)), a regular file at
 * a path, an anonymous shared memfd, or a System V segment whose lock
 * slots live on the companion file /dev/shm/ringshm-sysv.0xKEY.  The same
 * rules as the Python package's backings: a new segment is made with
 * exactly `mode`; attaching never follows a symbolic link, never blocks on a
 * FIFO, and refuses another user's segment before one byte of it is read
 * (unless any_owner); a creator that is still writing the header is given
 * a second.  (Python makes its segments itself and hands the mapping to
 * segment.c: it does not come through here.) */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define SHM_DIR "/dev/shm/"
#define SHM_PREFIX "ringshm."
#define SYSV_COMPANION "/dev/shm/ringshm-sysv.0x%08x"
#define CREATOR_GRACE_NS 1000000000LL
#define ATTACH_FLAGS (O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)
#define CREATE_FLAGS (O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC)

static int unmap_file(void *base, size_t length) {
    return munmap(base, length);
}

static int unmap_sysv(void *base, size_t length) {
    (void)length;
    return shmdt(base);
}

static int check_options(const rs_options *o) {
    if (o->mode > 0777)
        return rs__fail(RS_INVALID, "mode must be permission bits (at most 0777), not %#o",
                        o->mode);
    if (!(o->recovery_interval > 0) || o->recovery_interval > 60)
        return rs__fail(RS_INVALID, "recovery_interval must be in (0, 60] seconds");
    if (!(o->spin >= 0) || o->spin > 1e6)
        return rs__fail(RS_INVALID, "spin must be in [0, 1e6] microseconds");
    return 0;
}

/* The capacity as made: a power of two, at least RS_MIN_CAPACITY. */
static int round_capacity(uint64_t capacity, uint64_t *out) {
    uint64_t c = RS_MIN_CAPACITY;
    if (capacity == 0 || capacity > RS_MAX_CAPACITY)
        return rs__fail(RS_INVALID, "capacity must be in [1, %llu], not %llu",
                        (unsigned long long)RS_MAX_CAPACITY, (unsigned long long)capacity);
    while (c < capacity)
        c <<= 1;
    *out = c;
    return 0;
}

/* What every create starts with: the defaults for NULL options, the
 * options checked, the capacity rounded. */
static int creating(const rs_options **options, rs_options *defaults, uint64_t capacity,
                    uint64_t *cap) {
    int rc;
    if (*options == NULL) {
        rs_options_init(defaults);
        *options = defaults;
    }
    if ((rc = check_options(*options)) != 0)
        return rc;
    return round_capacity(capacity, cap);
}

static int name_path(const char *name, char *path, size_t size) {
    const unsigned char *p;
    size_t n;
    if (name == NULL || name[0] == 0)
        return rs__fail(RS_INVALID, "name must not be empty");
    n = strlen(name);
    if (n > 255 - strlen(SHM_PREFIX))
        return rs__fail(RS_INVALID, "name is longer than %zu bytes", 255 - strlen(SHM_PREFIX));
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return rs__fail(RS_INVALID, "name must not be '.' or '..'");
    for (p = (const unsigned char *)name; *p; p++)
        if (*p == '/' || *p < 0x20 || *p == 0x7f)
            return rs__fail(RS_INVALID, "name must not contain '/' or control characters");
    snprintf(path, size, SHM_DIR SHM_PREFIX "%s", name);
    return 0;
}

/* Refuse what we must not map: not a regular file, or another user's. */
static int refuse(const struct stat *st, int any_owner, const char *label) {
    if (!S_ISREG(st->st_mode))
        return rs__fail(RS_PERMISSION, "%s is not a regular file", label);
    if (!any_owner && st->st_uid != geteuid())
        return rs__fail(RS_PERMISSION, "%s belongs to uid %u, not to this process's uid %u "
                        "(any_owner allows it)", label, (unsigned)st->st_uid,
                        (unsigned)geteuid());
    return 0;
}

static int open_existing(const char *path, int any_owner, int *fd_out) {
    struct stat st;
    int rc, fd = open(path, ATTACH_FLAGS);
    if (fd < 0) {
        if (errno == ENOENT)
            return rs__fail(RS_NOT_FOUND, "%s: no such ring", path);
        if (errno == ELOOP)
            return rs__fail(RS_PERMISSION, "%s: refusing to follow a symbolic link", path);
        if (errno == EACCES || errno == EPERM)
            return rs__fail(RS_PERMISSION, "%s: permission denied", path);
        /* A directory (EISDIR) or a socket (ENXIO) is not a regular file:
         * RS_PERMISSION, as ringshm.h says and as refuse() answers for a
         * FIFO (this said RS_CORRUPTED, so the answer depended on which
         * kind of non-regular file it was). */
        if (errno == EISDIR || errno == ENXIO)
            return rs__fail(RS_PERMISSION, "%s is not a regular file", path);
        return rs__errno(path);
    }
    if (fstat(fd, &st) != 0)
        rc = rs__errno(path);
    else
        rc = refuse(&st, any_owner, path);
    if (rc != 0) {
        close(fd);
        return rc;
    }
    *fd_out = fd;
    return 0;
}

static int allocate(int fd, uint64_t size, int reserve, const char *label) {
    struct statvfs vfs;
    int e;
    if (!reserve)
        return ftruncate(fd, (off_t)size) == 0 ? 0 : rs__errno(label);
    if (fstatvfs(fd, &vfs) == 0 && vfs.f_blocks != 0
            && (uint64_t)vfs.f_bavail * vfs.f_frsize < size)
        return rs__fail(RS_NO_SPACE, "%s: %llu bytes needed, %llu free", label,
                        (unsigned long long)size,
                        (unsigned long long)vfs.f_bavail * vfs.f_frsize);
    e = posix_fallocate(fd, 0, (off_t)size);
    if (e == ENOSPC || e == EDQUOT || e == EFBIG)
        return rs__fail(RS_NO_SPACE, "%s: %llu bytes needed: %s", label,
                        (unsigned long long)size, strerror(e));
    if (e != 0) {
        errno = e;
        return rs__errno(label);
    }
    return 0;
}

/* A handle over a mapping made here: it owns the mapping and the presence. */
static int own(void *base, size_t length, rs_unmap_fn unmap, rs_presence *presence,
               rs_ring **out) {
    int rc = rs__attach(base, length, presence, out);
    if (rc != 0) {
        unmap(base, length);
        rs_presence_release(presence);
        return rc;
    }
    (*out)->map_base = base;
    (*out)->unmap = unmap;
    (*out)->owns_presence = 1;
    return 0;
}

/* Write the header of storage this process made and claimed. */
static const rs__shape RING_SHAPE = {0, 0};

static uint64_t header_size_of(const rs__shape *shape) {
    return shape->topic ? rs__topic_header_size(shape->history) : RS_HEADER_SIZE;
}

static int initialize(void *base, uint64_t capacity, const rs_options *o,
                      const rs_liveness_id *liveness, const rs__shape *shape) {
    unsigned char identity[16];
    int rc = rs__random_identity(identity);
    if (rc != 0)
        return rc;
    if (shape->topic)
        rs__init_topic_header(base, capacity, o->recovery_interval, o->spin, !o->persist,
                              liveness, identity, shape->history);
    else
        rs__init_header(base, capacity, o->recovery_interval, o->spin, o->max_messages,
                        !o->persist, liveness, identity);
    return 0;
}

static int validate_as(const void *base, size_t length, int exact,
                       const rs_liveness_id *liveness, const rs__shape *shape) {
    return shape->topic ? rs__validate_topic(base, length, exact, liveness)
                        : rs__validate(base, length, exact, liveness);
}

static int map_fd(int fd, size_t size, void **base, const char *label) {
    *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (*base == MAP_FAILED)
        return rs__errno(label);
    return 0;
}

/* Attach to the ring in the file open as `fd` (validated; the creator may
 * still be writing its header: give it a moment). */
static int attach_file(int fd, const char *label, const rs__shape *shape, rs_ring **out) {
    struct stat st;
    int64_t give_up = rs__now() + CREATOR_GRACE_NS;
    struct timespec pause = {0, 5000000};
    rs_presence *presence;
    void *base;
    int rc;
    for (;;) {
        if (fstat(fd, &st) != 0)
            return rs__errno(label);
        if ((uint64_t)st.st_size >= RS_HEADER_SIZE) {
            if ((rc = map_fd(fd, (size_t)st.st_size, &base, label)) != 0)
                return rc;
            if (rs__magic_present(base) || rs__now() > give_up)
                break;
            munmap(base, (size_t)st.st_size);
        } else if (rs__now() > give_up) {
            return rs__fail(RS_CORRUPTED, "%s: segment is truncated: %lld bytes, less than "
                            "one header (%u)", label, (long long)st.st_size, RS_HEADER_SIZE);
        }
        nanosleep(&pause, NULL);
    }
    rc = validate_as(base, (size_t)st.st_size, 1, NULL, shape);
    if (rc == 0 && (presence = rs_presence_attach(fd)) == NULL)
        rc = rs__errno("cannot open the ring's file again for its lock slots");
    if (rc != 0) {
        munmap(base, (size_t)st.st_size);
        return rc;
    }
    return own(base, (size_t)st.st_size, unmap_file, presence, out);
}

/* Size, map and write the header of the new file open as `fd`, and make a
 * handle that owns the mapping and the presence.  The caller closes `fd`
 * (the presence has its own) and removes the file on failure. */
static int make_fresh(int fd, uint64_t cap, const rs_options *options, const char *label,
                      const rs__shape *shape, rs_ring **out) {
    uint64_t size = header_size_of(shape) + cap;
    rs_presence *presence;
    void *base = NULL;
    int rc = allocate(fd, size, options->reserve, label);
    if (rc == 0)
        rc = map_fd(fd, size, &base, label);
    if (rc != 0)
        return rc;
    if ((presence = rs_presence_attach(fd)) == NULL) {
        rc = rs__errno("cannot open the ring's file again for its lock slots");
        munmap(base, size);
        return rc;
    }
    if ((rc = initialize(base, cap, options, NULL, shape)) != 0) {
        munmap(base, size);
        rs_presence_release(presence);
        return rc;
    }
    return own(base, size, unmap_file, presence, out);
}

static int create_file(const char *path, uint64_t capacity, const rs_options *options,
                       const rs__shape *shape, rs_ring **out) {
    rs_options defaults;
    uint64_t cap = 0;
    int rc, fd;
    if ((rc = creating(&options, &defaults, capacity, &cap)) != 0)
        return rc;
    fd = open(path, CREATE_FLAGS, options->mode);
    if (fd < 0) {
        if (errno == EEXIST && options->exist_ok) {
            if ((rc = open_existing(path, options->any_owner, &fd)) != 0)
                return rc;
            rc = attach_file(fd, path, shape, out);
            close(fd);
            return rc;
        }
        if (errno == EEXIST)
            return rs__fail(RS_EXISTS, "%s: the ring exists", path);
        if (errno == EACCES || errno == EPERM || errno == ELOOP)
            return rs__fail(RS_PERMISSION, "%s: %s", path, strerror(errno));
        return rs__errno(path);
    }
    if (fchmod(fd, options->mode) != 0)
        rc = rs__errno(path);
    if (rc == 0)
        rc = make_fresh(fd, cap, options, path, shape, out);
    close(fd);
    if (rc != 0) {
        unlink(path);
        return rc;
    }
    if (rc == 0 && !options->persist && ((*out)->unlink_path = strdup(path)) == NULL) {
        rs_close(*out);
        unlink(path);
        return rs__fail(-ENOMEM, "out of memory");
    }
    return rc;
}

int rs__create_name_as(const char *name, uint64_t capacity, const rs_options *options,
                       const rs__shape *shape, rs_ring **out) {
    char path[300];
    int rc = name_path(name, path, sizeof(path));
    return rc != 0 ? rc : create_file(path, capacity, options, shape, out);
}

int rs_create_name(const char *name, uint64_t capacity, const rs_options *options,
                   rs_ring **out) {
    return rs__create_name_as(name, capacity, options, &RING_SHAPE, out);
}

int rs__create_path_as(const char *path, uint64_t capacity, const rs_options *options,
                       const rs__shape *shape, rs_ring **out) {
    if (path == NULL || path[0] == 0)
        return rs__fail(RS_INVALID, "path must not be empty");
    return create_file(path, capacity, options, shape, out);
}

int rs_create_path(const char *path, uint64_t capacity, const rs_options *options,
                   rs_ring **out) {
    return rs__create_path_as(path, capacity, options, &RING_SHAPE, out);
}

static int open_file(const char *path, const rs_options *options, const rs__shape *shape,
                     rs_ring **out) {
    int fd, rc = open_existing(path, options != NULL && options->any_owner, &fd);
    if (rc != 0)
        return rc;
    rc = attach_file(fd, path, shape, out);
    close(fd);
    return rc;
}

int rs__open_name_as(const char *name, const rs_options *options, const rs__shape *shape,
                     rs_ring **out) {
    char path[300];
    int rc = name_path(name, path, sizeof(path));
    return rc != 0 ? rc : open_file(path, options, shape, out);
}

int rs_open_name(const char *name, const rs_options *options, rs_ring **out) {
    return rs__open_name_as(name, options, &RING_SHAPE, out);
}

int rs__open_path_as(const char *path, const rs_options *options, const rs__shape *shape,
                     rs_ring **out) {
    if (path == NULL || path[0] == 0)
        return rs__fail(RS_INVALID, "path must not be empty");
    return open_file(path, options, shape, out);
}

int rs_open_path(const char *path, const rs_options *options, rs_ring **out) {
    return rs__open_path_as(path, options, &RING_SHAPE, out);
}

int rs_unlink_name(const char *name) {
    char path[300];
    int rc = name_path(name, path, sizeof(path));
    if (rc != 0)
        return rc;
    return rs_unlink_path(path);
}

int rs_unlink_path(const char *path) {
    if (unlink(path) != 0)
        return errno == ENOENT ? rs__fail(RS_NOT_FOUND, "%s: no such ring", path)
                               : rs__errno(path);
    return 0;
}

int rs__anonymous_as(uint64_t capacity, const rs_options *options, const rs__shape *shape,
                     rs_ring **out) {
    rs_options defaults;
    uint64_t cap = 0;
    int rc, fd;
    if ((rc = creating(&options, &defaults, capacity, &cap)) != 0)
        return rc;
    fd = memfd_create("ringshm", MFD_CLOEXEC);
    if (fd < 0)
        return rs__errno("memfd_create");
    rc = make_fresh(fd, cap, options, "an anonymous ring", shape, out);
    close(fd);
    return rc;
}

int rs_anonymous(uint64_t capacity, const rs_options *options, rs_ring **out) {
    return rs__anonymous_as(capacity, options, &RING_SHAPE, out);
}

/* ---- System V ------------------------------------------------------------ */

static int sysv_attach(int shmid, size_t size, int companion, int exact_new, rs_ring **out,
                       uint64_t cap, const rs_options *o) {
    struct stat st;
    rs_liveness_id id;
    rs_presence *presence;
    void *base = shmat(shmid, NULL, 0);
    int rc = 0;
    if (base == (void *)-1)
        return rs__errno("shmat");
    if (fstat(companion, &st) != 0) {
        rc = rs__errno("the lock file of the System V ring");
    } else {
        id.dev = (uint64_t)st.st_dev;
        id.ino = (uint64_t)st.st_ino;
        if (exact_new) {
            rc = initialize(base, cap, o, &id, &RING_SHAPE);
        } else {
            /* A creator between its lock file and its header: give it the
             * grace attach_file gives one (a blank segment stays blank). */
            int64_t give_up = rs__now() + CREATOR_GRACE_NS;
            struct timespec pause = {0, 5000000};
            while (!rs__magic_present(base) && rs__now() < give_up)
                nanosleep(&pause, NULL);
            rc = rs__validate(base, size, 0, &id);
        }
    }
    if (rc == 0 && (presence = rs_presence_attach(companion)) == NULL)
        rc = rs__errno("cannot open the lock file again for its lock slots");
    if (rc != 0) {
        shmdt(base);
        return rc;
    }
    return own(base, size, unmap_sysv, presence, out);
}

int rs_create_sysv(int key, uint64_t capacity, const rs_options *options, rs_ring **out) {
    rs_options defaults;
    char companion_path[64];
    uint64_t cap = 0, size;
    int rc, shmid, companion;
    if ((rc = creating(&options, &defaults, capacity, &cap)) != 0)
        return rc;
    if (options->exist_ok)
        return rs__fail(RS_INVALID, "exist_ok is not supported for System V rings in C: "
                        "rs_open_sysv, then rs_create_sysv when RS_NOT_FOUND");
    size = RS_HEADER_SIZE + cap;
    shmid = shmget((key_t)key, size, IPC_CREAT | IPC_EXCL | (int)options->mode
                   | (options->reserve ? 0 : SHM_NORESERVE));
    if (shmid < 0) {
        if (errno == EEXIST)
            return rs__fail(RS_EXISTS, "System V key 0x%08x: the segment exists", (unsigned)key);
        if (errno == ENOMEM || errno == ENOSPC)
            return rs__fail(RS_NO_SPACE, "System V key 0x%08x: %llu bytes: %s", (unsigned)key,
                            (unsigned long long)size, strerror(errno));
        return rs__errno("shmget");
    }
    snprintf(companion_path, sizeof(companion_path), SYSV_COMPANION, (unsigned)key);
    /* A companion already there is a dead ring's: its segment is gone, the
     * key was free. */
    companion = open(companion_path, CREATE_FLAGS, options->mode & 0666);
    if (companion < 0 && errno == EEXIST && unlink(companion_path) == 0)
        companion = open(companion_path, CREATE_FLAGS, options->mode & 0666);
    if (companion < 0) {
        rc = rs__errno(companion_path);
        shmctl(shmid, IPC_RMID, NULL);
        return rc;
    }
    fchmod(companion, options->mode & 0666);
    rc = sysv_attach(shmid, size, companion, 1, out, cap, options);
    close(companion);
    if (rc != 0) {
        shmctl(shmid, IPC_RMID, NULL);
        unlink(companion_path);
        return rc;
    }
    if (!options->persist) {
        (*out)->unlink_sysv_id = shmid;
        (*out)->unlink_path = strdup(companion_path);
    }
    return 0;
}

int rs_open_sysv(int key, const rs_options *options, rs_ring **out) {
    char companion_path[64];
    struct shmid_ds ds;
    int rc, shmid, companion;
    int any_owner = options != NULL && options->any_owner;
    int64_t give_up = rs__now() + CREATOR_GRACE_NS;
    struct timespec pause = {0, 5000000};
again:
    shmid = shmget((key_t)key, 0, 0);
    if (shmid < 0) {
        if (errno == ENOENT)
            return rs__fail(RS_NOT_FOUND, "System V key 0x%08x: no such segment", (unsigned)key);
        if (errno == EACCES)
            return rs__fail(RS_PERMISSION, "System V key 0x%08x: permission denied",
                            (unsigned)key);
        return rs__errno("shmget");
    }
    if (shmctl(shmid, IPC_STAT, &ds) != 0)
        return rs__errno("shmctl IPC_STAT");
    if (!any_owner && (ds.shm_perm.uid != geteuid() || ds.shm_perm.cuid != geteuid()))
        return rs__fail(RS_PERMISSION, "System V key 0x%08x belongs to uid %u, not to this "
                        "process's uid %u", (unsigned)key, (unsigned)ds.shm_perm.uid,
                        (unsigned)geteuid());
    snprintf(companion_path, sizeof(companion_path), SYSV_COMPANION, (unsigned)key);
    rc = open_existing(companion_path, any_owner, &companion);
    if (rc == RS_NOT_FOUND && rs__now() < give_up) {
        /* rs_create_sysv makes the segment, then its lock file: wait for a
         * creator in between (its segment goes if its create fails). */
        nanosleep(&pause, NULL);
        goto again;
    }
    if (rc != 0)
        return rc == RS_NOT_FOUND ? rs__fail(RS_CORRUPTED, "System V key 0x%08x: its lock file "
                                             "%s is missing", (unsigned)key, companion_path)
                                  : rc;
    rc = sysv_attach(shmid, ds.shm_segsz, companion, 0, out, 0, NULL);
    close(companion);
    return rc;
}

int rs_unlink_sysv(int key) {
    char companion_path[64];
    int shmid = shmget((key_t)key, 0, 0);
    if (shmid < 0)
        return errno == ENOENT ? rs__fail(RS_NOT_FOUND, "System V key 0x%08x: no such segment",
                                          (unsigned)key)
                               : rs__errno("shmget");
    if (shmctl(shmid, IPC_RMID, NULL) != 0)
        return rs__errno("shmctl IPC_RMID");
    snprintf(companion_path, sizeof(companion_path), SYSV_COMPANION, (unsigned)key);
    unlink(companion_path);
    return 0;
}
