# C declarations of the binding: libringshm (its public header ringshm.h
# and the entry points internal.h gives bindings), and the few libc calls
# the mapping and System V units make.  No logic here.

from libc.stdint cimport uint32_t, uint64_t, int64_t


cdef extern from "<sys/uio.h>" nogil:
    cdef struct iovec:
        void *iov_base
        size_t iov_len


cdef extern from "<sys/mman.h>" nogil:
    void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset)
    int munmap(void *addr, size_t length)
    int PROT_READ
    int PROT_WRITE
    int MAP_SHARED
    void *MAP_FAILED


cdef extern from "<sys/shm.h>" nogil:
    # System V shared memory (the sysv_key backing, _sysv.pxi).
    ctypedef int key_t
    cdef struct ipc_perm:
        unsigned int uid
        unsigned int gid
        unsigned int cuid
        unsigned int mode
    cdef struct shmid_ds:
        ipc_perm shm_perm
        size_t shm_segsz
        int shm_cpid
        unsigned long shm_nattch
    int shmget(key_t key, size_t size, int flags)
    void *shmat(int shmid, const void *address, int flags)
    int shmdt(const void *address)
    int shmctl(int shmid, int command, shmid_ds *buf)
    int IPC_CREAT
    int IPC_EXCL
    int IPC_RMID
    int IPC_STAT
    int SHM_RDONLY
    int SHM_NORESERVE
    int SHM_DEST


cdef extern from "ringshm.h" nogil:
    ctypedef struct rs_ring:
        pass

    ctypedef struct rs_span:
        void *data
        size_t len
        uint64_t _position   # reserve: the head once the record is published

    # Named rs_stats_t here: Cython has one namespace for the struct and the call.
    cdef struct rs_stats_t "rs_stats":
        uint64_t capacity, used_bytes, messages
        uint64_t messages_put, bytes_put, messages_got, bytes_got
        uint64_t put_waits, get_waits, put_timeouts, get_timeouts, lock_recoveries
        int64_t creator_pid
        int creator_alive, shutdown, ephemeral
        uint32_t version
        uint64_t max_messages
        double recovery_interval, spin, created
        uint64_t head, tail
        uint64_t bridge_sent, bridge_acked, bridge_received, bridge_redelivered, bridge_put

    ctypedef int (*rs_interrupt_fn)(void *arg) noexcept nogil

    int RS_OK, RS_FULL, RS_EMPTY, RS_SHUTDOWN, RS_TOO_LARGE, RS_CLOSED, RS_CORRUPTED
    int RS_PERMISSION, RS_NOT_FOUND, RS_EXISTS, RS_NO_SPACE, RS_INVALID, RS_DEADLOCK
    int RS_NOT_OWNER, RS_NO_SLOT, RS_INTERRUPTED, RS_BUSY, RS_LAGGED, RS_WRONG_KIND
    int64_t RS_FOREVER
    int RS_LAYOUT_VERSION

    int rs_close(rs_ring *r)
    void rs_hold(rs_ring *r)
    void rs_unhold(rs_ring *r)
    int rs_commit(rs_ring *r, rs_span *span)
    int rs_cancel(rs_ring *r, rs_span *span)
    int rs_release(rs_ring *r, rs_span *span)
    int rs_keep(rs_ring *r, rs_span *span)
    int rs_view_next(rs_ring *r, rs_span *span)
    void rs_rewind(rs_ring *r, rs_span *span)
    int rs_shutdown(rs_ring *r, int flags)
    int rs_is_shutdown(rs_ring *r)
    int rs_stats(rs_ring *r, rs_stats_t *out)
    int64_t rs_count(rs_ring *r)
    int rs_full(rs_ring *r)
    uint64_t rs_capacity(const rs_ring *r)
    uint64_t rs_max_message_size(const rs_ring *r)
    int rs_wait_data(rs_ring *r, int64_t timeout_ns)
    int rs_wait_room(rs_ring *r, size_t len, int64_t timeout_ns)
    uint64_t rs_unfinished_tasks(rs_ring *r)
    int rs_task_done(rs_ring *r, uint64_t count)
    int rs_wait_joined(rs_ring *r, int64_t timeout_ns)
    void rs_set_interrupt(rs_ring *r, rs_interrupt_fn hook, void *arg)
    int RS_POKED
    # A topic's subscription (the topic calls are below): rs_waiter.sub.
    ctypedef struct rs_sub:
        pass
    unsigned RS_WAIT_DATA, RS_WAIT_ROOM, RS_WAIT_SHUTDOWN, RS_WAIT_CLOSED
    ctypedef struct rs_waiter:
        rs_ring *ring
        unsigned events
        size_t room
        unsigned ready
        rs_sub *sub
    ctypedef struct rs_poke:
        uint32_t word
    void rs_poke_init(rs_poke *poke)
    uint32_t rs_poke_seen(const rs_poke *poke)
    void rs_poke_send(rs_poke *poke)
    int rs_wait(rs_waiter *items, size_t count, const rs_poke *poke, uint32_t poke_seen,
                int64_t timeout_ns)
    int rs_wait_uses_futex_waitv()
    const char *rs_strerror(int code)
    const char *rs_detail()

    # Topics (publish/subscribe, _topic.pxi).  The binding makes and
    # attaches their segments itself (as a ring's), so it has their handle
    # as an rs_ring *; topic.c's rs_topic * is that same handle.
    ctypedef struct rs_topic:
        pass
    unsigned RS_SUB_UNTETHERED
    unsigned RS_TOPIC_MAX_SUBSCRIBERS
    unsigned RS_TOPIC_MAX_HISTORY
    unsigned RS_SUB_INFO_TETHERED, RS_SUB_INFO_STALLED, RS_SUB_INFO_ALIVE
    ctypedef struct rs_sub_info:
        uint32_t index
        uint32_t flags
        int64_t pid
        uint64_t position, lag_bytes, lag_messages
        uint64_t messages, bytes, missed, lags
        double stall_timeout, since
    cdef struct rs_topic_stats_t "rs_topic_stats":
        uint64_t capacity, used_bytes, history
        uint64_t published, bytes_published
        uint64_t overwritten
        uint64_t publish_waits, publish_timeouts, lock_recoveries
        uint64_t subscribers, tethered, subscribed, stalls, reaped, scans
        uint64_t head, tail
        int64_t creator_pid
        int creator_alive, shutdown, ephemeral
        double recovery_interval, created
    int rs_topic_publish(rs_topic *t, const void *data, size_t len, int64_t timeout_ns)
    int rs_topic_publish_many(rs_topic *t, const iovec *messages, size_t count,
                              int64_t timeout_ns)
    int rs_topic_reserve(rs_topic *t, size_t len, rs_span *span, int64_t timeout_ns)
    int rs_topic_commit(rs_topic *t, rs_span *span)
    int rs_topic_cancel(rs_topic *t, rs_span *span)
    int rs_topic_shutdown(rs_topic *t)
    int rs_topic_is_shutdown(rs_topic *t)
    int rs_topic_subscribe(rs_topic *t, unsigned flags, double stall_timeout,
                           int64_t timeout_ns, rs_sub **out)
    int rs_sub_get(rs_sub *s, void *out, size_t out_cap, size_t *out_len, int64_t timeout_ns)
    int rs_sub_get_many(rs_sub *s, void *out, size_t out_cap, size_t *lengths,
                        size_t max_messages, int64_t timeout_ns)
    int rs_sub_view(rs_sub *s, rs_span *span, int64_t timeout_ns)
    int rs_sub_release(rs_sub *s, rs_span *span)
    int rs_sub_keep(rs_sub *s, rs_span *span)
    int rs_sub_wait(rs_sub *s, int64_t timeout_ns)
    uint64_t rs_sub_missed(rs_sub *s)
    uint64_t rs_sub_lag(rs_sub *s)
    int rs_sub_tethered(rs_sub *s)
    int rs_sub_close(rs_sub *s)
    int rs_topic_stats(rs_topic *t, rs_topic_stats_t *out)
    int rs_topic_subscribers(rs_topic *t, rs_sub_info *out, size_t cap)


cdef extern from "internal.h" nogil:
    int RS__AGAIN
    int RS__TRY
    int RS__BRIEF
    int RS__HELD
    uint64_t RS_HEADER_SIZE "RS_HEADER_SIZE"
    uint32_t RS_RECORD_HEADER
    unsigned long long RS_MIN_CAPACITY
    unsigned long long RS_MAX_CAPACITY
    unsigned long long RS_MAX_PAYLOAD

    ctypedef struct rs_presence:
        uint64_t dev
        uint64_t ino
    ctypedef struct rs_liveness_id:
        uint64_t dev
        uint64_t ino

    rs_presence *rs_presence_attach(int fd)
    void rs_presence_release(rs_presence *p)

    void rs__abandon(rs_ring *r)
    int rs__attach(void *base, size_t length, rs_presence *presence, rs_ring **out)
    int rs__claim_blank(void *base, size_t length, int whole)
    int rs__magic_present(const void *base)
    void rs__init_header(void *base, uint64_t capacity, double recovery_interval, double spin,
                         uint64_t max_messages, int ephemeral, const rs_liveness_id *liveness,
                         const unsigned char *identity)
    int rs__validate(const void *base, size_t mapped_length, int exact,
                     const rs_liveness_id *liveness)
    void rs__init_topic_header(void *base, uint64_t capacity, double recovery_interval,
                               double spin, int ephemeral, const rs_liveness_id *liveness,
                               const unsigned char *identity, uint32_t history)
    int rs__validate_topic(const void *base, size_t mapped_length, int exact,
                           const rs_liveness_id *liveness)
    int rs__segment_kind(const void *base)
    uint64_t rs__topic_header_size(uint32_t history)
    void rs__sub_hold(rs_sub *s)
    void rs__sub_unhold(rs_sub *s)
    int rs__random_identity(unsigned char *identity)
    void rs__register_atfork()

    int rs__reserve(rs_ring *r, size_t len, rs_span *span, int64_t deadline, int flags)
    int rs__put_many(rs_ring *r, const iovec *messages, size_t count, uint64_t tag,
                     int64_t deadline)
    int rs__view(rs_ring *r, rs_span *span, int64_t deadline, int flags)
    int rs__window(rs_ring *r, rs_span *span, int64_t deadline, uint64_t *consumed)
    int rs__window_close(rs_ring *r, rs_span *span)
    int rs__last_tag(rs_ring *r, int64_t deadline, uint64_t *tag)
    int rs__token(rs_ring *r, uint64_t *token)
    void rs__identity(rs_ring *r, unsigned char *identity)
    int rs__bridge_add(rs_ring *r, unsigned index, uint64_t n)
    void rs__lock_owners(rs_ring *r, int64_t *put_owner, int64_t *get_owner)
    uint64_t rs__proc_start_time(int pid, char *state)
    int rs__process_alive(int pid, uint64_t start_time)


cdef extern from "Python.h":
    # Declared here without Cython's `except -1`: the interrupt hook runs in
    # a noexcept nogil wait, where the status must come back to the library
    # with the exception left set, not be reported as unraisable.
    int PyErr_CheckSignals() noexcept
