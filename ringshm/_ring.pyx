# cython: language_level=3, embedsignature=True, boundscheck=False, wraparound=False
# cython: cdivision=True, initializedcheck=False
"""The compiled core of ringshm: the segment, its two locks, waits, records.

Everything that touches the shared segment lives here.  Hot paths are cdef
functions over raw pointers; the Python-facing methods convert arguments to
C values first, run the C code (releasing the GIL to wait or to copy a large
message) and turn the status code into an exception in one place, _raise().

The segment is written by processes we do not trust: every length read from
it is checked against the capacity and the published head before use.
"""

from cpython.buffer cimport (
    PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE,
)
from cpython.bytes cimport (
    PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE,
)
from cpython.pythread cimport PyThread_get_thread_ident
from libc.errno cimport errno, EAGAIN, EINTR, ETIMEDOUT, ESRCH
from libc.stdint cimport uint32_t, uint64_t, int64_t
from libc.stdio cimport FILE, fopen, fclose, fread
from libc.stdlib cimport malloc, free, strtoull
from libc.string cimport memchr, memcpy, memcmp, memset, strrchr

import os

from ringshm.errors import (
    Empty, Full, MessageTooLarge, RingCorrupted, ShutDown,
)

# Status codes of the C layer; _raise() maps them to exceptions.
cdef enum:
    RS_OK = 0
    RS_TIMEOUT = 1      # Full for a producer, Empty for a consumer
    RS_SHUTDOWN = 2
    RS_CORRUPT = 3      # self._corruption says what
    RS_PYERR = 4        # a Python exception is set (a signal handler raised)
    RS_CLOSED = 5       # another thread closed this object while we waited

# A producer that finds the ring empty with its head at least this far into
# the lap starts over at 0 (RingCore._rewind).
cdef uint64_t REWIND_MIN_BYTES = 256 * 1024
# Copies larger than this release the GIL: below it, releasing and taking
# the GIL back costs more than the memcpy it would let run in parallel.
cdef uint64_t NOGIL_COPY_BYTES = 32 * 1024
# While spinning, the clock is read once every SPIN_CLOCK_MASK + 1 looks.
cdef uint32_t SPIN_CLOCK_MASK = 15
# Back-off while spinning: one more PAUSE per look every 2**SHIFT looks, up
# to MAX (the first looks come fast: a peer that answers at once is seen at
# once; a long wait polls the shared line less).
cdef uint32_t SPIN_BACKOFF_SHIFT = 3
cdef uint32_t SPIN_MAX_PAUSES = 32
cdef int64_t NS = 1000000000
cdef int64_t LOCK_PATIENCE_NS = 1000000
cdef int64_t FIRST_OWNER_CHECK_NS = 10000000
cdef uint64_t LOW32 = 0xFFFFFFFF

HEADER_SIZE = RS_HEADER_SIZE
RECORD_HEADER = RS_RECORD_HEADER
MIN_CAPACITY = RS_MIN_CAPACITY
MAX_CAPACITY = RS_MAX_CAPACITY
MAX_PAYLOAD = RS_MAX_PAYLOAD
LAYOUT_VERSION = RS_VERSION


# ---------------------------------------------------------------- process identity

cdef uint64_t g_token = 0   # this process's lock token; 0 = compute on next use


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


cdef inline uint64_t my_token() noexcept nogil:
    global g_token
    cdef int pid
    if g_token == 0:
        pid = getpid()
        g_token = make_token(pid, proc_start_time(pid, NULL))
    return g_token


cdef void forget_token_in_child() noexcept nogil:
    # A forked child has a new pid: recompute the token on its first lock.
    global g_token
    g_token = 0


pthread_atfork(NULL, NULL, forget_token_in_child)


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


# ---------------------------------------------------------------- time

cdef inline int64_t now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * NS + ts.tv_nsec


cdef int64_t deadline_from(object block, object timeout) except? -2:
    """The monotonic deadline in ns: 0 for non-blocking (already passed),
    INT64_MAX for no timeout."""
    cdef double t
    if not block:
        return 0
    if timeout is None:
        return 0x7FFFFFFFFFFFFFFF
    try:
        t = timeout
    except TypeError:
        raise TypeError(f"timeout must be a number or None, not {type(timeout).__name__}") from None
    if not (t >= 0):   # also rejects NaN
        raise ValueError(f"timeout must be a non-negative number, not {timeout!r}")
    if t > 1e9:
        return 0x7FFFFFFFFFFFFFFF
    return now_ns() + <int64_t>(t * 1e9)


cdef inline int64_t fast_deadline(object block, object timeout) except? -2:
    # put()/get() with the defaults, without deadline_from's checks.
    if timeout is None and block is True:
        return 0x7FFFFFFFFFFFFFFF
    return deadline_from(block, timeout)


cdef inline int64_t lock_deadline(int64_t deadline) noexcept nogil:
    # Even a non-blocking call waits a moment for a lock: it is held for the
    # length of a copy, and failing then would report Full/Empty wrongly.
    cdef int64_t soon = now_ns() + LOCK_PATIENCE_NS
    return deadline if deadline > soon else soon


cdef inline void publish(rs_side *side, uint64_t position, uint64_t messages,
                         uint64_t nbytes) noexcept nogil:
    """Publish a side's new head or tail.  The intent is written first, so
    that whoever takes the lock from a holder that died here can finish the
    counters: position == intent.position means it was published."""
    cdef uint64_t total_messages = side.messages + messages
    cdef uint64_t total_bytes = side.bytes + nbytes
    side.intent.position = position
    side.intent.messages = total_messages
    side.intent.bytes = total_bytes
    # Sequentially consistent: it also orders the read of the peer's
    # `wanted` flag that follows (see _wait_turn).
    rs_store_seq(&side.position, position)
    rs_store_relaxed(&side.messages, total_messages)
    rs_store_relaxed(&side.bytes, total_bytes)


cdef inline uint64_t record_span(uint64_t payload) noexcept nogil:
    """Bytes a record of `payload` bytes occupies: header + payload, 8-aligned."""
    return (RS_RECORD_HEADER + payload + 7) & ~(<uint64_t>7)


# ---------------------------------------------------------------- the mapping

cdef class Mapping:
    """Owns one mmap of a segment; unmapped when the last reference (a ring
    or a memoryview handed out by reserve()/view()) goes away, so no view
    can ever point at unmapped memory."""
    cdef char *base
    cdef size_t length

    def __cinit__(self, int fd, size_t length):
        cdef void *p
        self.base = NULL
        self.length = 0
        if fd < 0:
            p = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0)
        else:
            p = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        if p == MAP_FAILED:
            raise OSError(errno, os.strerror(errno))
        self.base = <char *>p
        self.length = length

    def __dealloc__(self):
        if self.base != NULL:
            munmap(self.base, self.length)
            self.base = NULL


cdef class Span:
    """A window of the mapping exported through the buffer protocol; counts
    its exports so the ring can tell whether a view outlived its block."""
    cdef Mapping mapping
    cdef char *start
    cdef Py_ssize_t length
    cdef bint readonly
    cdef Py_ssize_t shape[1]
    cdef public int exports

    def __getbuffer__(self, Py_buffer *view, int flags):
        if self.start == NULL:
            raise ValueError("this view of the ring has ended")
        if (flags & PyBUF_WRITABLE) and self.readonly:
            raise BufferError("the view of a message is read-only")
        self.shape[0] = self.length
        view.buf = self.start
        view.obj = self
        view.len = self.length
        view.readonly = self.readonly
        view.itemsize = 1
        view.format = "B"
        view.ndim = 1
        view.shape = self.shape
        view.strides = NULL
        view.suboffsets = NULL
        view.internal = NULL
        self.exports += 1

    def __releasebuffer__(self, Py_buffer *view):
        self.exports -= 1


cdef bint end_span(Span span, object view):
    """Release the block's memoryview and end the span; False if a slice or
    an export of the view is still alive (it could reach the ring later)."""
    try:
        view.release()
    except BufferError:
        pass   # exported further: the exports count below says so
    span.start = NULL
    return span.exports == 0


cdef Span make_span(Mapping mapping, char *start, Py_ssize_t length, bint readonly):
    cdef Span s = Span.__new__(Span)
    s.mapping = mapping
    s.start = start
    s.length = length
    s.readonly = readonly
    return s


# ---------------------------------------------------------------- the ring

cdef struct Wait:
    int64_t deadline
    int64_t spin_until
    bint armed
    uint32_t futex_seen   # the queue's futex word when armed
    uint32_t spins
    int64_t check_at      # wake by then at the latest (0: a slice)


cdef class RingCore:
    """A ring buffer in a shared mapping.  The public class is ringshm.Ring,
    which adds naming, creation, pickling and argument checks."""

    cdef Mapping _mapping
    cdef rs_header *hdr
    cdef char *data
    cdef uint64_t _capacity
    cdef uint64_t mask
    cdef uint64_t max_payload
    cdef uint64_t max_messages
    cdef int64_t slice_ns
    cdef int64_t spin_ns
    # Each side caches the other's counter and re-reads it only when the
    # cached value says full / empty: the hot path touches no shared line.
    cdef uint64_t cached_tail
    cdef uint64_t cached_head
    # Scratch of the operation in progress (valid while a lock is held).
    cdef uint64_t span_start     # where the batch being put starts
    cdef uint64_t span_end       # and ends (reserve)
    cdef Py_ssize_t wrap_index   # record of the batch preceded by padding, -1: none
    cdef uint64_t wrap_pad
    cdef uint64_t read_tail      # the consumer's position, published or not
    cdef uint64_t rec_offset     # payload of the record found by _next_record
    cdef uint32_t rec_length
    cdef const char *corruption
    # A reserve() or view() block of this object is open: it holds a lock.
    cdef Span _reserve_span
    cdef Span _view_span
    cdef uint64_t reserve_length
    cdef bint _in_reserve
    cdef bint _in_view
    cdef unsigned long _reserve_thread
    cdef unsigned long _view_thread
    # Operations of this object in progress (they may wait without the GIL
    # or hold a zero-copy block open); close() while any runs only marks the
    # object closing, and the last one to leave unmaps.
    cdef int _busy
    cdef bint _closing

    def __cinit__(self, *args, **kwargs):
        self.hdr = NULL
        self.data = NULL
        self._mapping = None
        self._reserve_span = None
        self._view_span = None
        self.corruption = NULL

    # -- attaching ---------------------------------------------------------

    def _map(self, int fd, size_t length):
        """Map `length` bytes of `fd` (-1: anonymous shared memory)."""
        self._mapping = Mapping(fd, length)
        self.hdr = <rs_header *>self._mapping.base
        self._closing = False   # open() maps again after a creator was slow

    def _initialize(self, uint64_t capacity, double recovery_interval, double spin,
                    uint64_t max_messages):
        """Write a fresh header (the creator only, before anyone attaches)."""
        cdef rs_header *h = self.hdr
        cdef timespec ts
        memset(h, 0, RS_HEADER_SIZE)
        h.version = RS_VERSION
        h.header_size = RS_HEADER_SIZE
        h.capacity = capacity
        h.max_messages = max_messages
        h.creator_pid = getpid()
        h.creator_start_time = proc_start_time(getpid(), NULL)
        clock_gettime(CLOCK_REALTIME, &ts)
        h.created_ns = <uint64_t>ts.tv_sec * NS + ts.tv_nsec
        h.recovery_interval_us = <uint32_t>(recovery_interval * 1e6)
        h.spin_ns = <uint32_t>(spin * 1e3)
        # The magic goes last: an opener that sees it sees a whole header.
        rs_store_release(<uint64_t *>h.magic, (<uint64_t *>RS_MAGIC)[0])
        self._adopt_header(h)

    def _validate(self, size_t mapped_length):
        """Check a header written by somebody else before trusting it.

        Raises:
            RingCorrupted: not a ring, unknown version, or a size that does
                not match the mapping.
        """
        cdef rs_header *h = self.hdr
        cdef uint64_t cap
        if mapped_length < RS_HEADER_SIZE:
            raise RingCorrupted(f"segment is truncated: {mapped_length} bytes, "
                                f"less than one header ({RS_HEADER_SIZE})")
        if memcmp(h.magic, RS_MAGIC, 8) != 0:
            raise RingCorrupted("not a ringshm segment (bad magic)")
        if h.version != RS_VERSION:
            raise RingCorrupted(f"unknown layout version {h.version} (this ringshm reads "
                                f"version {RS_VERSION})")
        if h.header_size != RS_HEADER_SIZE:
            raise RingCorrupted(f"unexpected header size {h.header_size}")
        cap = h.capacity
        if cap < RS_MIN_CAPACITY or cap > RS_MAX_CAPACITY or (cap & (cap - 1)) != 0:
            raise RingCorrupted(f"invalid capacity {cap}")
        if RS_HEADER_SIZE + cap != mapped_length:
            raise RingCorrupted(f"segment is {mapped_length} bytes but its header "
                                f"says {RS_HEADER_SIZE + cap}: truncated or damaged")
        self._adopt_header(h)

    cdef void _adopt_header(self, rs_header *h):
        # Read the settings once: a peer that rewrites them later cannot make
        # us read outside the mapping, since capacity and mask stay ours.
        self._capacity = h.capacity
        self.mask = h.capacity - 1
        self.data = <char *>h + RS_HEADER_SIZE
        # Half the ring: an empty ring then takes any single message without
        # a consumer's help, wherever the head stands (padding + record fit).
        self.max_payload = min(self._capacity // 2 - RS_RECORD_HEADER, RS_MAX_PAYLOAD)
        self.max_messages = h.max_messages
        self.slice_ns = min(max(<int64_t>h.recovery_interval_us, 1000), 60000000) * 1000
        self.spin_ns = min(<int64_t>h.spin_ns, 1000000000)
        self.cached_tail = rs_load_acquire(&h.consumer.position)
        self.cached_head = rs_load_acquire(&h.producer.position)

    def _detach(self):
        """Forget the mapping (it is unmapped once no view refers to it).
        With operations of this object in progress (another thread waiting,
        an open reserve()/view() block), only mark it closing: they end at
        once (waits return RS_CLOSED) and the last one forgets the mapping."""
        cdef rs_header *h = self.hdr
        if h == NULL or self._closing:
            return
        self._closing = True
        if self._busy == 0:
            self._forget_mapping()
            return
        # Wake our own waiting threads now.  Sleepers of other processes
        # wake too, re-check and sleep again: harmless.
        wake_all(&h.put_lock.waitq)
        wake_all(&h.get_lock.waitq)
        wake_all(&h.data_waitq)
        wake_all(&h.space_waitq)

    cdef void _forget_mapping(self):
        self.hdr = NULL
        self.data = NULL
        self._mapping = None

    cdef inline int _enter(self) except -1:
        if self.hdr == NULL or self._closing:
            raise ValueError("operation on a closed ring")
        self._busy += 1
        return 0

    cdef inline void _leave(self):
        self._busy -= 1
        if self._busy == 0 and self._closing:
            self._forget_mapping()

    def _magic_present(self):
        return rs_load_acquire(<uint64_t *>self.hdr.magic) != 0

    cdef inline int _check_open(self) except -1:
        if self.hdr == NULL or self._closing:
            raise ValueError("operation on a closed ring")
        return 0

    # -- attributes --------------------------------------------------------

    @property
    def capacity(self):
        """Bytes in the data area (a power of two)."""
        return self._capacity

    @property
    def max_message_size(self):
        """The largest payload a single put() accepts."""
        return self.max_payload

    @property
    def closed(self):
        """True once close() was called."""
        return self.hdr == NULL or self._closing

    @property
    def is_shutdown(self):
        """True once somebody called shutdown()."""
        self._check_open()
        return (rs_load_acquire(&self.hdr.flags) & RS_FLAG_SHUTDOWN) != 0

    # -- status to exception: the one place -------------------------------

    cdef int _raise(self, int rc, bint producer) except -1:
        if rc == RS_TIMEOUT:
            if producer:
                rs_add_relaxed(&self.hdr.producer.timeouts, 1)
                raise Full("no room in the ring")
            rs_add_relaxed(&self.hdr.consumer.timeouts, 1)
            raise Empty("no message in the ring")
        if rc == RS_SHUTDOWN:
            raise ShutDown("the ring was shut down")
        if rc == RS_CORRUPT:
            reason = (self.corruption or b"invalid record").decode()
            raise RingCorrupted(f"ring segment is corrupted: {reason}")
        if rc == RS_PYERR:
            return -1   # the exception raised by a signal handler is set
        if rc == RS_CLOSED:
            raise ValueError("the ring was closed while waiting")
        raise SystemError(f"ringshm: unknown status {rc}")

    cdef inline int _corrupt(self, const char *why) noexcept nogil:
        self.corruption = why
        return RS_CORRUPT

    # -- waiting -----------------------------------------------------------

    cdef inline void _wait_init(self, Wait *w, int64_t deadline) noexcept nogil:
        cdef int64_t now = now_ns()
        w.deadline = deadline
        w.spin_until = 0
        if self.spin_ns > 0 and deadline > now:
            w.spin_until = min(now + self.spin_ns, deadline)
        w.spins = 0
        w.armed = False
        w.check_at = 0

    cdef inline void _start_wait(self, Wait *w, int64_t deadline,
                                 uint64_t *waits) noexcept nogil:
        # A non-blocking call that finds no room or no message did not wait.
        if deadline != 0:
            rs_add_relaxed(waits, 1)
        self._wait_init(w, deadline)

    cdef int _wait_turn(self, rs_waitq *q, Wait *w, bint baton) noexcept nogil:
        """One step of a wait whose condition the caller just found false.

        Spins first; then arms the queue (sets `wanted`, notes the futex
        word) and returns so the caller re-checks its condition; then sleeps
        one slice on the futex word.  The flag is set before the re-check and
        the waker publishes before it reads the flag, both sequentially
        consistent; a wake between the re-check and the sleep has changed the
        futex word, so the sleep returns at once: no wake-up is lost.

        Returns RS_OK to re-check, RS_TIMEOUT, RS_CLOSED when this object is
        being closed, or RS_PYERR when a signal handler raised.  `baton`:
        several may sleep here (a lock queue), so a woken sleeper re-arms at
        once, and its own release wakes the next.
        """
        cdef int64_t now, until
        cdef timespec ts
        cdef int rc
        if w.spin_until != 0:
            # Spinning: a few PAUSEs between two looks at the condition, more
            # as the wait goes on (a look pulls the peer's cache line away
            # from it), the clock now and then.
            for _ in range(1 + min(w.spins >> SPIN_BACKOFF_SHIFT, SPIN_MAX_PAUSES - 1)):
                rs_cpu_relax()
            w.spins += 1
            if (w.spins & SPIN_CLOCK_MASK) != 0 or now_ns() < w.spin_until:
                return RS_OK
            w.spin_until = 0
        if self._closing:
            return RS_CLOSED
        now = now_ns()
        if now >= w.deadline:
            return RS_TIMEOUT
        if not w.armed:
            rs_store_seq(&q.wanted, 1)
            w.futex_seen = rs_load32_seq(&q.futex)
            w.armed = True
            return RS_OK
        until = min(w.deadline, now + self.slice_ns)
        if w.check_at != 0 and w.check_at < until:
            until = max(w.check_at, now)
        ts.tv_sec = until // NS
        ts.tv_nsec = until % NS
        rc = rs_futex_wait(&q.futex, w.futex_seen, &ts)
        if rc == 0 or rc == EAGAIN:
            if baton:
                rs_store_seq(&q.wanted, 1)
                w.futex_seen = rs_load32_seq(&q.futex)
            else:
                w.armed = False
            return RS_OK
        if rc != EINTR and rc != ETIMEDOUT:
            # The kernel refused the wait: never spin hot, poll instead.
            ts.tv_sec = 0
            ts.tv_nsec = 1000000
            nanosleep(&ts, NULL)
        w.armed = False
        with gil:
            if PyErr_CheckSignals() < 0:
                return RS_PYERR
        return RS_OK

    cdef inline void _wake(self, rs_waitq *q) noexcept nogil:
        # Only a sleeper sets `wanted`; the waker clears it, so a sleeper that
        # died costs one wake at most, and a busy ring makes no system call.
        if rs_load_seq(&q.wanted) != 0 and rs_exchange(&q.wanted, 0) != 0:
            rs_add32(&q.futex, 1)
            rs_futex_wake(&q.futex, 1)

    # -- the locks ---------------------------------------------------------

    cdef int _lock_slow(self, rs_lock *lk, int64_t deadline, bint producer) noexcept nogil:
        """Wait for the lock; take it over when its owner is dead."""
        cdef Wait w
        cdef uint64_t token = my_token()
        cdef uint64_t owner
        cdef int64_t now
        # The first look at the owner comes soon (a waiter that arrives after
        # the death need not wait a whole slice), but not at once: a lock is
        # mostly busy for the length of a copy, and a look costs syscalls.
        cdef int64_t next_check = now_ns() + min(self.slice_ns, FIRST_OWNER_CHECK_NS)
        cdef int rc
        self._wait_init(&w, deadline)
        while True:
            owner = rs_load_acquire(&lk.owner)
            if owner == 0:
                if rs_cas(&lk.owner, 0, token):
                    return RS_OK
                continue
            if producer and self._shut_down():
                return RS_SHUTDOWN
            if w.spin_until != 0:
                now = 0   # spinning: the wait's own clock bounds it
            else:
                now = now_ns()
            if now >= next_check or (now != 0 and now >= deadline):
                if owner != token and not owner_alive(owner):
                    if rs_cas(&lk.owner, owner, token):
                        rs_add_relaxed(&lk.recoveries, 1)
                        self._repair(producer)
                        return RS_OK
                    continue
                next_check = now + self.slice_ns
            w.check_at = next_check
            rc = self._wait_turn(&lk.waitq, &w, True)
            if rc != RS_OK:
                return rc

    cdef void _repair(self, bint producer) noexcept nogil:
        """After taking a lock from a dead owner: finish the counters of a
        publish it made but did not count (see publish())."""
        cdef rs_side *side = &self.hdr.producer if producer else &self.hdr.consumer
        if rs_load_relaxed(&side.position) == side.intent.position:
            rs_store_relaxed(&side.messages, side.intent.messages)
            rs_store_relaxed(&side.bytes, side.intent.bytes)

    cdef inline void _unlock(self, rs_lock *lk) noexcept nogil:
        # An exchange, not a store: it orders the release before the read of
        # `wanted` (a release store would let that read pass it).
        rs_exchange(&lk.owner, 0)
        self._wake(&lk.waitq)

    cdef inline bint _shut_down(self) noexcept nogil:
        return (rs_load_relaxed(&self.hdr.flags) & RS_FLAG_SHUTDOWN) != 0

    # -- producing ---------------------------------------------------------

    cdef inline bint _rewind(self, uint64_t head, uint64_t total_span,
                             Py_ssize_t count) noexcept nogil:
        """An empty ring whose head is far into the lap starts the batch
        over at 0, after padding to the end: a stream the consumer keeps up
        with then reuses the first bytes of the ring, warm in the caches and
        the TLB, instead of cycling through the whole capacity (6 MB frames
        through a 32 MiB ring ran at half speed; docs/PERFORMANCE.md).  The
        padding costs no room: the batch fits before the head."""
        cdef uint64_t pos = head & self.mask
        if pos < REWIND_MIN_BYTES or pos < total_span or (head & 7) != 0:
            return False
        self.cached_tail = rs_load_acquire(&self.hdr.consumer.position)
        if self.cached_tail != head or not self._has_room(head, self._capacity - pos
                                                          + total_span, count):
            return False
        self.span_start = head
        self.wrap_index = 0
        self.wrap_pad = self._capacity - pos
        return True

    cdef inline bint _has_room(self, uint64_t head, uint64_t need,
                               uint64_t messages) noexcept nogil:
        if head - self.cached_tail + need > self._capacity:
            return False
        if self.max_messages != 0:
            return (rs_load_relaxed(&self.hdr.producer.messages) + messages
                    - rs_load_acquire(&self.hdr.consumer.messages)) <= self.max_messages
        return True

    cdef uint64_t _layout(self, uint64_t head, Py_buffer *bufs, Py_ssize_t count) noexcept nogil:
        """Bytes from `head` to the end of the batch laid out there: records
        one after another, each contiguous; the first record that would cross
        the end of the data area is preceded by a PADDING record filling the
        lap (wrap_index, wrap_pad).  Only one wrap is possible: a batch is at
        most half the ring."""
        cdef uint64_t pos = head & self.mask
        cdef uint64_t total = 0, span
        cdef Py_ssize_t i
        self.wrap_index = -1
        for i in range(count):
            span = record_span(bufs[i].len)
            if self.wrap_index < 0 and pos + span > self._capacity:
                self.wrap_index = i
                self.wrap_pad = self._capacity - pos
                total += self.wrap_pad
                pos = 0
            pos += span
            total += span
        return total

    cdef int _room(self, Py_buffer *bufs, Py_ssize_t count, int64_t deadline) noexcept nogil:
        """With the put lock held: wait until the batch fits (bytes and, with
        max_messages, messages), then set span_start and the wrap.  A batch
        is at most half the ring, so with its padding it fits an empty ring
        wherever the head stands: no wait depends on anything but consumers
        taking messages."""
        cdef rs_header *h = self.hdr
        cdef uint64_t head = rs_load_relaxed(&h.producer.position)
        cdef uint64_t need
        cdef Wait w
        cdef bint waited = False
        cdef int rc
        if (head & 7) != 0:
            # An unaligned head would put a record header across the end.
            return self._corrupt("head is not 8-byte aligned")
        need = self._layout(head, bufs, count)
        while not self._has_room(head, need, count):
            self.cached_tail = rs_load_acquire(&h.consumer.position)
            if head - self.cached_tail > self._capacity:
                return self._corrupt("tail is ahead of head")
            if self._has_room(head, need, count):
                break
            if self._shut_down():
                return RS_SHUTDOWN
            if not waited:
                waited = True
                self._start_wait(&w, deadline, &h.producer.waits)
            rc = self._wait_turn(&h.space_waitq, &w, False)
            if rc != RS_OK:
                return rc
        self.span_start = head
        return RS_OK

    cdef inline void _publish_head(self, uint64_t head, uint64_t messages,
                                   uint64_t nbytes) noexcept nogil:
        publish(&self.hdr.producer, head, messages, nbytes)
        self._wake(&self.hdr.data_waitq)

    cdef inline char *_place(self, uint64_t *at, Py_ssize_t index, uint64_t length) noexcept nogil:
        """Write the header of record `index` of the batch at *at (after the
        wrap's padding if it goes first) and advance *at past the record;
        return where its payload goes."""
        cdef rs_record *rec
        if index == self.wrap_index:
            rec = <rs_record *>(self.data + (at[0] & self.mask))
            rec.length = <uint32_t>(self.wrap_pad - RS_RECORD_HEADER)
            rec.kind = RS_KIND_PADDING
            at[0] += self.wrap_pad
        rec = <rs_record *>(self.data + (at[0] & self.mask))
        rec.length = <uint32_t>length
        rec.kind = RS_KIND_DATA
        at[0] += record_span(length)
        return <char *>rec + RS_RECORD_HEADER

    cdef int _begin_put(self, Py_buffer *bufs, Py_ssize_t count, uint64_t total_span,
                        int64_t deadline) except -1:
        """Enter (see _enter), take the put lock and room for the batch
        (total_span: its records without padding).  On failure: raises,
        holding no lock, having left.  On success the caller must _end_put
        (or unlock) and then _leave."""
        self._enter()
        try:
            return self._lock_and_room(bufs, count, total_span, deadline)
        except BaseException:
            self._leave()
            raise

    cdef int _lock_and_room(self, Py_buffer *bufs, Py_ssize_t count, uint64_t total_span,
                            int64_t deadline) except -1:
        cdef int rc
        cdef rs_header *h = self.hdr
        cdef uint64_t head
        if self._in_reserve and self._reserve_thread == PyThread_get_thread_ident():
            raise RuntimeError("put inside this ring's own reserve() block would deadlock")
        if rs_cas(&h.put_lock.owner, 0, my_token()):
            rc = RS_OK
        else:
            with nogil:
                rc = self._lock_slow(&h.put_lock, lock_deadline(deadline), True)
        if rc == RS_OK and self._shut_down():
            self._unlock(&h.put_lock)
            rc = RS_SHUTDOWN
        if rc != RS_OK:
            return self._raise(rc, True)
        head = rs_load_relaxed(&h.producer.position)
        if self._rewind(head, total_span, count):
            return 0
        # The fast path: no wrap, room by the cached tail (refreshed once).
        if (head & self.mask) + total_span <= self._capacity and (head & 7) == 0:
            if not self._has_room(head, total_span, count):
                self.cached_tail = rs_load_acquire(&h.consumer.position)
            if (self._has_room(head, total_span, count)
                    and head - self.cached_tail <= self._capacity):
                self.span_start = head
                self.wrap_index = -1
                return 0
        with nogil:
            rc = self._room(bufs, count, deadline)
        if rc != RS_OK:
            self._unlock(&h.put_lock)
            return self._raise(rc, True)
        return 0

    cdef inline void _end_put(self, uint64_t end, uint64_t messages,
                              uint64_t nbytes) noexcept nogil:
        self._publish_head(end, messages, nbytes)
        self._unlock(&self.hdr.put_lock)

    def put(self, data, block=True, timeout=None):
        """Append one message.

        Args:
            data: a C-contiguous bytes-like object.
            block, timeout: wait for room (for ever when timeout is None);
                block=False fails at once.

        Raises:
            Full: no room in time.  ShutDown: the ring was shut down.
            MessageTooLarge: larger than max_message_size.
            TypeError: data is not bytes-like.
        """
        cdef Py_buffer buf
        cdef int64_t deadline = fast_deadline(block, timeout)
        self._check_open()
        if PyBytes_CheckExact(data):
            # The common case, without the buffer protocol's round trip.
            buf.buf = PyBytes_AS_STRING(data)
            buf.len = PyBytes_GET_SIZE(data)
            self._put_one(&buf, deadline)
            return
        get_buffer(data, &buf, "data", False)
        try:
            self._put_one(&buf, deadline)
        finally:
            PyBuffer_Release(&buf)

    cdef int _put_one(self, Py_buffer *buf, int64_t deadline) except -1:
        cdef uint64_t n = <uint64_t>buf.len
        cdef uint64_t at
        cdef char *dst
        if n > self.max_payload:
            raise MessageTooLarge(f"message of {n} bytes exceeds max_message_size "
                                  f"({self.max_payload})")
        self._begin_put(buf, 1, record_span(n), deadline)
        at = self.span_start
        dst = self._place(&at, 0, n)
        if n >= NOGIL_COPY_BYTES:
            with nogil:
                memcpy(dst, buf.buf, n)
        else:
            memcpy(dst, buf.buf, n)
        self._end_put(at, 1, n)
        self._leave()
        return 0

    def put_nowait(self, data):
        """put(data, block=False)."""
        return self.put(data, False)

    def put_many(self, messages, block=True, timeout=None):
        """Append a batch of messages, all or nothing: they become visible
        together, one after another, and no other producer's message lands
        among them.

        Raises:
            Full: the whole batch did not fit in time (nothing was put).
            MessageTooLarge: the batch can never fit in the ring.
            ShutDown, TypeError: as put().
        """
        cdef int64_t deadline = deadline_from(block, timeout)
        cdef Py_ssize_t count, i, got = 0
        cdef Py_buffer *bufs
        cdef uint64_t span = 0, nbytes = 0, at
        cdef char *dst
        self._check_open()
        if isinstance(messages, (bytes, bytearray, memoryview, str)):
            raise TypeError("messages must be an iterable of bytes-like objects, "
                            f"not a single {type(messages).__name__}")
        if isinstance(messages, (list, tuple)):
            batch = messages
        else:
            try:
                batch = list(messages)
            except TypeError:
                raise TypeError("messages must be an iterable of bytes-like objects, "
                                f"not {type(messages).__name__}") from None
        count = len(batch)
        if count == 0:
            return
        bufs = <Py_buffer *>malloc(count * sizeof(Py_buffer))
        if bufs == NULL:
            raise MemoryError()
        try:
            for i in range(count):
                get_buffer(batch[i], &bufs[i], "messages item", False)
                got += 1
                nbytes += <uint64_t>bufs[i].len
                if <uint64_t>bufs[i].len > self.max_payload:
                    raise MessageTooLarge(f"message {i} of {bufs[i].len} bytes exceeds "
                                          f"max_message_size ({self.max_payload})")
                span += record_span(bufs[i].len)
            if span > self._capacity // 2:
                # As for one message: at most half the ring, so that an empty
                # ring takes it wherever the head stands (see docs/DESIGN.md).
                raise MessageTooLarge(f"batch of {count} messages needs {span} bytes, more "
                                      f"than half the ring's capacity ({self._capacity})")
            if self.max_messages and <uint64_t>count > self.max_messages:
                raise MessageTooLarge(f"batch of {count} messages exceeds max_messages "
                                      f"({self.max_messages})")
            self._begin_put(bufs, count, span, deadline)
            at = self.span_start
            with nogil:
                for i in range(count):
                    dst = self._place(&at, i, bufs[i].len)
                    memcpy(dst, bufs[i].buf, bufs[i].len)
                self._end_put(at, count, nbytes)
            self._leave()
        finally:
            for i in range(got):
                PyBuffer_Release(&bufs[i])
            free(bufs)

    # -- consuming ---------------------------------------------------------

    cdef int _begin_get(self, int64_t deadline) except -1:
        """Enter (see _enter), take the get lock and find the next message
        (rec_offset, rec_length).  On failure: raises, holding no lock,
        having left.  On success the caller must _end_get and _leave."""
        self._enter()
        try:
            return self._lock_and_find(deadline)
        except BaseException:
            self._leave()
            raise

    cdef int _lock_and_find(self, int64_t deadline) except -1:
        cdef int rc
        cdef rs_header *h = self.hdr
        if self._in_view and self._view_thread == PyThread_get_thread_ident():
            raise RuntimeError("get inside this ring's own view() block would deadlock")
        if rs_cas(&h.get_lock.owner, 0, my_token()):
            rc = RS_OK
        else:
            with nogil:
                rc = self._lock_slow(&h.get_lock, lock_deadline(deadline), False)
        if rc != RS_OK:
            return self._raise(rc, False)
        self.read_tail = rs_load_relaxed(&h.consumer.position)
        rc = self._next_record_fast()
        if rc != RS_OK:
            # A near-empty ring: the cached head is behind.  Look again
            # before paying for releasing the GIL.
            self.cached_head = rs_load_acquire(&h.producer.position)
            rc = self._next_record_fast()
        if rc != RS_OK:
            with nogil:
                rc = self._next_record(deadline)
        if rc != RS_OK:
            self._end_get(0, 0)
            return self._raise(rc, False)
        return 0

    cdef inline int _next_record_fast(self) noexcept nogil:
        # The common case: a DATA record the cached head already covers.
        cdef uint64_t tail = self.read_tail
        cdef uint64_t avail = self.cached_head - tail
        cdef rs_record *rec
        cdef uint64_t pos
        if <int64_t>avail <= 0 or avail > self._capacity or (tail & 7) != 0:
            return RS_TIMEOUT
        pos = tail & self.mask
        rec = <rs_record *>(self.data + pos)
        if rec.kind != RS_KIND_DATA:
            return RS_TIMEOUT
        if record_span(rec.length) > avail or pos + record_span(rec.length) > self._capacity:
            return RS_TIMEOUT
        self.rec_offset = pos + RS_RECORD_HEADER
        self.rec_length = rec.length
        return RS_OK

    cdef int _next_record(self, int64_t deadline) noexcept nogil:
        """With the get lock held: skip padding, wait for data, validate the
        record at read_tail.  A record is trusted only after its kind and
        length are checked against the capacity and the published head."""
        cdef rs_header *h = self.hdr
        cdef uint64_t tail, avail, pos, span
        cdef uint32_t length, kind
        cdef rs_record *rec
        cdef Wait w
        cdef bint waited = False
        cdef int rc
        while True:
            tail = self.read_tail
            if <int64_t>(self.cached_head - tail) <= 0:
                self.cached_head = rs_load_seq(&h.producer.position)
                if self.cached_head == tail:
                    if deadline != 0 and tail != rs_load_relaxed(&h.consumer.position):
                        # About to sleep: hand skipped padding back.  (Only
                        # here: with messages taken but not yet returned this
                        # would lose them if the process died now.)
                        self._publish_tail(tail, 0, 0)
                    if self._shut_down():
                        return RS_SHUTDOWN
                    if not waited:
                        waited = True
                        self._start_wait(&w, deadline, &h.consumer.waits)
                    rc = self._wait_turn(&h.data_waitq, &w, False)
                    if rc != RS_OK:
                        return rc
                    continue
            avail = self.cached_head - tail
            if avail > self._capacity:
                return self._corrupt("head and tail are further apart than the capacity")
            if (tail & 7) != 0 or (avail & 7) != 0:
                return self._corrupt("head or tail is not 8-byte aligned")
            pos = tail & self.mask
            rec = <rs_record *>(self.data + pos)
            length = rec.length
            kind = rec.kind
            if kind == RS_KIND_PADDING:
                span = RS_RECORD_HEADER + <uint64_t>length
                if pos + span != self._capacity or span > avail:
                    return self._corrupt("padding record of a wrong length")
                self.read_tail = tail + span
                continue
            if kind != RS_KIND_DATA:
                return self._corrupt("record of an unknown kind")
            span = record_span(length)
            if length > self.max_payload or span > avail or pos + span > self._capacity:
                return self._corrupt("record longer than the data published")
            self.rec_offset = pos + RS_RECORD_HEADER
            self.rec_length = length
            return RS_OK

    cdef inline void _publish_tail(self, uint64_t tail, uint64_t messages,
                                   uint64_t nbytes) noexcept nogil:
        publish(&self.hdr.consumer, tail, messages, nbytes)
        self._wake(&self.hdr.space_waitq)

    cdef inline void _end_get(self, uint64_t messages, uint64_t nbytes) noexcept nogil:
        """Publish what was consumed (or only the padding skipped), unlock."""
        cdef uint64_t tail = self.read_tail
        if tail != rs_load_relaxed(&self.hdr.consumer.position) or messages:
            self._publish_tail(tail, messages, nbytes)
        self._unlock(&self.hdr.get_lock)

    cdef inline void _consume_record(self) noexcept nogil:
        # read_tail stays on the record _next_record found until consumed.
        self.read_tail += record_span(self.rec_length)

    def get(self, block=True, timeout=None):
        """Remove and return the oldest message.

        Raises:
            Empty: nothing in time.  ShutDown: shut down and drained.
            RingCorrupted: the next record fails validation.
        """
        cdef int64_t deadline = fast_deadline(block, timeout)
        self._check_open()
        self._begin_get(deadline)
        return self._take_record()

    def _get_untagged(self, bytes tags, block=True, timeout=None):
        """get(), unless the oldest message is empty or begins with one of
        the bytes of `tags`: then None, and the message stays for view().  Queue reads
        its framed items in place this way (ringshm/_items.py)."""
        cdef int64_t deadline = fast_deadline(block, timeout)
        self._check_open()
        self._begin_get(deadline)
        if self._record_tagged(tags):
            self._end_get(0, 0)
            self._leave()
            return None
        return self._take_record()

    cdef inline bint _record_tagged(self, bytes tags):
        # The record _next_record found: does its first byte appear in tags?
        # (An empty one counts as tagged: it has no first byte to vouch for.)
        if tags is None:
            return False
        if self.rec_length == 0:
            return True
        return memchr(PyBytes_AS_STRING(tags), (<unsigned char *>self.data)[self.rec_offset],
                      PyBytes_GET_SIZE(tags)) != NULL

    cdef bytes _take_record(self):
        """Copy out and consume the record _begin_get found; end and leave."""
        cdef bytes out
        cdef uint32_t n = self.rec_length
        cdef char *dst
        try:
            if n >= NOGIL_COPY_BYTES:
                out = PyBytes_FromStringAndSize(NULL, n)
                dst = PyBytes_AS_STRING(out)
                with nogil:
                    memcpy(dst, self.data + self.rec_offset, n)
            else:
                out = PyBytes_FromStringAndSize(self.data + self.rec_offset, n)
        except BaseException:
            self._end_get(0, 0)   # MemoryError: the message stays
            self._leave()
            raise
        self._consume_record()
        self._end_get(1, n)
        self._leave()
        return out

    def get_nowait(self):
        """get(block=False)."""
        return self.get(False)

    def get_into(self, buffer, block=True, timeout=None):
        """Copy the oldest message into `buffer` and return its length.

        Raises:
            ValueError: `buffer` is too small (the message stays in the ring).
            Empty, ShutDown, RingCorrupted: as get().
        """
        cdef Py_buffer buf
        cdef int64_t deadline = deadline_from(block, timeout)
        cdef uint32_t n
        self._check_open()
        get_buffer(buffer, &buf, "buffer", True)
        try:
            self._begin_get(deadline)
            n = self.rec_length
            if <uint64_t>buf.len < n:
                self._end_get(0, 0)
                self._leave()
                raise ValueError(f"buffer of {buf.len} bytes is too small for the "
                                 f"next message ({n} bytes)")
            if n >= NOGIL_COPY_BYTES:
                with nogil:
                    memcpy(buf.buf, self.data + self.rec_offset, n)
            else:
                memcpy(buf.buf, self.data + self.rec_offset, n)
            self._consume_record()
            self._end_get(1, n)
            self._leave()
            return n
        finally:
            PyBuffer_Release(&buf)

    def get_many(self, max_messages=1024, max_bytes=256 * 1024, block=True, timeout=None):
        """Wait for at least one message, then take as many as are ready,
        up to `max_messages` messages and `max_bytes` payload bytes (the
        first message is taken even if it alone exceeds max_bytes; None:
        no byte limit).

        The default byte limit keeps a batch within the CPU's caches and the
        allocator's fast paths: with 32 KiB messages an unbounded batch
        moved 1.4 GB/s, one of 256 KiB 22 GB/s (docs/PERFORMANCE.md); and
        the space of a batch goes back to producers only once it is copied.

        Raises:
            Empty, ShutDown, RingCorrupted: as get().
        """
        return self._get_many_untagged(None, max_messages, max_bytes, block, timeout)

    def _get_many_untagged(self, bytes tags, max_messages=1024, max_bytes=256 * 1024,
                           block=True, timeout=None):
        """get_many(), stopping before the first message that is empty or
        begins with one of the bytes of `tags` (see _get_untagged): an empty list when the
        oldest message does."""
        cdef int64_t deadline = deadline_from(block, timeout)
        cdef Py_ssize_t limit, taken = 0
        cdef uint64_t byte_limit, nbytes = 0
        cdef int rc
        limit = check_positive_int(max_messages, "max_messages")
        byte_limit = 0xFFFFFFFFFFFFFFFF if max_bytes is None else \
            check_positive_int(max_bytes, "max_bytes")
        cdef uint64_t first
        self._check_open()
        self._begin_get(deadline)
        first = self.read_tail
        out = []
        try:
            while not self._record_tagged(tags):
                out.append(PyBytes_FromStringAndSize(self.data + self.rec_offset,
                                                     self.rec_length))
                taken += 1
                nbytes += self.rec_length
                self._consume_record()
                if taken >= limit:
                    break
                rc = self._next_record_fast()
                if rc != RS_OK:
                    # Padding, a stale cached head, or truly empty: look once
                    # more without waiting.
                    rc = self._next_record(0)
                    if rc != RS_OK:
                        break
                if nbytes + self.rec_length > byte_limit:
                    break
        except BaseException:
            self.read_tail = first   # nothing is consumed unless returned
            self._end_get(0, 0)
            self._leave()
            raise
        self._end_get(taken, nbytes)
        self._leave()
        return out

    # -- zero copy ---------------------------------------------------------

    def reserve(self, size, timeout=None):
        """Zero-copy write, as a context manager: ``with ring.reserve(n) as
        buf:`` gives a writable memoryview of exactly `size` bytes inside the
        ring, published as one message when the block ends normally and
        discarded if it raises.  The put lock is held for the whole block.

        Raises:
            Full: no room within `timeout`.  MessageTooLarge, ShutDown.
            RuntimeError: a put() of this ring inside the block (deadlock).
            BufferError: a slice of the view outlived the block (the message
                is discarded).
        """
        return ReserveBlock(self, size, timeout)

    def view(self, timeout=None):
        """Zero-copy read, as a context manager: ``with ring.view() as mv:``
        gives a read-only memoryview of the oldest message, consumed when the
        block ends normally and left in the ring if it raises.  The view is
        released at the end of the block; the get lock is held for the whole
        block.

        Raises:
            Empty: nothing within `timeout`.  ShutDown, RingCorrupted.
            RuntimeError: a get() of this ring inside the block (deadlock).
            BufferError: a slice of the view outlived the block (the message
                stays in the ring).
        """
        return ViewBlock(self, timeout)

    def _reserve_begin(self, size, timeout):
        """Take the put lock and room for a record of `size` bytes; return a
        writable memoryview over its payload."""
        cdef int64_t deadline = deadline_from(True, timeout)
        cdef uint64_t n = check_nonnegative_int(size, "size")
        cdef Py_buffer size_only
        cdef uint64_t at
        cdef char *payload
        self._check_open()
        if self._in_reserve and self._reserve_thread == PyThread_get_thread_ident():
            raise RuntimeError("reserve() blocks of one ring cannot nest")
        if n > self.max_payload:
            raise MessageTooLarge(f"reservation of {n} bytes exceeds max_message_size "
                                  f"({self.max_payload})")
        size_only.len = <Py_ssize_t>n
        self._begin_put(&size_only, 1, record_span(n), deadline)
        at = self.span_start
        payload = self._place(&at, 0, n)
        self.span_end = at
        self.reserve_length = n
        try:
            self._reserve_span = make_span(self._mapping, payload, n, False)
            view = memoryview(self._reserve_span)
        except BaseException:
            self._reserve_span = None
            self._unlock(&self.hdr.put_lock)
            self._leave()
            raise
        self._in_reserve = True
        self._reserve_thread = PyThread_get_thread_ident()
        return view

    def _reserve_end(self, view, bint commit):
        """Publish (commit) or drop the reservation; release the put lock.
        A ring closed inside the block drops it."""
        cdef Span span = self._reserve_span
        if not self._in_reserve:
            return
        self._in_reserve = False
        self._reserve_span = None
        try:
            if not end_span(span, view):
                # Somebody kept a slice of the view: it could still write
                # into the ring after the message is published.
                self._unlock(&self.hdr.put_lock)
                raise BufferError("a view of the reserved space outlived its with-block; "
                                  "the message was discarded")
            if commit and not self._closing:
                self._end_put(self.span_end, 1, self.reserve_length)
            else:
                self._unlock(&self.hdr.put_lock)
        finally:
            self._leave()

    def _reserved_end(self):
        """Inside this thread's reserve() block: the head counter just past
        its record, once published (Queue's side files, _sidefile.py)."""
        if not (self._in_reserve and self._reserve_thread == PyThread_get_thread_ident()):
            raise RuntimeError("_reserved_end() outside a reserve() block")
        return self.span_end

    def _view_begin(self, timeout):
        """Take the get lock and return a read-only view of the oldest message."""
        cdef int64_t deadline = deadline_from(True, timeout)
        self._check_open()
        if self._in_view and self._view_thread == PyThread_get_thread_ident():
            raise RuntimeError("view() blocks of one ring cannot nest")
        self._begin_get(deadline)
        try:
            self._view_span = make_span(self._mapping, self.data + self.rec_offset,
                                        self.rec_length, True)
            view = memoryview(self._view_span)
        except BaseException:
            self._view_span = None
            self._end_get(0, 0)
            self._leave()
            raise
        self._in_view = True
        self._view_thread = PyThread_get_thread_ident()
        return view

    def _view_end(self, view, bint consume):
        """Consume (or leave) the viewed message; release the get lock.
        A ring closed inside the block leaves the message."""
        cdef Span span = self._view_span
        cdef uint32_t n = self.rec_length
        if not self._in_view:
            return
        self._in_view = False
        self._view_span = None
        try:
            if not end_span(span, view):
                # A slice of the view is still alive: handing the space back
                # would let it read the next lap's bytes.
                self._end_get(0, 0)
                raise BufferError("a view of the message outlived its with-block; "
                                  "the message was left in the ring")
            if consume and not self._closing:
                self._consume_record()
                self._end_get(1, n)
            else:
                self._end_get(0, 0)
        finally:
            self._leave()

    # -- the whole ring ----------------------------------------------------

    def shutdown(self):
        """End the ring for everyone: blocked callers wake at once; put()
        raises ShutDown; get() returns what is left, then raises ShutDown."""
        cdef rs_header *h
        self._check_open()
        h = self.hdr
        rs_fetch_or(&h.flags, RS_FLAG_SHUTDOWN)
        wake_all(&h.put_lock.waitq)
        wake_all(&h.get_lock.waitq)
        wake_all(&h.data_waitq)
        wake_all(&h.space_waitq)

    cdef inline uint64_t _message_count(self):
        cdef uint64_t got = rs_load_acquire(&self.hdr.consumer.messages)
        cdef uint64_t put = rs_load_acquire(&self.hdr.producer.messages)
        if put <= got:
            return 0
        # A record takes 8 bytes at least: more messages than that is a
        # damaged counter; never report an absurd (or negative) length.
        return min(put - got, self._capacity // RS_RECORD_HEADER)

    def qsize(self):
        """Messages in the ring now (a snapshot)."""
        self._check_open()
        return self._message_count()

    def __len__(self):
        self._check_open()
        return self._message_count()

    def empty(self):
        """True if the ring holds no message now (a snapshot)."""
        self._check_open()
        return self._message_count() == 0

    def full(self):
        """True if a 1-byte message would not fit now (a snapshot)."""
        cdef uint64_t head, tail, pos, need
        self._check_open()
        tail = rs_load_acquire(&self.hdr.consumer.position)
        head = rs_load_acquire(&self.hdr.producer.position)
        if self.max_messages and self._message_count() >= self.max_messages:
            return True
        pos = head & self.mask
        need = record_span(1)
        if pos + need > self._capacity:
            need += self._capacity - pos
        return head - tail + need > self._capacity

    def stats(self):
        """Counters kept in the segment, as a dict (a snapshot)."""
        cdef rs_header *h
        self._check_open()
        h = self.hdr
        head = rs_load_acquire(&h.producer.position)
        tail = rs_load_acquire(&h.consumer.position)
        return {
            "capacity": self._capacity,
            "used_bytes": min(head - tail, self._capacity) if head >= tail else 0,
            "messages": self._message_count(),
            "messages_put": rs_load_relaxed(&h.producer.messages),
            "bytes_put": rs_load_relaxed(&h.producer.bytes),
            "messages_got": rs_load_relaxed(&h.consumer.messages),
            "bytes_got": rs_load_relaxed(&h.consumer.bytes),
            "put_waits": rs_load_relaxed(&h.producer.waits),
            "get_waits": rs_load_relaxed(&h.consumer.waits),
            "put_timeouts": rs_load_relaxed(&h.producer.timeouts),
            "get_timeouts": rs_load_relaxed(&h.consumer.timeouts),
            "lock_recoveries": (rs_load_relaxed(&h.put_lock.recoveries)
                                + rs_load_relaxed(&h.get_lock.recoveries)),
            "creator_pid": h.creator_pid,
            "creator_alive": bool(owner_alive(make_token(<int>h.creator_pid,
                                                         h.creator_start_time))),
            "shutdown": bool(rs_load_relaxed(&h.flags) & RS_FLAG_SHUTDOWN),
            "version": h.version,
            "max_messages": self.max_messages,
            "recovery_interval": self.slice_ns / 1e9,
            "spin": self.spin_ns / 1e3,
            "created": h.created_ns / 1e9,
            "head": head,
            "tail": tail,
        }

    def _lock_owners(self):
        """(put lock owner pid, get lock owner pid), 0 when free: for tests
        and `ringshm info`."""
        self._check_open()
        return (<int>(rs_load_relaxed(&self.hdr.put_lock.owner) >> 32),
                <int>(rs_load_relaxed(&self.hdr.get_lock.owner) >> 32))


# ---------------------------------------------------------------- zero-copy blocks

cdef class ReserveBlock:
    """The context manager of RingCore.reserve() (compiled: a generator-based
    one costs a microsecond per message)."""
    cdef RingCore ring
    cdef object size, timeout, view

    def __cinit__(self, RingCore ring, size, timeout):
        self.ring = ring
        self.size = size
        self.timeout = timeout

    def __enter__(self):
        if self.view is not None:
            raise RuntimeError("this reserve() block is already open")
        self.view = self.ring._reserve_begin(self.size, self.timeout)
        return self.view

    def __exit__(self, exc_type, exc, traceback):
        view, self.view = self.view, None
        self.ring._reserve_end(view, exc_type is None)
        return False


cdef class ViewBlock:
    """The context manager of RingCore.view()."""
    cdef RingCore ring
    cdef object timeout, view

    def __cinit__(self, RingCore ring, timeout):
        self.ring = ring
        self.timeout = timeout

    def __enter__(self):
        if self.view is not None:
            raise RuntimeError("this view() block is already open")
        self.view = self.ring._view_begin(self.timeout)
        return self.view

    def __exit__(self, exc_type, exc, traceback):
        view, self.view = self.view, None
        self.ring._view_end(view, exc_type is None)
        return False


# ---------------------------------------------------------------- argument helpers

cdef void wake_all(rs_waitq *q) noexcept nogil:
    rs_store_seq(&q.wanted, 0)
    rs_add32(&q.futex, 1)
    rs_futex_wake(&q.futex, RS_WAKE_ALL)


cdef int get_buffer(object obj, Py_buffer *buf, str what, bint writable) except -1:
    cdef int flags = PyBUF_SIMPLE | (PyBUF_WRITABLE if writable else 0)
    try:
        PyObject_GetBuffer(obj, buf, flags)
    except BufferError as e:
        raise ValueError(f"{what} must be a C-contiguous{' writable' if writable else ''} "
                         f"buffer: {e}") from None
    except TypeError:
        raise TypeError(f"{what} must be a bytes-like object, "
                        f"not {type(obj).__name__}") from None
    return 0


cdef Py_ssize_t check_positive_int(object value, str name) except -1:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, not {value}")
    return min(value, 0x7FFFFFFFFFFFFFFF)


cdef uint64_t check_nonnegative_int(object value, str name) except? 0xFFFFFFFFFFFFFFFF:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be non-negative, not {value}")
    return min(value, 0xFFFFFFFFFFFFFFF0)
