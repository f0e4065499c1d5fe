# C declarations for the core (logic lives in _ring.pyx and its units).

from libc.stdint cimport uint32_t, uint64_t, int64_t


# Status codes of the C layer; RingCore._raise() maps them to exceptions.
cdef enum:
    RS_OK = 0
    RS_TIMEOUT = 1      # Full for a producer, Empty for a consumer
    RS_SHUTDOWN = 2
    RS_CORRUPT = 3      # RingCore.corruption says what
    RS_PYERR = 4        # a Python exception is set (a signal handler raised)
    RS_CLOSED = 5       # another thread closed this object while we waited


cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    cdef struct timespec:
        time_t tv_sec
        long tv_nsec
    ctypedef int clockid_t
    int CLOCK_MONOTONIC
    int CLOCK_REALTIME
    int clock_gettime(clockid_t clk, timespec *ts)
    int nanosleep(const timespec *req, timespec *rem)


cdef extern from "<signal.h>" nogil:
    int kill(int pid, int sig)


cdef extern from "<unistd.h>" nogil:
    int getpid()


cdef extern from "<pthread.h>" nogil:
    int pthread_atfork(void (*prepare)() noexcept nogil,
                       void (*parent)() noexcept nogil,
                       void (*child)() noexcept nogil)


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


cdef extern from "atomic.h" nogil:
    uint64_t rs_load_relaxed(const uint64_t *p)
    uint64_t rs_load_acquire(const uint64_t *p)
    uint64_t rs_load_seq(const uint64_t *p)
    void rs_store_relaxed(uint64_t *p, uint64_t v)
    void rs_store_release(uint64_t *p, uint64_t v)
    void rs_store_seq(uint64_t *p, uint64_t v)
    uint64_t rs_exchange(uint64_t *p, uint64_t v)
    uint64_t rs_fetch_or(uint64_t *p, uint64_t v)
    void rs_add_relaxed(uint64_t *p, uint64_t v)
    uint32_t rs_load32_seq(const uint32_t *p)
    void rs_add32(uint32_t *p, uint32_t v)
    bint rs_cas(uint64_t *p, uint64_t expected, uint64_t desired)
    void rs_fence()
    void rs_cpu_relax()


cdef extern from "futex.h" nogil:
    int rs_futex_wait(uint32_t *word, uint32_t expected, const timespec *until)
    void rs_futex_wake(uint32_t *word, int count)


cdef extern from "internal.h" nogil:
    int RS_WAKE_ALL


cdef extern from "layout.h" nogil:
    const char *RS_MAGIC
    uint32_t RS_VERSION
    uint32_t RS_HEADER_SIZE
    uint32_t RS_RECORD_HEADER
    unsigned long long RS_MIN_CAPACITY
    unsigned long long RS_MAX_CAPACITY
    unsigned long long RS_MAX_PAYLOAD
    uint32_t RS_KIND_DATA
    uint32_t RS_KIND_PADDING
    unsigned long long RS_FLAG_SHUTDOWN
    unsigned long long RS_FLAG_EPHEMERAL

    ctypedef struct rs_intent:
        uint64_t position
        uint64_t messages
        uint64_t bytes

    ctypedef struct rs_tag:
        uint64_t position
        uint64_t value
        uint64_t last

    ctypedef struct rs_side:
        uint64_t position
        uint64_t messages
        uint64_t bytes
        uint64_t waits
        uint64_t timeouts
        rs_intent intent
        rs_tag tag

    ctypedef struct rs_bridge:
        uint64_t sent
        uint64_t acked
        uint64_t received
        uint64_t redelivered
        uint64_t put

    ctypedef struct rs_waitq:
        uint64_t wanted
        uint32_t futex

    ctypedef struct rs_lock:
        uint64_t owner
        uint64_t recoveries
        rs_waitq waitq

    ctypedef struct rs_header:
        char magic[8]
        uint32_t version
        uint32_t header_size
        uint64_t capacity
        uint64_t max_messages
        int64_t creator_pid
        uint64_t creator_start_time
        uint64_t created_ns
        uint32_t recovery_interval_us
        uint32_t spin_ns
        uint64_t flags
        rs_side producer
        rs_side consumer
        rs_lock put_lock
        rs_lock get_lock
        rs_waitq data_waitq
        rs_waitq space_waitq
        uint64_t tasks_done
        rs_waitq joined_waitq
        unsigned char identity[16]
        rs_bridge bridge

    ctypedef struct rs_record:
        uint32_t length
        uint32_t kind

    unsigned int RS_LIVENESS_ID_OFFSET
    ctypedef struct rs_liveness_id:
        uint64_t dev
        uint64_t ino


cdef extern from "liveness.h" nogil:
    ctypedef struct rs_presence:
        uint64_t dev
        uint64_t ino
        uint64_t token
    rs_presence *rs_presence_attach(int fd)
    void rs_presence_release(rs_presence *p)
    uint64_t rs_presence_claim(rs_presence *p, char *header, int *error)
    bint rs_holder_alive(const rs_presence *p, char *header, uint64_t token)
    int64_t rs_holder_pid(char *header, uint64_t token)
    void rs_presences_after_fork()
    void rs_presences_before_fork()
    void rs_presences_after_fork_parent()
    uint32_t RS_SLOTS


cdef extern from "Python.h":
    # Declared here without Cython's `except -1`: in a noexcept nogil wait
    # the status must come back to us, with the exception left set, instead
    # of being reported as unraisable.
    int PyErr_CheckSignals() noexcept
