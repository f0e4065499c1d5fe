/* Where rings live: a POSIX name, a path, an anonymous mapping shared with
 * a forked child, a System V key.  Create and open, exist_ok, persist (the
 * name stays after rs_close) or not (it goes), the mode of a new segment,
 * the refusals (a symbolic link, a FIFO, a directory, a file that is not a
 * ring) and, as root, the owner rule in a child that becomes nobody.
 * Everything made here has a ctest-PID name (or a random key) and is
 * removed, also when a check fails (atexit). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "ringshm.h"

#define SEC 1000000000LL

static char name[64], dir[64];
static int sysv_key;
static pid_t parent_pid;

static void cleanup(void) {
    char path[160];
    const char *files[] = {"ring", "link", "fifo", "sub", "junk", "short"};
    size_t i;
    if (getpid() != parent_pid)
        return;
    if (name[0])
        rs_unlink_name(name);
    if (sysv_key != 0)
        rs_unlink_sysv(sysv_key);
    if (dir[0]) {
        for (i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
            snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
            if (strcmp(files[i], "sub") == 0)
                rmdir(path);
            else
                unlink(path);
        }
        rmdir(dir);
    }
}

static int exists(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

static void roundtrip(rs_ring *a, rs_ring *b, const char *text) {
    char buf[64];
    size_t len;
    CHECK_RC(rs_put(a, text, strlen(text), 0));
    CHECK_RC(rs_get(b, buf, sizeof(buf), &len, 0));
    CHECK(len == strlen(text) && memcmp(buf, text, len) == 0);
}

static void test_name(void) {
    rs_ring *a, *b;
    rs_options o;
    struct rs_stats st;
    struct stat fst;
    char path[128];

    snprintf(name, sizeof(name), "ctest-backings-%d", (int)getpid());
    snprintf(path, sizeof(path), "/dev/shm/ringshm.%s", name);
    rs_options_init(&o);
    o.mode = 0640;
    CHECK(rs_open_name(name, NULL, &a) == RS_NOT_FOUND);
    CHECK_RC(rs_create_name(name, 5000, &o, &a));
    CHECK(rs_capacity(a) == 8192);
    CHECK(stat(path, &fst) == 0 && (fst.st_mode & 0777) == 0640);
    CHECK(fst.st_size == 4096 + 8192);
    CHECK(rs_create_name(name, 5000, &o, &b) == RS_EXISTS);
    CHECK_RC(rs_open_name(name, NULL, &b));
    roundtrip(a, b, "by name");
    /* exist_ok: the ring as it is, whatever capacity is asked. */
    o.exist_ok = 1;
    rs_close(b);
    CHECK_RC(rs_create_name(name, 100000, &o, &b));
    CHECK(rs_capacity(b) == 8192);
    roundtrip(b, a, "exist_ok");
    CHECK_RC(rs_stats(a, &st));
    CHECK(st.ephemeral == 1);
    /* Without persist the creator's close takes the name (not another
     * handle's close, not the exist_ok one's). */
    CHECK_RC(rs_close(b));
    CHECK(exists(path));
    CHECK_RC(rs_close(a));
    CHECK(!exists(path));

    /* persist: the name outlives the handles until unlinked. */
    rs_options_init(&o);
    o.persist = 1;
    CHECK_RC(rs_create_name(name, 4096, &o, &a));
    CHECK_RC(rs_put(a, "kept", 4, 0));
    CHECK_RC(rs_stats(a, &st));
    CHECK(st.ephemeral == 0);
    CHECK_RC(rs_close(a));
    CHECK(exists(path));
    CHECK_RC(rs_open_name(name, NULL, &a));
    CHECK(rs_count(a) == 1);
    CHECK_RC(rs_close(a));
    CHECK_RC(rs_unlink_name(name));
    CHECK(rs_unlink_name(name) == RS_NOT_FOUND);
    CHECK(rs_open_name(name, NULL, &a) == RS_NOT_FOUND);

    CHECK(rs_create_name("", 4096, NULL, &a) == RS_INVALID);
    CHECK(rs_create_name("..", 4096, NULL, &a) == RS_INVALID);
    CHECK(rs_create_name(name, 0, NULL, &a) == RS_INVALID);
    printf("name: ok\n");
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * SEC + ts.tv_nsec;
}

static void test_path(void) {
    rs_ring *a, *b;
    rs_options o;
    char ring[128], link_path[128], fifo[128], sub[128], junk[128];
    char bytes[8192];
    int64_t started;
    int fd;

    snprintf(dir, sizeof(dir), "/tmp/ctest-backings-%d-XXXXXX", (int)getpid());
    CHECK(mkdtemp(dir) != NULL);
    snprintf(ring, sizeof(ring), "%s/ring", dir);
    snprintf(link_path, sizeof(link_path), "%s/link", dir);
    snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
    snprintf(sub, sizeof(sub), "%s/sub", dir);
    snprintf(junk, sizeof(junk), "%s/junk", dir);

    rs_options_init(&o);
    o.persist = 1;
    CHECK_RC(rs_create_path(ring, 4096, &o, &a));
    CHECK_RC(rs_open_path(ring, NULL, &b));
    roundtrip(a, b, "by path");
    CHECK_RC(rs_close(b));

    /* A symbolic link to the ring: never followed, created over or opened. */
    CHECK(symlink(ring, link_path) == 0);
    CHECK(rs_open_path(link_path, NULL, &b) == RS_PERMISSION);
    CHECK(rs_create_path(link_path, 4096, NULL, &b) == RS_EXISTS);
    o.exist_ok = 1;
    CHECK(rs_create_path(link_path, 4096, &o, &b) == RS_PERMISSION);
    o.exist_ok = 0;

    /* Not regular files: refused at once (no creator's grace, no block on
     * the FIFO). */
    CHECK(mkfifo(fifo, 0600) == 0);
    CHECK(mkdir(sub, 0700) == 0);
    started = now_ns();
    CHECK(rs_open_path(fifo, NULL, &b) == RS_PERMISSION);
    CHECK(rs_open_path(sub, NULL, &b) == RS_PERMISSION);
    CHECK(now_ns() - started < SEC / 2);

    /* A regular file that is not a ring. */
    memset(bytes, 'j', sizeof(bytes));
    fd = open(junk, O_WRONLY | O_CREAT | O_EXCL, 0600);
    CHECK(fd >= 0 && write(fd, bytes, sizeof(bytes)) == (ssize_t)sizeof(bytes));
    close(fd);
    CHECK(rs_open_path(junk, NULL, &b) == RS_CORRUPTED);
    CHECK(strstr(rs_detail(), "magic") != NULL);

    CHECK_RC(rs_close(a));
    CHECK(exists(ring));
    CHECK_RC(rs_unlink_path(ring));
    /* Without persist: gone with the creator's close. */
    CHECK_RC(rs_create_path(ring, 4096, NULL, &a));
    CHECK_RC(rs_close(a));
    CHECK(!exists(ring));
    CHECK(rs_open_path(ring, NULL, &a) == RS_NOT_FOUND);
    printf("path: ok\n");
}

static void test_anonymous(void) {
    struct rs_stats st;
    rs_ring *r;
    char buf[64];
    size_t len;
    int status, i;
    pid_t pid;

    CHECK_RC(rs_anonymous(4096, NULL, &r));
    CHECK_RC(rs_put(r, "to the child", 12, 0));
    fflush(stdout);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int rc = rs_get(r, buf, sizeof(buf), &len, SEC);
        if (rc != 0 || len != 12 || memcmp(buf, "to the child", 12) != 0) {
            fprintf(stderr, "anonymous: child's get: %s (%s)\n", rs_strerror(rc), rs_detail());
            _exit(3);
        }
        for (i = 0; i < 100; i++) {
            snprintf(buf, sizeof(buf), "from the child %d", i);
            if ((rc = rs_put(r, buf, strlen(buf), 5 * SEC)) != 0) {
                fprintf(stderr, "anonymous: child's put: %s (%s)\n", rs_strerror(rc),
                        rs_detail());
                _exit(4);
            }
        }
        _exit(0);
    }
    /* The child takes its message first. */
    for (i = 0; i < 5000; i++) {
        CHECK_RC(rs_stats(r, &st));
        if (st.messages_got >= 1)
            break;
        usleep(1000);
    }
    CHECK(st.messages_got >= 1);
    for (i = 0; i < 100; i++) {
        CHECK_RC(rs_get(r, buf, sizeof(buf) - 1, &len, 5 * SEC));
        buf[len] = 0;
        CHECK(atoi(buf + 15) == i);
    }
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(rs_count(r) == 0);
    CHECK_RC(rs_close(r));
    printf("anonymous: ok\n");
}

static int sysv_gone(int key) {
    return shmget((key_t)key, 0, 0) < 0 && errno == ENOENT;
}

static void test_sysv(void) {
    rs_ring *a, *b;
    rs_options o;
    char companion[64];
    uint32_t random_key;

    do {
        CHECK(getrandom(&random_key, sizeof(random_key), 0) == sizeof(random_key));
        sysv_key = (int)(random_key | 0x40000000u) & 0x7fffffff;   /* never IPC_PRIVATE */
    } while (!sysv_gone(sysv_key));
    snprintf(companion, sizeof(companion), "/dev/shm/ringshm-sysv.0x%08x", (unsigned)sysv_key);

    CHECK(rs_open_sysv(sysv_key, NULL, &a) == RS_NOT_FOUND);
    rs_options_init(&o);
    o.persist = 1;
    CHECK_RC(rs_create_sysv(sysv_key, 4096, &o, &a));
    CHECK(exists(companion));
    CHECK(rs_create_sysv(sysv_key, 4096, &o, &b) == RS_EXISTS);
    CHECK_RC(rs_open_sysv(sysv_key, NULL, &b));
    roundtrip(a, b, "by key");
    roundtrip(b, a, "and back");
    CHECK_RC(rs_close(a));
    CHECK_RC(rs_close(b));
    CHECK(!sysv_gone(sysv_key) && exists(companion));
    CHECK_RC(rs_open_sysv(sysv_key, NULL, &a));
    CHECK_RC(rs_close(a));
    CHECK_RC(rs_unlink_sysv(sysv_key));
    CHECK(sysv_gone(sysv_key) && !exists(companion));
    CHECK(rs_unlink_sysv(sysv_key) == RS_NOT_FOUND);

    /* Without persist: the creator's close removes the segment and its
     * companion; a second handle keeps working meanwhile. */
    CHECK_RC(rs_create_sysv(sysv_key, 4096, NULL, &a));
    CHECK_RC(rs_open_sysv(sysv_key, NULL, &b));
    CHECK_RC(rs_close(a));
    CHECK(sysv_gone(sysv_key) && !exists(companion));
    roundtrip(b, b, "still mapped");
    CHECK_RC(rs_close(b));
    sysv_key = 0;
    printf("sysv: ok\n");
}

/* As root: a child that becomes nobody may not open root's ring even when
 * its mode lets it (the owner rule), unless any_owner. */
static void test_owner_rule(void) {
    rs_ring *r, *other;
    rs_options o;
    int status, key;
    pid_t pid;

    if (geteuid() != 0) {
        printf("owner rule: skipped (not root)\n");
        return;
    }
    rs_options_init(&o);
    o.mode = 0666;
    o.persist = 0;
    snprintf(name, sizeof(name), "ctest-backings-owner-%d", (int)getpid());
    CHECK_RC(rs_create_name(name, 4096, &o, &r));
    key = 0;
    {
        uint32_t random_key;
        do {
            CHECK(getrandom(&random_key, sizeof(random_key), 0) == sizeof(random_key));
            key = (int)(random_key | 0x40000000u) & 0x7fffffff;
        } while (!sysv_gone(key));
        sysv_key = key;
    }
    CHECK_RC(rs_create_sysv(key, 4096, &o, &other));
    fflush(stdout);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        rs_ring *mine;
        rs_options any;
        if (setgid(65534) != 0 || setuid(65534) != 0)
            _exit(2);
        if (rs_open_name(name, NULL, &mine) != RS_PERMISSION)
            _exit(3);
        if (rs_open_sysv(key, NULL, &mine) != RS_PERMISSION)
            _exit(4);
        rs_options_init(&any);
        any.any_owner = 1;
        if (rs_open_name(name, &any, &mine) != 0)
            _exit(5);
        if (rs_put(mine, "nobody", 6, SEC) != 0)
            _exit(6);
        rs_close(mine);
        if (rs_open_sysv(key, &any, &mine) != 0)
            _exit(7);
        rs_close(mine);
        _exit(0);
    }
    CHECK(waitpid(pid, &status, 0) == pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "owner rule: the child as nobody failed at step %d\n",
                WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        exit(1);
    }
    CHECK(rs_count(r) == 1);
    CHECK_RC(rs_close(r));
    CHECK_RC(rs_close(other));
    name[0] = 0;
    sysv_key = 0;
    printf("owner rule: ok\n");
}

int main(void) {
    parent_pid = getpid();
    atexit(cleanup);
    test_name();
    test_path();
    test_anonymous();
    test_sysv();
    test_owner_rule();
    printf("test_backings: ok\n");
    return 0;
}
