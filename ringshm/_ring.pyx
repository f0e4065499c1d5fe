# cython: language_level=3, embedsignature=True, boundscheck=False, wraparound=False
# cython: cdivision=True, initializedcheck=False
"""The compiled core of ringshm: RingCore, a ring buffer in a shared segment.

The parts live in units of their own, so each is found by its name:

    _ring.pxd       C declarations (libc, the segment layout, atomics, futex)
    _clock.pxd      the monotonic clock and deadlines
    _waitq.pxd      wait queues: spinning, sleeping on a futex, waking
    _locks.pxd      the put and get locks (a CAS on an owner word)
    _liveness.h     lock-holder slots (OFD locks) and how a dead holder is recognised
    _process.pxi    processes by pid: the creator fields, process_alive()
    _counters.pxd   publishing a head/tail with its intent; repair after a death
    _records.pxd    the record layout
    _mapping.pxi    the mapping (of any backing) and the spans that zero-copy views export
    _sysv.pxi       System V segments: shmget/shmat/shmctl, and their Mapping
    _blocks.pxi     the reserve()/view() context managers
    _args.pxd       argument checks
    _scan.pxi       holds_no_buffer(): may Queue pickle an object without a callback?

This file holds what ties them together: attaching, the put and get paths,
the zero-copy blocks' begin and end, stats.  Hot paths are cdef functions
over raw pointers; the Python-facing methods convert arguments to C values
first, run the C code (releasing the GIL to wait or to copy a large
message) and turn the status code into an exception in one place, _raise().

The segment is written by processes we do not trust: every length read from
it is checked against the capacity and the published head before use.
"""

from cpython.buffer cimport PyBuffer_Release
from cpython.bytes cimport (
    PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE,
)
from cpython.pythread cimport PyThread_get_thread_ident
from libc.errno cimport EUSERS
from libc.stdint cimport uint32_t, uint64_t, int64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memchr, memcpy, memcmp, memset

from ringshm._args cimport get_buffer, check_positive_int, check_nonnegative_int
from ringshm._clock cimport NS, now_ns, deadline_from, fast_deadline, lock_deadline
from ringshm._counters cimport intend_tag, publish, repair, repair_tag, settle_tag
from ringshm._locks cimport try_lock, unlock
from ringshm._records cimport record_span
from ringshm._waitq cimport Wait, wait_init, start_wait, wait_turn, wake, wake_all

from ringshm.errors import (
    Empty, Full, MessageTooLarge, RingCorrupted, RingError, ShutDown,
)

# A batch of at least this many bytes starts at the next lap's start when
# the consumers have already freed room there for EARLY_WRAP_ROOM batches of
# its size (RingCore._early_wrap): the wrapped one and two more, so the
# producer can still run ahead of the consumer after the wrap.
cdef uint64_t EARLY_WRAP_MIN_BYTES = 32 * 1024
cdef uint64_t EARLY_WRAP_ROOM = 3
# Copies larger than this release the GIL: below it, releasing and taking
# the GIL back costs more than the memcpy it would let run in parallel.
cdef uint64_t NOGIL_COPY_BYTES = 32 * 1024
# What _get_direct shows its reader of a message: enough for any header of
# Queue's array record (docs/FORMAT.md: 8 + 8 x 32 + 16 bytes).
cdef uint32_t DIRECT_HEAD_BYTES = 512
cdef int64_t FIRST_OWNER_CHECK_NS = 10000000
# How long shutdown() waits for a put that is publishing as it is called.
cdef int64_t SHUTDOWN_PATIENCE_NS = 1000000000

# What a waiter waits for (RingCore._wait_for).
cdef enum:
    AWAIT_DATA = 1        # a message (head != tail), or shutdown
    AWAIT_CONSUMERS = 2   # tail or messages_got moved past seen_*, `arg` bytes fit
    AWAIT_ROOM = 3        # room for a record of `arg` payload bytes, or shutdown

HEADER_SIZE = RS_HEADER_SIZE
RECORD_HEADER = RS_RECORD_HEADER
MIN_CAPACITY = RS_MIN_CAPACITY
MAX_CAPACITY = RS_MAX_CAPACITY
MAX_PAYLOAD = RS_MAX_PAYLOAD
LAYOUT_VERSION = RS_VERSION
# The bridges' counters in the header, in the order of rs_bridge's fields.
BRIDGE_COUNTERS = ("sent", "acked", "received", "redelivered", "put")


include "_process.pxi"
include "_mapping.pxi"
include "_sysv.pxi"

# What a claimed blank segment holds in its magic while its claimer writes
# the header (RingCore._claim_blank): not the magic, not zero.
cdef uint64_t CLAIMED_MAGIC = 0x54494e49474e4952   # "RINGINIT" little-endian

# Forks this process is the child of, counted by a pthread_atfork handler.
# A zero-copy block notes the count when it opens: a forked child's copy of
# an open block then sees another count, and does nothing when it ends (the
# lock, the space and the message are the opener's; SPEC.md, fork() inside
# a block).  A counter, not getpid(): that is a system call in glibc.
cdef uint64_t g_forks = 0


cdef void count_fork_in_child() noexcept nogil:
    global g_forks
    g_forks += 1


pthread_atfork(NULL, NULL, count_fork_in_child)


cdef void gather(char *dst, uint64_t n, Py_buffer *bufs, uint64_t *offsets,
                 Py_ssize_t count) noexcept nogil:
    # The pieces of _put_pieces at their offsets (checked), gaps zeroed.
    cdef uint64_t end = 0
    cdef Py_ssize_t i
    for i in range(count):
        memset(dst + end, 0, offsets[i] - end)
        memcpy(dst + offsets[i], bufs[i].buf, bufs[i].len)
        end = offsets[i] + <uint64_t>bufs[i].len
    memset(dst + end, 0, n - end)


# ---------------------------------------------------------------- the ring

cdef class RingCore:
    """A ring buffer in a shared mapping.  The public class is ringshm.Ring,
    which adds naming, creation, pickling and argument checks."""

    cdef Mapping _mapping
    cdef rs_header *hdr
    cdef rs_presence *presence   # the mapping's: names us in lock words
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
    # What consumers had done when a producer found no room (see _wait_for).
    cdef uint64_t seen_tail
    cdef uint64_t seen_got
    # A reserve() or view() block of this object is open: it holds a lock.
    cdef Span _reserve_span
    cdef Span _view_span
    cdef uint64_t reserve_length
    cdef bint _in_reserve
    cdef bint _in_view
    cdef unsigned long _reserve_thread
    cdef unsigned long _view_thread
    cdef uint64_t _reserve_forks   # g_forks when the block opened
    cdef uint64_t _view_forks
    # Operations of this object in progress (they may wait without the GIL
    # or hold a zero-copy block open); close() while any runs only marks the
    # object closing, and the last one to leave unmaps.
    cdef int _busy
    cdef bint _closing

    def __cinit__(self, *args, **kwargs):
        self.hdr = NULL
        self.data = NULL
        self.presence = NULL
        self._mapping = None
        self._reserve_span = None
        self._view_span = None
        self.corruption = NULL

    # -- attaching ---------------------------------------------------------

    def _use(self, Mapping mapping):
        """Attach to `mapping` (made by a backing, ringshm/_backing.py)."""
        self._mapping = mapping
        self.hdr = <rs_header *>mapping.base
        self.presence = mapping.presence
        self._closing = False   # open() maps again after a creator was slow

    def _bind_liveness(self, int fd):
        """Give the mapping its lock file, a companion of the segment open
        as `fd` (see Mapping.bind_liveness)."""
        self._mapping.bind_liveness(fd, True)
        self.presence = self._mapping.presence

    cdef inline rs_liveness_id *_liveness_id(self) noexcept:
        return <rs_liveness_id *>(<char *>self.hdr + RS_LIVENESS_ID_OFFSET)

    def _claim_blank(self, bint whole):
        """True if this process may write the header of this blank segment
        (and must: nobody else will).  A segment made outside ringshm
        (a C program's shmget) is blank only when every byte (`whole`) is
        zero; a segment this process has just made, when its magic is.  The
        claim is a compare-and-swap on the magic, so of two processes
        racing to adopt the same segment one wins; the other waits for the
        magic as any opener."""
        cdef uint64_t *magic = <uint64_t *>self.hdr.magic
        cdef const char *p = <const char *>self.hdr
        cdef size_t i
        if whole:
            for i in range(self._mapping.length):
                if p[i] != 0:
                    return False
        return rs_cas(magic, 0, CLAIMED_MAGIC)

    def _initialize(self, uint64_t capacity, double recovery_interval, double spin,
                    uint64_t max_messages, bint ephemeral=False):
        """Write a fresh header (the creator only, before anyone attaches).
        `ephemeral`: made with persist=False (RS_FLAG_EPHEMERAL).

        Raises:
            RuntimeError: the mapping has no lock file yet.
        """
        cdef rs_header *h = self.hdr
        cdef timespec ts
        if self.presence == NULL:
            raise RuntimeError("a ring needs its lock file before its header")
        # Not the magic: a claimed blank segment says so until the last store.
        memset(<char *>h + 8, 0, RS_HEADER_SIZE - 8)
        if self._mapping.separate_liveness:
            self._liveness_id().dev = self.presence.dev
            self._liveness_id().ino = self.presence.ino
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
        h.flags = RS_FLAG_EPHEMERAL if ephemeral else 0
        identity = os.urandom(16)
        memcpy(h.identity, PyBytes_AS_STRING(identity), 16)
        # The magic goes last: an opener that sees it sees a whole header.
        rs_store_release(<uint64_t *>h.magic, (<uint64_t *>RS_MAGIC)[0])
        self._adopt_header(h)

    def _validate(self, size_t mapped_length, bint exact=True):
        """Check a header written by somebody else before trusting it.
        `exact`: the segment must be exactly one header and the capacity
        (a file); else at least (a System V segment, which never shrinks
        and which a C program may have made larger).

        Raises:
            RingCorrupted: not a ring, unknown version, a size that does
                not match the mapping, or lock slots on another file than
                the one the creator recorded.
            RuntimeError: the mapping has no lock file yet.
        """
        cdef rs_header *h = self.hdr
        cdef uint64_t cap
        cdef uint64_t dev = 0, ino = 0, need
        if self.presence == NULL:
            raise RuntimeError("a ring needs its lock file before it is used")
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
        need = RS_HEADER_SIZE + cap
        if need > mapped_length or (exact and need != mapped_length):
            raise RingCorrupted(f"segment is {mapped_length} bytes but its header "
                                f"says {need}: truncated or damaged")
        if self._mapping.separate_liveness:
            dev, ino = self.presence.dev, self.presence.ino
        if self._liveness_id().dev != dev or self._liveness_id().ino != ino:
            raise RingCorrupted(
                "the ring's lock slots live on another file than this one: "
                f"the header names device {self._liveness_id().dev} inode "
                f"{self._liveness_id().ino}, this process has {dev}, {ino}")
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
        self.presence = NULL
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
        """False while the creator may still be writing the header."""
        cdef uint64_t magic = rs_load_acquire(<uint64_t *>self.hdr.magic)
        return magic != 0 and magic != CLAIMED_MAGIC

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

    # -- the locks ---------------------------------------------------------

    cdef int _lock_slow(self, rs_lock *lk, int64_t deadline, bint producer) noexcept nogil:
        """Wait for the lock; take it over when its owner is dead."""
        cdef Wait w
        cdef uint64_t token = self.presence.token   # taken by the caller's first try
        cdef uint64_t owner
        cdef int64_t now
        # The first look at the owner comes soon (a waiter that arrives after
        # the death need not wait a whole slice), but not at once: a lock is
        # mostly busy for the length of a copy, and a look costs syscalls.
        cdef int64_t next_check = now_ns() + min(self.slice_ns, FIRST_OWNER_CHECK_NS)
        cdef int rc
        cdef bint last_look = False
        wait_init(&w, deadline, self.spin_ns)
        while True:
            owner = rs_load_acquire(&lk.owner)
            if owner == 0:
                if try_lock(lk, token):
                    return RS_OK
                continue
            if producer and self._shut_down():
                return RS_SHUTDOWN
            if w.spin_until != 0:
                now = 0   # spinning: the wait's own clock bounds it
            else:
                now = now_ns()
            if last_look or now >= next_check or (now != 0 and now >= deadline):
                if owner != token and not rs_holder_alive(self.presence, <char *>self.hdr,
                                                          owner):
                    if rs_cas(&lk.owner, owner, token):
                        rs_add_relaxed(&lk.recoveries, 1)
                        repair(&self.hdr.producer if producer else &self.hdr.consumer)
                        if producer:
                            repair_tag(&self.hdr.producer)
                        return RS_OK
                    continue
                if last_look:
                    return RS_TIMEOUT
                next_check = now + self.slice_ns
            w.check_at = next_check
            rc = wait_turn(&lk.waitq, &w, True, self.slice_ns, &self._closing)
            if rc == RS_TIMEOUT and not last_look:
                # The deadline can pass inside the wait (a spin, or a
                # preemption between our clock and the wait's) without a look
                # at the owner: look once more before failing, or a dead
                # holder makes a non-blocking call fail instead of taking over.
                last_look = True
                continue
            if rc != RS_OK:
                return rc

    cdef inline uint64_t _token(self) except 0:
        # This process's lock token for this segment: taken with its first
        # lock (again after fork, see _liveness.h), then one load.
        if self.presence.token != 0:
            return self.presence.token
        return self._take_slot()

    cdef uint64_t _take_slot(self) except 0:
        cdef int error = 0
        cdef uint64_t token = rs_presence_claim(self.presence, <char *>self.hdr, &error)
        if token != 0:
            return token
        if error == EUSERS:
            raise RingError(f"all {RS_SLOTS} liveness slots of this ring are held by live "
                            "processes: no more processes can take its locks")
        raise OSError(error, f"cannot take a liveness slot of this ring (an OFD lock, "
                             f"fcntl F_OFD_SETLK): {os.strerror(error)}")

    cdef inline bint _shut_down(self) noexcept nogil:
        return (rs_load_relaxed(&self.hdr.flags) & RS_FLAG_SHUTDOWN) != 0

    # -- waiting for data or room (no lock held) ---------------------------

    cdef inline bint _awaited(self, int what, uint64_t arg) noexcept nogil:
        cdef rs_header *h = self.hdr
        if self._shut_down():
            return True
        if what == AWAIT_DATA:
            return rs_load_seq(&h.producer.position) != rs_load_seq(&h.consumer.position)
        if what == AWAIT_CONSUMERS:
            return self._consumers_moved(arg)
        return self._fits_now(arg)

    cdef inline bint _consumers_moved(self, uint64_t span) noexcept nogil:
        # Consumers took something since we looked under the lock, and what
        # is free now could hold the batch's records (padding aside: the
        # check under the lock is exact).  Producers only ever take room, so
        # once this is false only a consumer's publish (which wakes us) can
        # make it true.  The second half keeps waiting producers off the
        # lock when another one has already taken the room freed.
        cdef rs_header *h = self.hdr
        cdef uint64_t tail = rs_load_seq(&h.consumer.position)
        cdef uint64_t used
        if tail == self.seen_tail and rs_load_seq(&h.consumer.messages) == self.seen_got:
            return False
        used = rs_load_acquire(&h.producer.position) - tail
        return used > self._capacity or used + span <= self._capacity   # damage: look

    cdef bint _fits_now(self, uint64_t payload) noexcept nogil:
        # Would one record of `payload` bytes fit at the head as it is now?
        cdef rs_header *h = self.hdr
        cdef uint64_t head = rs_load_acquire(&h.producer.position)
        cdef uint64_t tail = rs_load_seq(&h.consumer.position)
        cdef uint64_t need = record_span(payload)
        cdef uint64_t pos = head & self.mask
        if pos + need > self._capacity:
            need += self._capacity - pos   # the padding to the end
        if head - tail > self._capacity or head - tail + need > self._capacity:
            return False
        if self.max_messages != 0:
            return (rs_load_acquire(&h.producer.messages) + 1
                    - rs_load_seq(&h.consumer.messages)) <= self.max_messages
        return True

    cdef int _wait_for(self, int what, uint64_t arg, Wait *w) noexcept nogil:
        """Sleep, holding no lock, until `what` (AWAIT_*) holds: RS_OK, or
        RS_TIMEOUT, RS_CLOSED, RS_PYERR as wait_turn.  Consumers sleep on
        data_waitq, producers on space_waitq; any number at once, since the
        publisher wakes them all and each re-checks (a stopped or starved
        sleeper delays nobody: it holds nothing)."""
        cdef rs_waitq *q = &self.hdr.data_waitq if what == AWAIT_DATA else &self.hdr.space_waitq
        cdef int rc
        while not self._awaited(what, arg):
            rc = wait_turn(q, w, False, self.slice_ns, &self._closing)
            if rc != RS_OK:
                return rc
        return RS_OK

    cdef int _wait_public(self, int what, uint64_t arg, object timeout) except -1:
        # _wait_data/_wait_room: 1 when it holds, 0 on timeout; raises else.
        cdef int64_t deadline = deadline_from(True, timeout)
        cdef Wait w
        cdef int rc
        self._enter()
        try:
            wait_init(&w, deadline, self.spin_ns)
            with nogil:
                rc = self._wait_for(what, arg, &w)
        finally:
            self._leave()
        if rc == RS_OK:
            return 1
        if rc == RS_TIMEOUT:
            return 0
        return self._raise(rc, what != AWAIT_DATA)

    def _wait_data(self, timeout=None):
        """Block, holding no lock and without the GIL, until the ring holds
        at least one message or is shut down (True), or `timeout` seconds
        passed (False).  Takes nothing: a get() that follows may still find
        the ring empty (another consumer was faster).  For ringshm.asyncio.

        Raises:
            ValueError: the ring is closed (before or during the wait), or a
                bad timeout.  KeyboardInterrupt (or what a signal handler
                raises) during the wait.
        """
        self._check_open()
        return self._wait_public(AWAIT_DATA, 0, timeout) == 1

    def _wait_room(self, size, timeout=None):
        """Block like _wait_data until a message of `size` payload bytes
        would fit now (counting max_messages), or the ring is shut down
        (True), or `timeout` passed (False).  Reserves nothing.

        Raises:
            MessageTooLarge: `size` exceeds max_message_size (it never fits).
            ValueError, KeyboardInterrupt: as _wait_data.
        """
        cdef uint64_t n = check_nonnegative_int(size, "size")
        self._check_open()
        if n > self.max_payload:
            raise MessageTooLarge(f"message of {n} bytes exceeds max_message_size "
                                  f"({self.max_payload})")
        return self._wait_public(AWAIT_ROOM, n, timeout) == 1

    # -- producing ---------------------------------------------------------

    cdef inline bint _early_wrap(self, uint64_t head, uint64_t total_span,
                                 Py_ssize_t count) noexcept nogil:
        """A big batch goes to the start of the next lap, after padding to
        the end, when the consumers have freed room there for it and two
        more of its size: with h' that start, h' + 3 * total_span - tail <=
        capacity.  The working set is then about what is in flight, as a
        pool of samples' is, not the whole capacity (docs/DESIGN.md, "Early
        wraps").  Room for the batch alone is not enough: the padding holds
        the rest of the lap until the consumer passes it, so the producer
        could not put the next batch before the consumer had taken this one
        (64 KiB arrays: a wait per message on each side, a third of the
        throughput).  The padding costs no wait: the batch fits."""
        cdef uint64_t pos = head & self.mask
        cdef uint64_t pad = self._capacity - pos
        # Small batches never wrap early: they gain nothing from it, and the
        # look at the tail below would put the consumers' cache line into
        # every put.  The room at the lap's start cannot be free before the
        # head is that far into the lap (the tail is at most the head).  The
        # padding's length field is 32 bits.
        if (total_span < EARLY_WRAP_MIN_BYTES or pos < EARLY_WRAP_ROOM * total_span
                or (head & 7) != 0 or pad - RS_RECORD_HEADER > RS_MAX_PAYLOAD):
            return False
        self.cached_tail = rs_load_acquire(&self.hdr.consumer.position)
        if head - self.cached_tail > self._capacity or not self._has_room(
                head, pad + EARLY_WRAP_ROOM * total_span, count):
            return False   # no room there yet (or damage, which _find_room reports)
        self.span_start = head
        self.wrap_index = 0
        self.wrap_pad = pad
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

    cdef int _find_room(self, Py_buffer *bufs, Py_ssize_t count) noexcept nogil:
        """With the put lock held: lay the batch out at the head and check
        that it fits now (bytes and, with max_messages, messages); set
        span_start and the wrap.  RS_TIMEOUT when it does not fit: the
        caller lets the lock go before it waits (a waiter holds no lock).
        A batch is at most half the ring, so with its padding it fits an
        empty ring wherever the head stands: no wait depends on anything but
        consumers taking messages."""
        cdef rs_header *h = self.hdr
        cdef uint64_t head = rs_load_relaxed(&h.producer.position)
        cdef uint64_t need
        if (head & 7) != 0:
            # An unaligned head would put a record header across the end.
            return self._corrupt("head is not 8-byte aligned")
        need = self._layout(head, bufs, count)
        if not self._has_room(head, need, count):
            self.cached_tail = rs_load_acquire(&h.consumer.position)
            if head - self.cached_tail > self._capacity:
                return self._corrupt("tail is ahead of head")
            if not self._has_room(head, need, count):
                return RS_TIMEOUT
        self.span_start = head
        return RS_OK

    cdef inline void _publish_head(self, uint64_t head, uint64_t messages,
                                   uint64_t nbytes) noexcept nogil:
        publish(&self.hdr.producer, head, messages, nbytes)
        wake(&self.hdr.data_waitq, RS_WAKE_ALL)

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
        cdef Wait w
        cdef bint waited = False
        if self._reserve_is_mine():
            raise RuntimeError("put inside this ring's own reserve() block would deadlock")
        while True:
            if deadline != 0 and self._looks_full(count, total_span):
                # Wait for room before taking the lock: the lock would only
                # be let go again, and waiting producers would fight for it.
                rc = self._wait_step(AWAIT_CONSUMERS, total_span, &w, &waited, deadline)
                if rc != RS_OK:
                    return self._raise(rc, True)
            rc = self._lock_put(deadline)
            if rc == RS_OK:
                if self._room_fast(count, total_span):
                    return 0
                with nogil:
                    rc = self._find_room(bufs, count)
                if rc == RS_OK:
                    return 0
                # No room: note what the consumers had done when we looked,
                # let the lock go, and sleep until they do more.
                self._note_consumers()
                unlock(&self.hdr.put_lock)
                if rc == RS_TIMEOUT and deadline != 0:
                    rc = self._wait_step(AWAIT_CONSUMERS, total_span, &w, &waited, deadline)
                    if rc == RS_OK:
                        continue
            return self._raise(rc, True)

    cdef inline void _note_consumers(self) noexcept nogil:
        # What a producer that found no room saw (see _consumers_moved).
        self.seen_tail = self.cached_tail
        self.seen_got = rs_load_acquire(&self.hdr.consumer.messages)

    cdef inline bint _looks_full(self, Py_ssize_t count, uint64_t total_span) noexcept nogil:
        # The batch's records cannot fit (padding aside) by the tail as it
        # is now; looks at the tail only when the cached one says so, and
        # never once the ring is shut down (the locked path raises then).
        cdef uint64_t head = rs_load_acquire(&self.hdr.producer.position)
        if self._has_room(head, total_span, count) or self._shut_down():
            return False
        self.cached_tail = rs_load_acquire(&self.hdr.consumer.position)
        if head - self.cached_tail > self._capacity or self._has_room(head, total_span, count):
            return False   # room, or damage that the locked path reports
        self._note_consumers()
        return True

    cdef int _wait_step(self, int what, uint64_t arg, Wait *w, bint *waited,
                        int64_t deadline) noexcept:
        """One wait of a blocking call, holding no lock (see _wait_for); the
        first one of a call counts in its side's `waits` and starts the spin."""
        cdef uint64_t *waits = (&self.hdr.consumer.waits if what == AWAIT_DATA
                                else &self.hdr.producer.waits)
        cdef int rc
        if not waited[0]:
            waited[0] = True
            start_wait(w, deadline, self.spin_ns, waits)
        with nogil:
            rc = self._wait_for(what, arg, w)
        return rc

    cdef inline int _lock_put(self, int64_t deadline) except -1:
        """Take the put lock (RS_OK, or why not); ShutDown is checked under it."""
        cdef int rc
        cdef rs_header *h = self.hdr
        if try_lock(&h.put_lock, self._token()):
            rc = RS_OK
        else:
            with nogil:
                rc = self._lock_slow(&h.put_lock, lock_deadline(deadline), True)
        if rc == RS_OK and self._shut_down():
            unlock(&h.put_lock)
            rc = RS_SHUTDOWN
        return rc

    cdef inline bint _room_fast(self, Py_ssize_t count, uint64_t total_span) noexcept:
        # The fast path: no wrap, room by the cached tail (refreshed once).
        cdef rs_header *h = self.hdr
        cdef uint64_t head = rs_load_relaxed(&h.producer.position)
        if self._early_wrap(head, total_span, count):
            return True
        if (head & self.mask) + total_span <= self._capacity and (head & 7) == 0:
            if not self._has_room(head, total_span, count):
                self.cached_tail = rs_load_acquire(&h.consumer.position)
            if (self._has_room(head, total_span, count)
                    and head - self.cached_tail <= self._capacity):
                self.span_start = head
                self.wrap_index = -1
                return True
        return False

    cdef inline void _end_put(self, uint64_t end, uint64_t messages,
                              uint64_t nbytes) noexcept nogil:
        self._publish_head(end, messages, nbytes)
        unlock(&self.hdr.put_lock)

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

    def _put_pieces(self, pieces, size, block=True, timeout=None):
        """Append one message of `size` bytes gathered from `pieces`, a list
        of (offset, bytes-like) in increasing offsets: each piece copied once
        to its offset, the gaps zeroed, under one lock round (Queue's framed
        records, ringshm/_items.py).

        Raises:
            ValueError: a piece out of order or beyond `size`.
            Full, ShutDown, MessageTooLarge, TypeError: as put().
        """
        cdef int64_t deadline = fast_deadline(block, timeout)
        cdef uint64_t n = check_nonnegative_int(size, "size")
        cdef Py_ssize_t count = len(pieces), i, got = 0
        cdef Py_buffer *bufs
        cdef uint64_t *offsets
        cdef uint64_t end = 0, at
        cdef Py_buffer size_only
        cdef char *dst
        self._check_open()
        if n > self.max_payload:
            raise MessageTooLarge(f"message of {n} bytes exceeds max_message_size "
                                  f"({self.max_payload})")
        bufs = <Py_buffer *>malloc(count * sizeof(Py_buffer) + count * sizeof(uint64_t) + 1)
        if bufs == NULL:
            raise MemoryError()
        offsets = <uint64_t *>(bufs + count)
        try:
            for i in range(count):
                offset, piece = pieces[i]
                offsets[i] = check_nonnegative_int(offset, "piece offset")
                get_buffer(piece, &bufs[i], "piece", False)
                got += 1
                if offsets[i] < end or offsets[i] + <uint64_t>bufs[i].len > n:
                    raise ValueError(f"piece {i} at {offsets[i]} overlaps the one before "
                                     f"or ends beyond the message's {n} bytes")
                end = offsets[i] + <uint64_t>bufs[i].len
            size_only.len = <Py_ssize_t>n
            self._begin_put(&size_only, 1, record_span(n), deadline)
            at = self.span_start
            dst = self._place(&at, 0, n)
            if n >= NOGIL_COPY_BYTES:
                with nogil:
                    gather(dst, n, bufs, offsets, count)
            else:
                gather(dst, n, bufs, offsets, count)
            self._end_put(at, 1, n)
            self._leave()
        finally:
            for i in range(got):
                PyBuffer_Release(&bufs[i])
            free(bufs)

    def put_many(self, messages, block=True, timeout=None, tag=None):
        """Append a batch of messages, all or nothing: they become visible
        together, one after another, and no other producer's message lands
        among them.

        `tag` (a positive int, private: the in bridge's stream sequence) is
        stored with the batch, atomically: _last_tag() returns it exactly
        when the batch is published, even if this process dies half-way.

        Raises:
            Full: the whole batch did not fit in time (nothing was put).
            MessageTooLarge: the batch can never fit in the ring.
            ShutDown, TypeError: as put().  ValueError: a tag that is not
                positive.
        """
        cdef int64_t deadline = deadline_from(block, timeout)
        cdef Py_ssize_t count, i, got = 0
        cdef Py_buffer *bufs
        cdef uint64_t span = 0, nbytes = 0, at
        cdef uint64_t tag_value = 0 if tag is None else check_positive_int(tag, "tag")
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
                if tag_value:
                    intend_tag(&self.hdr.producer, at, tag_value)
                    self._publish_head(at, count, nbytes)
                    settle_tag(&self.hdr.producer, tag_value)
                    unlock(&self.hdr.put_lock)
                else:
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
        cdef Wait w
        cdef bint waited = False
        if self._view_is_mine():
            raise RuntimeError("get inside this ring's own view() block would deadlock")
        while True:
            if deadline != 0 and self._looks_empty():
                # Wait for data before taking the lock: the lock would only
                # be let go again (two atomic exchanges per wait).
                rc = self._wait_step(AWAIT_DATA, 0, &w, &waited, deadline)
                if rc != RS_OK:
                    return self._raise(rc, False)
            if try_lock(&h.get_lock, self._token()):
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
            if rc != RS_OK and self.cached_head != self.read_tail:
                # Padding, a record the fast look refused, or damage (an
                # empty ring, just looked at, needs no second look).
                with nogil:
                    rc = self._next_record()
            if rc == RS_OK:
                return 0
            # Nothing there: hand back any padding skipped, let the lock go,
            # and sleep until a producer publishes (a waiter holds no lock).
            self._end_get(0, 0)
            if rc == RS_TIMEOUT and self._shut_down():
                rc = RS_SHUTDOWN
            elif rc == RS_TIMEOUT and deadline != 0:
                rc = self._wait_step(AWAIT_DATA, 0, &w, &waited, deadline)
                if rc == RS_OK:
                    continue
            return self._raise(rc, False)

    cdef int _lock_get(self, int64_t deadline) except -1:
        """Take the get lock (RS_OK, or why not), off the hot path: get()
        inlines the same in _lock_and_find."""
        cdef int rc
        if try_lock(&self.hdr.get_lock, self._token()):
            return RS_OK
        with nogil:
            rc = self._lock_slow(&self.hdr.get_lock, lock_deadline(deadline), False)
        return rc

    cdef inline bint _looks_empty(self) noexcept nogil:
        # No record between the tail and the head: looks at the head only
        # when the cached one says empty, as the fast path would.
        cdef uint64_t tail = rs_load_relaxed(&self.hdr.consumer.position)
        if self.cached_head != tail:
            return False
        self.cached_head = rs_load_acquire(&self.hdr.producer.position)
        return self.cached_head == tail

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

    cdef int _next_record(self) noexcept nogil:
        """With the get lock held: skip padding and validate the record at
        read_tail; RS_TIMEOUT when there is none.  A record is trusted only
        after its kind and length are checked against the capacity and the
        published head."""
        cdef rs_header *h = self.hdr
        cdef uint64_t tail, avail, pos, span
        cdef uint32_t length, kind
        cdef rs_record *rec
        while True:
            tail = self.read_tail
            if <int64_t>(self.cached_head - tail) <= 0:
                self.cached_head = rs_load_acquire(&h.producer.position)
                if self.cached_head == tail:
                    return RS_TIMEOUT
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
        if self.max_messages:
            # A producer waiting for a message slot checks messages_got,
            # which publish() stores after the (fenced) tail: order that
            # store before our read of `wanted`, as the tail's is.
            rs_fence()
        wake(&self.hdr.space_waitq, RS_WAKE_ALL)

    cdef inline void _end_get(self, uint64_t messages, uint64_t nbytes) noexcept nogil:
        """Publish what was consumed (or only the padding skipped), unlock."""
        cdef uint64_t tail = self.read_tail
        if tail != rs_load_relaxed(&self.hdr.consumer.position) or messages:
            self._publish_tail(tail, messages, nbytes)
        unlock(&self.hdr.get_lock)

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
        self._begin_get(deadline)   # it checks that the ring is open
        return self._take_record()

    def _get_direct(self, bytes actions, reader, block=True, timeout=None):
        """get(), or not, by the oldest message's first byte: `actions` holds
        256 bytes, one per first byte; 0 takes the message and returns it as
        bytes; 1 leaves it in the ring and returns None (the caller reads it
        in place with view()); 2 reads it in the same lock round:
        ``reader(head, length)`` gets the message's first bytes (at most
        DIRECT_HEAD_BYTES) and its length, and returns (offset, destination,
        result); the bytes from offset to the end are copied into
        destination (a writable C-contiguous buffer of exactly that many
        bytes), the message is consumed and result returned.  An empty
        message is left (1).  Queue's records (ringshm/_items.py: one table
        look-up, where a set of first bytes cost a memchr).  The reader runs
        with the get lock held: it must not touch this ring.

        Raises:
            Whatever reader raises (RingCorrupted for a bad header): the
                message stays in the ring.
            ValueError: `actions` is not 256 bytes, or destination is not a
                writable buffer of the size reader's offset implies (the
                message stays).
            Empty, ShutDown, RingCorrupted: as get().
        """
        cdef int64_t deadline = fast_deadline(block, timeout)
        cdef char action = 1
        if actions is None or PyBytes_GET_SIZE(actions) != 256:
            raise ValueError("actions must be 256 bytes, one per first byte")
        self._begin_get(deadline)   # it checks that the ring is open
        if self.rec_length != 0:
            action = PyBytes_AS_STRING(actions)[(<unsigned char *>self.data)[self.rec_offset]]
        if action == 0:
            return self._take_record()
        if action == 2:
            return self._read_direct(reader)
        self._leave_message()
        return None

    cdef object _read_direct(self, reader):
        """The record _begin_get found, read by reader (see _get_direct);
        consume it, end and leave; or leave it in the ring if anything
        raises."""
        cdef uint32_t n = self.rec_length
        cdef Py_buffer buf
        cdef const char *src
        cdef uint64_t start
        try:
            head = PyBytes_FromStringAndSize(self.data + self.rec_offset,
                                             min(n, DIRECT_HEAD_BYTES))
            offset, destination, result = reader(head, n)
            start = check_nonnegative_int(offset, "offset")
            get_buffer(destination, &buf, "destination", True)
            try:
                if start > n or <uint64_t>buf.len != n - start:
                    raise ValueError(f"a destination of {buf.len} bytes for bytes {start} "
                                     f"to {n} of a message")
                src = self.data + self.rec_offset + start
                if buf.len >= <Py_ssize_t>NOGIL_COPY_BYTES:
                    with nogil:
                        memcpy(buf.buf, src, buf.len)
                else:
                    memcpy(buf.buf, src, buf.len)
            finally:
                PyBuffer_Release(&buf)
        except BaseException:
            self._leave_message()
            raise
        self._consume_and_leave()
        return result

    cdef inline bint _record_tagged(self, bytes tags):
        # The record _next_record found: does its first byte appear in tags?
        # (An empty one counts as tagged: it has no first byte to vouch for.)
        if tags is None:
            return False
        if self.rec_length == 0:
            return True
        return memchr(PyBytes_AS_STRING(tags), (<unsigned char *>self.data)[self.rec_offset],
                      PyBytes_GET_SIZE(tags)) != NULL

    cdef inline bytes _copy_record(self):
        """The payload of the record _begin_get (or _next_record) found, as
        bytes; a big one is copied without the GIL."""
        cdef bytes out
        cdef uint32_t n = self.rec_length
        cdef char *dst
        if n < NOGIL_COPY_BYTES:
            return PyBytes_FromStringAndSize(self.data + self.rec_offset, n)
        out = PyBytes_FromStringAndSize(NULL, n)
        dst = PyBytes_AS_STRING(out)
        with nogil:
            memcpy(dst, self.data + self.rec_offset, n)
        return out

    cdef bytes _take_record(self):
        """Copy out and consume the record _begin_get found; end and leave."""
        cdef bytes out
        try:
            out = self._copy_record()
        except BaseException:
            self._leave_message()   # MemoryError: the message stays
            raise
        self._consume_and_leave()
        return out

    cdef inline void _consume_and_leave(self):
        # The end of a get that took the record _begin_get found.
        self._consume_record()
        self._end_get(1, self.rec_length)
        self._leave()

    cdef inline void _leave_message(self):
        # The end of a get that leaves the record in the ring.
        self._end_get(0, 0)
        self._leave()

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
        With big messages, let go of a batch before asking for the next
        (``del batch``): one still held keeps the allocator from reusing its
        memory, and the copy lands outside the caches (1 MiB messages: 0.71x
        the throughput, docs/PERFORMANCE.md).

        Raises:
            Empty, ShutDown, RingCorrupted: as get().
        """
        return self._get_many_untagged(None, max_messages, max_bytes, block, timeout)

    def _get_many_untagged(self, bytes tags, max_messages=1024, max_bytes=256 * 1024,
                           block=True, timeout=None):
        """get_many(), stopping before the first message that is empty or
        begins with one of the bytes of `tags` (Queue reads those in place): an empty list when the
        oldest message does."""
        cdef int64_t deadline = deadline_from(block, timeout)
        cdef Py_ssize_t limit, taken = 0
        cdef uint64_t byte_limit, nbytes = 0
        cdef int rc
        limit = check_positive_int(max_messages, "max_messages")
        byte_limit = 0xFFFFFFFFFFFFFFFF if max_bytes is None else \
            check_positive_int(max_bytes, "max_bytes")
        cdef uint64_t first
        self._begin_get(deadline)   # it checks that the ring is open
        first = self.read_tail
        out = []
        try:
            while not self._record_tagged(tags):
                out.append(self._copy_record())
                taken += 1
                nbytes += self.rec_length
                self._consume_record()
                # Over the byte limit already (a first message bigger than
                # it): no next message can fit, so do not look at it (the
                # look would read the line the producer may be writing).
                if taken >= limit or nbytes > byte_limit:
                    break
                rc = self._next_record_fast()
                if rc != RS_OK:
                    # Padding, a stale cached head, or truly empty: look once
                    # more without waiting.
                    rc = self._next_record()
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

    # -- the out bridge's window --------------------------------------------
    # The NATS out bridge publishes many messages before JetStream has
    # acknowledged any, and consumes each only after its acknowledgement:
    # it looks past the messages in flight without consuming (_peek_many),
    # then consumes the acknowledged ones (_consume).  Both take the get
    # lock, so a consumer that died holding it is repaired first and
    # messages_got is exact: message k of the ring (counting from 0 at its
    # creation) is the one _peek_many numbers k, whatever crashed before.

    def _peek_many(self, start, max_messages, max_bytes=None, timeout=None):
        """Copies of the messages after the first `start` unconsumed ones
        (at most `max_messages`, and `max_bytes` payload bytes but at least
        one), consuming nothing: (sequence, messages), where `sequence` is
        the ring's count of consumed messages plus `start` (the number of
        the first message returned).  An empty list when there are no more.

        Raises:
            Empty: the get lock did not come within `timeout`.
            RingCorrupted: a record fails validation.
            TypeError, ValueError: bad limits, or the ring is closed.
        """
        cdef int64_t deadline = deadline_from(True, timeout)
        cdef Py_ssize_t skip = check_nonnegative_int(start, "start")
        cdef Py_ssize_t limit = check_positive_int(max_messages, "max_messages")
        cdef uint64_t byte_limit = 0xFFFFFFFFFFFFFFFF if max_bytes is None else \
            check_positive_int(max_bytes, "max_bytes")
        cdef uint64_t nbytes = 0, sequence
        cdef int rc
        out = []
        self._enter()
        try:
            sequence = self._lock_window(deadline) + skip
            try:
                while len(out) < limit:
                    rc = self._next_record()
                    if rc == RS_TIMEOUT:
                        break
                    if rc != RS_OK:
                        return self._raise(rc, False)
                    if skip > 0:
                        skip -= 1
                    elif out and nbytes + self.rec_length > byte_limit:
                        break
                    else:
                        out.append(PyBytes_FromStringAndSize(self.data + self.rec_offset,
                                                             self.rec_length))
                        nbytes += self.rec_length
                    self._consume_record()
            finally:
                # Nothing is consumed, not even the padding skipped.
                unlock(&self.hdr.get_lock)
        finally:
            self._leave()
        return sequence, out

    cdef uint64_t _lock_window(self, int64_t deadline) except? 0xFFFFFFFFFFFFFFFF:
        """Take the get lock (raising when it does not come in time) and
        start reading at the tail: the count of messages consumed, exact
        under the lock (a dead holder's publish is repaired first)."""
        cdef int rc = self._lock_get(deadline)
        if rc != RS_OK:
            self._raise(rc, False)
        self.read_tail = rs_load_relaxed(&self.hdr.consumer.position)
        return rs_load_acquire(&self.hdr.consumer.messages)

    def _consume(self, n, sequence, timeout=None):
        """Consume the `n` oldest messages, which _peek_many numbered from
        `sequence` (the count of consumed messages must still be that: the
        caller is the ring's only consumer).  Published like get_many()'s,
        so a process killed here leaves the counters exact.

        Raises:
            RingError: another consumer took messages (the count moved), or
                fewer than `n` messages are in the ring; nothing consumed.
            Empty: the get lock did not come within `timeout`.
            RingCorrupted: a record fails validation.
        """
        cdef int64_t deadline = deadline_from(True, timeout)
        cdef Py_ssize_t count = check_nonnegative_int(n, "n")
        cdef uint64_t expected = check_nonnegative_int(sequence, "sequence")
        cdef uint64_t nbytes = 0, got
        cdef Py_ssize_t done = 0
        cdef int rc = RS_OK
        if count == 0:
            return
        self._enter()
        try:
            got = self._lock_window(deadline)
            if got != expected:
                unlock(&self.hdr.get_lock)
                raise RingError(f"the ring's consumed count is {got}, not {expected}: "
                                "another consumer took messages")
            with nogil:
                while done < count:
                    rc = self._next_record()
                    if rc != RS_OK:
                        break
                    nbytes += self.rec_length
                    self._consume_record()
                    done += 1
                if done == count:
                    self._end_get(count, nbytes)
                else:
                    unlock(&self.hdr.get_lock)
            if rc == RS_TIMEOUT:
                raise RingError(f"only {done} of the {count} messages to consume are in "
                                "the ring")
            if rc != RS_OK:
                return self._raise(rc, False)
        finally:
            self._leave()

    def _last_tag(self, timeout=None):
        """The tag of the last tagged put_many() (0: none).  Takes the put
        lock, so a tagged put that a dead producer left half-published is
        settled first (counted and tagged, or neither).

        Raises:
            Full: the put lock did not come within `timeout`.
            ShutDown: the ring was shut down.
        """
        cdef int64_t deadline = deadline_from(True, timeout)
        cdef int rc
        cdef uint64_t tag
        self._enter()
        try:
            rc = self._lock_put(deadline)
            if rc != RS_OK:
                return self._raise(rc, True)
            tag = rs_load_acquire(&self.hdr.producer.tag.last)
            unlock(&self.hdr.put_lock)
        finally:
            self._leave()
        return tag

    def _identity(self):
        """The ring's 16 random bytes of identity (zero: made before 0.2
        wrote one)."""
        self._check_open()
        return PyBytes_FromStringAndSize(<char *>self.hdr.identity, 16)

    def _bridge_count(self, str counter, n):
        """Add `n` to one of the bridges' counters in the header ("sent",
        "acked", "received", "redelivered", "put"): statistics only.

        Raises:
            KeyError: no such counter.
        """
        cdef Py_ssize_t index = BRIDGE_COUNTERS.index(counter) if counter in BRIDGE_COUNTERS \
            else -1
        cdef uint64_t count = check_nonnegative_int(n, "n")
        self._check_open()
        if index < 0:
            raise KeyError(counter)
        rs_add_relaxed(&self.hdr.bridge.sent + index, count)

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
        if self._reserve_is_mine():
            raise RuntimeError("reserve() blocks of one ring cannot nest")
        if self._in_reserve and self._reserve_forks != g_forks:
            self._drop_inherited(True, None)
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
            unlock(&self.hdr.put_lock)
            self._leave()
            raise
        self._in_reserve = True
        self._reserve_thread = PyThread_get_thread_ident()
        self._reserve_forks = g_forks
        return view

    def _reserve_end(self, view, bint commit):
        """Publish (commit) or drop the reservation; release the put lock.
        A ring closed inside the block drops it."""
        cdef Span span = self._reserve_span
        if not self._in_reserve:
            return
        if self._reserve_forks != g_forks:
            self._drop_inherited(True, view)
            return
        self._in_reserve = False
        self._reserve_span = None
        try:
            if not end_span(span, view):
                # Somebody kept a slice of the view: it could still write
                # into the ring after the message is published.
                unlock(&self.hdr.put_lock)
                raise BufferError("a view of the reserved space outlived its with-block; "
                                  "the message was discarded")
            if commit and not self._closing:
                self._end_put(self.span_end, 1, self.reserve_length)
            else:
                unlock(&self.hdr.put_lock)
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
        if self._view_is_mine():
            raise RuntimeError("view() blocks of one ring cannot nest")
        if self._in_view and self._view_forks != g_forks:
            self._drop_inherited(False, None)
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
        self._view_forks = g_forks
        return view

    def _view_end(self, view, bint consume):
        """Consume (or leave) the viewed message; release the get lock.
        A ring closed inside the block leaves the message."""
        cdef Span span = self._view_span
        cdef uint32_t n = self.rec_length
        if not self._in_view:
            return
        if self._view_forks != g_forks:
            self._drop_inherited(False, view)
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

    cdef inline bint _reserve_is_mine(self):
        # A reserve() block of this thread of this process is open.
        return (self._in_reserve and self._reserve_forks == g_forks
                and self._reserve_thread == PyThread_get_thread_ident())

    cdef inline bint _view_is_mine(self):
        return (self._in_view and self._view_forks == g_forks
                and self._view_thread == PyThread_get_thread_ident())

    cdef void _drop_inherited(self, bint reserve, object view):
        """Forget a reserve() (or view()) block that the process we were
        forked from opened: its lock, its space and its message are not
        ours to publish, consume or unlock (see g_forks)."""
        cdef Span span
        if reserve:
            span = self._reserve_span
            self._reserve_span = None
            self._in_reserve = False
        else:
            span = self._view_span
            self._view_span = None
            self._in_view = False
        if span is not None:
            end_span(span, view)
        self._leave()

    # -- the whole ring ----------------------------------------------------

    def shutdown(self):
        """End the ring for everyone: blocked callers wake at once; put()
        raises ShutDown; get() returns what is left, then raises ShutDown.
        Returns once a put that was publishing elsewhere (another process,
        or another thread of this one) has finished (at most 1 s: a holder
        that is stopped is not waited for longer), so nothing appears in the
        ring after it."""
        cdef rs_header *h
        cdef bint in_own_block
        # Busy while the GIL is released below: a close() from another
        # thread meanwhile must not unmap the header under us.
        self._enter()
        try:
            in_own_block = self._reserve_is_mine()
            h = self.hdr
            rs_fetch_or(&h.flags, RS_FLAG_SHUTDOWN)
            wake_all(&h.put_lock.waitq)
            wake_all(&h.get_lock.waitq)
            wake_all(&h.data_waitq)
            wake_all(&h.space_waitq)
            with nogil:
                self._let_publishing_put_finish(now_ns() + SHUTDOWN_PATIENCE_NS,
                                                in_own_block)
        finally:
            self._leave()

    cdef void _let_publishing_put_finish(self, int64_t deadline,
                                         bint in_own_block) noexcept nogil:
        # A put that took its lock before the flag was set may still be
        # copying: wait until it lets the lock go, so that nothing is
        # published after shutdown() returns (shutdown(immediate=True) of a
        # Queue drains, and must leave it empty).  Bounded: a holder that is
        # stopped must not hang us.  Our own token names every thread of
        # this process: the holder is this thread only inside its own
        # reserve() block (waiting would be waiting for ourselves), else it
        # is another thread, alive since we are.
        cdef timespec pause
        cdef uint64_t owner
        pause.tv_sec = 0
        pause.tv_nsec = 20000
        while now_ns() < deadline:
            owner = rs_load_acquire(&self.hdr.put_lock.owner)
            if owner == 0:
                return
            if owner == self.presence.token:
                if in_own_block:
                    return
            elif not rs_holder_alive(self.presence, <char *>self.hdr, owner):
                return
            nanosleep(&pause, NULL)

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
            "ephemeral": bool(rs_load_relaxed(&h.flags) & RS_FLAG_EPHEMERAL),
            "version": h.version,
            "max_messages": self.max_messages,
            "recovery_interval": self.slice_ns / 1e9,
            "spin": self.spin_ns / 1e3,
            "created": h.created_ns / 1e9,
            "head": head,
            "tail": tail,
            "bridge_sent": rs_load_relaxed(&h.bridge.sent),
            "bridge_acked": rs_load_relaxed(&h.bridge.acked),
            "bridge_received": rs_load_relaxed(&h.bridge.received),
            "bridge_redelivered": rs_load_relaxed(&h.bridge.redelivered),
            "bridge_put": rs_load_relaxed(&h.bridge.put),
        }

    def _lock_owners(self):
        """(put lock owner pid, get lock owner pid), 0 when free, -1 for a
        holder that is gone (its slot was taken again); a pid as the holder
        sees itself, in its own PID namespace: for tests and `ringshm info`."""
        self._check_open()
        return (rs_holder_pid(<char *>self.hdr, rs_load_relaxed(&self.hdr.put_lock.owner)),
                rs_holder_pid(<char *>self.hdr, rs_load_relaxed(&self.hdr.get_lock.owner)))

    def _liveness_token(self):
        """This process's lock token for this ring (taking a slot if it has
        none yet), as it appears in a lock word: for tests.

        Raises:
            RingError: every slot is held by a live process.
            OSError: the file system refused the slot's OFD lock.
        """
        self._check_open()
        return self._token()

    # -- JoinableQueue's task count ----------------------------------------
    # Unfinished tasks = messages put - tasks done.  The producer's count is
    # read through its intent record, so a producer killed between
    # publishing and counting leaves the count exact (see docs/FORMAT.md).

    cdef uint64_t _messages_put(self) noexcept nogil:
        """Messages published so far, counting one whose publisher has not
        (or never will have, if it died) updated the counter yet."""
        cdef rs_side *p = &self.hdr.producer
        cdef uint64_t head, intent_position, intent_messages
        cdef int _attempt
        for _attempt in range(64):
            head = rs_load_seq(&p.position)
            intent_position = rs_load_acquire(&p.intent.position)
            intent_messages = rs_load_acquire(&p.intent.messages)
            # The intent is rewritten before each publish: read it twice so
            # that its two words belong to the same publish.
            if rs_load_acquire(&p.intent.position) != intent_position:
                continue
            if head == intent_position:
                return max(intent_messages, rs_load_acquire(&p.messages))
            break
        return rs_load_acquire(&p.messages)

    def _unfinished_tasks(self):
        """Messages put minus tasks done (0 if a peer's counters say less)."""
        cdef uint64_t done, put
        self._check_open()
        done = rs_load_seq(&self.hdr.tasks_done)
        put = self._messages_put()
        return put - done if put > done else 0

    def _task_done(self, n=1):
        """Count `n` tasks done, atomically; wake join() when none is left.

        Raises:
            ValueError: more tasks done than messages put (nothing counted),
                or the ring is closed.
        """
        cdef uint64_t count = check_nonnegative_int(n, "n")
        cdef uint64_t done
        self._check_open()
        while True:
            done = rs_load_seq(&self.hdr.tasks_done)
            if done + count > self._messages_put():
                raise ValueError("task_done() called too many times")
            if rs_cas(&self.hdr.tasks_done, done, done + count):
                break
        wake_all(&self.hdr.joined_waitq)

    def _wait_joined(self, timeout=None):
        """Block (GIL released, no lock held) until no task is unfinished:
        True; False when `timeout` expires first.  Shutdown does not end it.

        Raises:
            ValueError: the ring is closed (or closed while waiting).
        """
        cdef int64_t deadline = deadline_from(True, timeout)
        cdef Wait w
        cdef int rc
        self._enter()
        try:
            with nogil:
                wait_init(&w, deadline, self.spin_ns)
                while True:
                    if rs_load_seq(&self.hdr.tasks_done) >= self._messages_put():
                        rc = RS_OK
                        break
                    rc = wait_turn(&self.hdr.joined_waitq, &w, False, self.slice_ns,
                                   &self._closing)
                    if rc != RS_OK:
                        break
        finally:
            self._leave()
        if rc == RS_TIMEOUT:
            return False
        if rc != RS_OK:
            self._raise(rc, False)
        return True


include "_blocks.pxi"
include "_scan.pxi"
