# cython: language_level=3, embedsignature=True, boundscheck=False, wraparound=False
# cython: cdivision=True, initializedcheck=False
"""The compiled core of ringshm: RingCore and TopicCore (both SegmentCores),
the Python binding of libringshm.

The ring protocol (records, locks and their recovery, waits, put/get,
batches, zero-copy spans, shutdown, counters) is the C library in
libringshm/, compiled into this extension as one unit (_libringshm.c).
This binding turns Python objects into C values, calls the library
(releasing the GIL to wait or to copy a large message), and maps its
status codes to exceptions in one place, SegmentCore._raise().  It holds no
protocol logic.

    _ring.pxd       C declarations (ringshm.h, the library's binding entry points)
    _clock.pxd      timeouts: the Python arguments as deadlines
    _args.pxd       argument checks
    _mapping.pxi    the mapping (of any backing) and the spans that zero-copy views export
    _sysv.pxi       System V segments: shmget/shmat/shmctl, and their Mapping
    _blocks.pxi     the reserve()/view() context managers (SpanBlock: what they share)
    _waitmany.pxi   wait_many() and Poke: many rings at once
    _scan.pxi       holds_no_buffer(): may Queue pickle an object without a callback?
    _topic.pxi      topics: TopicCore, SubscriptionCore and their blocks

Threads: a RingCore keeps no state of one call; each call's state is a C
struct on that call's stack (a span), so one Ring serves any number of
threads.  The only shared fields are the mapping and the handle, which
live until the last operation in progress has left (_enter/_leave).
"""

cimport cython
from cpython.buffer cimport PyBuffer_Release
from cpython.bytes cimport (
    PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE,
)
from cpython.pythread cimport PyThread_get_thread_ident
from cpython.ref cimport PyObject, Py_DECREF
from libc.stdint cimport uint32_t, uint64_t, int64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memchr, memcpy, memset

from ringshm._args cimport get_buffer, check_positive_int, check_nonnegative_int
from ringshm._clock cimport deadline_from, fast_deadline, relative_ns

import os

from ringshm.errors import (
    Empty, Full, Lagged, MessageTooLarge, RingCorrupted, RingError, RingWrongKind, ShutDown,
)

# Copies larger than this release the GIL: below it, releasing and taking
# the GIL back costs more than the memcpy it would let run in parallel.
cdef size_t NOGIL_COPY_BYTES = 32 * 1024
# What _get_direct shows its reader of a message: enough for any header of
# Queue's array record (docs/FORMAT.md: 8 + 8 x 32 + 16 bytes).
cdef size_t DIRECT_HEAD_BYTES = 512

HEADER_SIZE = RS_HEADER_SIZE
RECORD_HEADER = RS_RECORD_HEADER
MIN_CAPACITY = RS_MIN_CAPACITY
MAX_CAPACITY = RS_MAX_CAPACITY
MAX_PAYLOAD = RS_MAX_PAYLOAD
LAYOUT_VERSION = RS_LAYOUT_VERSION
# The bridges' counters in the header, in the order of rs_bridge's fields.
BRIDGE_COUNTERS = ("sent", "acked", "received", "redelivered", "put")

rs__register_atfork()

include "_mapping.pxi"
include "_sysv.pxi"


def process_alive(int pid, uint64_t start_time=0):
    """True unless process `pid` (started at `start_time` clock ticks after
    boot, when given) is certainly gone: no such pid, a zombie, or a pid
    reused by a process started later."""
    return rs__process_alive(pid, start_time) != 0


def process_start_time(int pid):
    """Start time of `pid` in clock ticks since boot, 0 if unknown."""
    return rs__proc_start_time(pid, NULL)


cdef int check_signals(void *arg) noexcept nogil:
    # The library's interrupt hook: a wait woken by a signal runs Python's
    # handlers; one that raised (Ctrl-C) ends the wait, its exception set.
    with gil:
        return 1 if PyErr_CheckSignals() < 0 else 0


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


cdef Py_ssize_t batch_of(messages, Py_buffer **bufs_out, iovec **iov_out) except -1:
    # The buffers of a batch of bytes-like objects (put_many, publish_many)
    # and their iovecs, in one allocation that release_batch() gives back:
    # the count; 0, holding nothing, for an empty batch.
    cdef Py_ssize_t count, i, got = 0
    cdef Py_buffer *bufs
    cdef iovec *iov
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
        return 0
    bufs = <Py_buffer *>malloc(count * (sizeof(Py_buffer) + sizeof(iovec)))
    if bufs == NULL:
        raise MemoryError()
    iov = <iovec *>(bufs + count)
    try:
        for i in range(count):
            get_buffer(batch[i], &bufs[i], "messages item", False)
            got += 1
            iov[i].iov_base = bufs[i].buf
            iov[i].iov_len = bufs[i].len
    except BaseException:
        release_batch(bufs, got)
        raise
    bufs_out[0] = bufs
    iov_out[0] = iov
    return count


cdef void release_batch(Py_buffer *bufs, Py_ssize_t count) noexcept:
    cdef Py_ssize_t i
    for i in range(count):
        PyBuffer_Release(&bufs[i])
    free(bufs)


cdef extern from "Python.h":
    # PyBytes_FromStringAndSize as C has it: NULL, with the exception set,
    # on failure (RingCore._copy ends its span first, without a try block).
    PyObject *bytes_or_null "PyBytes_FromStringAndSize"(const char *v, Py_ssize_t n)


cdef int pending_error() except -1:
    # Propagate the exception that a C API call has set.
    return -1


cdef inline void copy_maybe_nogil(void *dst, const void *src, size_t n) noexcept:
    if n >= NOGIL_COPY_BYTES:
        with nogil:
            memcpy(dst, src, n)
    else:
        memcpy(dst, src, n)


# ------------------------------------------------------- rings and topics

cdef class SegmentCore:
    """What a ring and a topic share: the mapping of a segment, the
    library's handle over it, the operations in progress, closing, and
    status codes as exceptions.  RingCore (below) and TopicCore
    (_topic.pxi) add their own calls; the public classes are ringshm.Ring
    and ringshm.Topic."""

    cdef Mapping _mapping
    cdef rs_ring *ring           # the library's handle; held (rs_hold) while we keep it
    cdef uint64_t _capacity
    cdef uint64_t max_payload
    # Operations of this object in progress (they may wait without the GIL
    # or hold a zero-copy block open); close() while any runs closes the
    # handle (their waits end, their blocks' ends raise) and the last one
    # to leave lets the mapping go.
    cdef int _busy
    cdef bint _closing
    # "ring" or "topic", for messages.
    cdef str _kind

    def __cinit__(self, *args, **kwargs):
        self.ring = NULL
        self._mapping = None
        self._kind = "ring"

    def __dealloc__(self):
        # The mapping may be gone already (a collector clears _mapping
        # first): let the handle go without touching the segment.
        if self.ring != NULL:
            rs__abandon(self.ring)
            rs_unhold(self.ring)
            self.ring = NULL

    # -- attaching ---------------------------------------------------------

    def _use(self, Mapping mapping):
        """Use `mapping` (made by a backing, ringshm/_backing.py); the handle
        comes with _initialize() or _validate()."""
        self._mapping = mapping
        self._closing = False   # open() maps again after a creator was slow

    def _bind_liveness(self, int fd):
        """Give the mapping its lock file, a companion of the segment open
        as `fd` (see Mapping.bind_liveness)."""
        self._mapping.bind_liveness(fd, True)

    def _claim_blank(self, bint whole):
        """True if this process may write the header of this blank segment
        (and must: nobody else will); see rs__claim_blank."""
        return rs__claim_blank(self._mapping.base, self._mapping.length, whole) != 0

    cdef int _liveness_id(self, rs_liveness_id *out) except -1:
        # The lock file's identity when it is not the segment, else zero.
        if self._mapping.presence == NULL:
            raise RuntimeError(f"a {self._kind} needs its lock file before it is used")
        out.dev = self._mapping.presence.dev if self._mapping.separate_liveness else 0
        out.ino = self._mapping.presence.ino if self._mapping.separate_liveness else 0
        return 0

    cdef int _validated(self, int rc) except -1:
        # The status of rs__validate or rs__validate_topic: attach, or raise.
        if rc == RS_WRONG_KIND:
            raise RingWrongKind(rs_detail().decode("utf-8", "replace"))
        if rc != 0:
            raise RingCorrupted(rs_detail().decode("utf-8", "replace"))
        return self._attach()

    cdef int _attach(self) except -1:
        cdef rs_ring *r = NULL
        self._check(rs__attach(self._mapping.base, self._mapping.length,
                               self._mapping.presence, &r), False)
        rs_hold(r)
        rs_set_interrupt(r, check_signals, NULL)
        self.ring = r
        self._capacity = rs_capacity(r)
        self.max_payload = rs_max_message_size(r)
        return 0

    def _detach(self):
        """Close: with operations of this object in progress (another thread
        waiting, an open reserve()/view() block), their waits end at once
        (ValueError), their blocks' ends raise, and the last one to leave
        lets the mapping go (it is unmapped once no view refers to it)."""
        if self._closing:
            return
        self._closing = True
        if self.ring != NULL:
            rs_close(self.ring)
        if self._busy == 0:
            self._forget_mapping()

    def _detach_quietly(self):
        """Detach without writing one byte of the segment: close() wakes
        every wait queue of the ring (bumping their futex words) for this
        object's own waiting threads; an observer that never waits (`ringshm
        top`, `ringshm ls`) leaves the header as it found it.

        Raises:
            RuntimeError: an operation of this object is in progress (then
                close() is the way: it must wake it).
        """
        if self._busy != 0:
            raise RuntimeError(f"an operation of this {self._kind} is in progress: use close()")
        self._closing = True
        if self.ring != NULL:
            rs__abandon(self.ring)
        self._forget_mapping()

    cdef void _forget_mapping(self) noexcept:
        # noexcept: nothing here raises (dropping the mapping only runs its
        # __dealloc__), and the callers need not look for an exception.
        if self.ring != NULL:
            rs_unhold(self.ring)
            self.ring = NULL
        self._mapping = None

    @cython.final
    cdef inline int _enter(self) except -1:
        if self.ring == NULL or self._closing:
            raise ValueError(f"operation on a closed {self._kind}")
        self._busy += 1
        return 0

    @cython.final
    cdef inline void _leave(self) noexcept:
        self._busy -= 1
        if self._busy == 0 and self._closing:
            self._forget_mapping()

    def _magic_present(self):
        """False while the creator may still be writing the header."""
        return rs__magic_present(self._mapping.base) != 0

    @cython.final
    cdef inline int _check_open(self) except -1:
        if self.ring == NULL or self._closing:
            raise ValueError(f"operation on a closed {self._kind}")
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
        return self.ring == NULL or self._closing

    @property
    def is_shutdown(self):
        """True once somebody called shutdown()."""
        self._check_open()
        return rs_is_shutdown(self.ring) != 0

    # -- status to exception: the one place -------------------------------

    @cython.final
    cdef int _check(self, int rc, bint producer) except -1:
        if rc >= 0:
            return 0
        return self._raise(rc, producer)

    cdef int _raise(self, int rc, bint producer) except -1:
        detail = rs_detail().decode("utf-8", "replace")
        if rc == RS_FULL:
            raise Full(f"no room in the {self._kind}")
        if rc == RS_EMPTY:
            raise Empty(f"no message in the {self._kind}")
        if rc == RS_SHUTDOWN:
            raise ShutDown(f"the {self._kind} was shut down")
        if rc == RS_CORRUPTED:
            raise RingCorrupted(f"{self._kind} segment is corrupted: {detail}")
        if rc == RS_INTERRUPTED:
            return -1   # the exception a signal handler raised is set
        if rc == RS_CLOSED:
            raise ValueError(detail or f"the {self._kind} was closed while waiting")
        if rc == RS_TOO_LARGE:
            raise MessageTooLarge(detail)
        if rc == RS_DEADLOCK:
            raise RuntimeError(detail)
        if rc == RS_INVALID:
            raise ValueError(detail)
        if rc == RS_NO_SLOT:
            raise RingError(detail)
        if rc == RS_WRONG_KIND:
            raise RingWrongKind(detail)
        if rc == RS_NOT_OWNER:
            raise RuntimeError(detail or "this belongs to the process it was forked from")
        if rc == RS_BUSY:
            if producer:
                raise Full(f"the {self._kind}'s put lock did not come in time")
            raise Empty(f"the {self._kind}'s get lock did not come in time")
        if -4096 < rc < 0:
            raise OSError(-rc, detail or os.strerror(-rc))
        raise SystemError(f"ringshm: unknown status {rc}: {rs_strerror(rc).decode()}")

    def _identity(self):
        """The segment's 16 random bytes of identity (zero: made before 0.2
        wrote one)."""
        cdef unsigned char identity[16]
        self._check_open()
        rs__identity(self.ring, identity)
        return PyBytes_FromStringAndSize(<char *>identity, 16)

    def _lock_owners(self):
        """(put lock owner pid, get lock owner pid), 0 when free, -1 for a
        holder that is gone (its slot was taken again); a pid as the holder
        sees itself, in its own PID namespace: for tests and `ringshm info`."""
        cdef int64_t put_owner, get_owner
        self._check_open()
        rs__lock_owners(self.ring, &put_owner, &get_owner)
        return put_owner, get_owner

    def _liveness_token(self):
        """This process's lock token for this segment (taking a slot if it
        has none yet), as it appears in a lock word: for tests.

        Raises:
            RingError: every slot is held by a live process.
            OSError: the file system refused the slot's OFD lock.
        """
        cdef uint64_t token = 0
        self._check_open()
        self._check(rs__token(self.ring, &token), False)
        return token


# ---------------------------------------------------------------- the ring

cdef class RingCore(SegmentCore):
    """A ring buffer in a shared mapping.  The public class is ringshm.Ring,
    which adds naming, creation, pickling and argument checks."""

    # Open reserve() blocks by thread: where each one's record ends.
    cdef dict _reserve_ends

    def __cinit__(self, *args, **kwargs):
        self._reserve_ends = {}

    def _initialize(self, uint64_t capacity, double recovery_interval, double spin,
                    uint64_t max_messages, bint ephemeral=False):
        """Write a fresh header (the creator only, before anyone attaches).
        `ephemeral`: made with persist=False.

        Raises:
            RuntimeError: the mapping has no lock file yet.
        """
        cdef rs_liveness_id liveness
        cdef unsigned char identity[16]
        self._liveness_id(&liveness)
        self._check(rs__random_identity(identity), False)
        rs__init_header(self._mapping.base, capacity, recovery_interval, spin, max_messages,
                        ephemeral, &liveness if liveness.ino else NULL, identity)
        self._attach()

    def _validate(self, size_t mapped_length, bint exact=True):
        """Check a header written by somebody else before trusting it.
        `exact`: the segment must be exactly one header and the capacity
        (a file); else at least (a System V segment).

        Raises:
            RingWrongKind: a topic, not a ring (nothing was changed).
            RingCorrupted: not a ring, unknown version, a size that does
                not match the mapping, or lock slots on another file than
                the one the creator recorded.
            RuntimeError: the mapping has no lock file yet.
        """
        cdef rs_liveness_id liveness
        self._liveness_id(&liveness)
        self._validated(rs__validate(self._mapping.base, mapped_length, exact, &liveness))

    # -- producing ---------------------------------------------------------

    @cython.final
    cdef inline int _reserve(self, size_t n, rs_span *span, int64_t deadline, int brief) except -1:
        """Enter, then take room and the put lock for one record of `n`
        bytes: a try with the GIL held (no wait), then, if it would wait,
        the whole call without the GIL.  On failure: raises, having left.
        `brief`: RS__BRIEF when the caller only copies before it commits
        (no Python code runs in between: the span need not be noted in the
        thread's table of held locks); 0 for a block.  RS__HELD always:
        this object holds the handle (rs_hold) and counts its own calls and
        blocks in progress (_enter/_leave), so the library takes no
        reference of its own (two locked instructions a call)."""
        cdef int rc
        self._enter()
        if n < NOGIL_COPY_BYTES:
            rc = rs__reserve(self.ring, n, span, deadline, RS__TRY | RS__HELD | brief)
        else:
            rc = RS__AGAIN
        if rc == RS__AGAIN:
            with nogil:
                rc = rs__reserve(self.ring, n, span, deadline, RS__HELD | brief)
        if rc != 0:
            self._leave()
            return self._raise(rc, True)
        return 0

    @cython.final
    cdef inline int _commit(self, rs_span *span) except -1:
        cdef int rc = rs_commit(self.ring, span)
        self._leave()
        return self._check(rc, True)

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
            self._put_one(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), deadline)
            return
        get_buffer(data, &buf, "data", False)
        try:
            self._put_one(buf.buf, buf.len, deadline)
        finally:
            PyBuffer_Release(&buf)

    @cython.final
    cdef inline int _put_one(self, const void *data, size_t n, int64_t deadline) except -1:
        cdef rs_span span
        if n > self.max_payload:
            raise MessageTooLarge(f"message of {n} bytes exceeds max_message_size "
                                  f"({self.max_payload})")
        self._reserve(n, &span, deadline, RS__BRIEF)
        copy_maybe_nogil(span.data, data, n)
        return self._commit(&span)

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
        cdef uint64_t end = 0
        cdef rs_span span
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
            self._reserve(n, &span, deadline, RS__BRIEF)
            if n >= NOGIL_COPY_BYTES:
                with nogil:
                    gather(<char *>span.data, n, bufs, offsets, count)
            else:
                gather(<char *>span.data, n, bufs, offsets, count)
            self._commit(&span)
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
        cdef Py_ssize_t count
        cdef Py_buffer *bufs = NULL
        cdef iovec *iov = NULL
        cdef uint64_t tag_value = 0 if tag is None else check_positive_int(tag, "tag")
        cdef int rc
        self._check_open()
        count = batch_of(messages, &bufs, &iov)
        if count == 0:
            return
        try:
            self._enter()
            try:
                with nogil:
                    rc = rs__put_many(self.ring, iov, count, tag_value, deadline)
            finally:
                self._leave()
            self._check(rc, True)
        finally:
            release_batch(bufs, count)

    # -- consuming ---------------------------------------------------------

    @cython.final
    cdef inline int _view(self, rs_span *span, int64_t deadline, int brief) except -1:
        """Enter, then take the get lock and the oldest message (a try with
        the GIL held, then the whole call without it).  On failure: raises,
        having left.  On success the caller ends the span and leaves.
        `brief`: as _reserve's (get, get_into: a copy; not get_many, whose
        list may run the garbage collector, nor _get_direct's reader)."""
        cdef int rc
        self._enter()
        rc = rs__view(self.ring, span, deadline, RS__TRY | RS__HELD | brief)
        if rc == RS__AGAIN:
            with nogil:
                rc = rs__view(self.ring, span, deadline, RS__HELD | brief)
        if rc != 0:
            self._leave()
            return self._raise(rc, False)
        return 0

    @cython.final
    cdef inline int _end_view(self, rs_span *span, bint consume) except -1:
        cdef int rc = rs_release(self.ring, span) if consume else rs_keep(self.ring, span)
        self._leave()
        return self._check(rc, False)

    @cython.final
    cdef inline bytes _copy(self, rs_span *span):
        """The message the span shows, as bytes; a big one copied without
        the GIL.  Leaves the message (and the object) if this fails.  (No
        try block: entering one saves the thread's exception state, which
        cost get() a tenth of its instructions.)"""
        cdef bint big = span.len >= NOGIL_COPY_BYTES
        cdef PyObject *made = bytes_or_null(NULL if big else <char *>span.data, span.len)
        cdef bytes out
        if made == NULL:
            self._end_view(span, False)
            pending_error()
        out = <bytes>made   # a second reference: the call's is dropped
        Py_DECREF(out)
        if big:
            copy_maybe_nogil(PyBytes_AS_STRING(out), span.data, span.len)
        return out

    def get(self, block=True, timeout=None):
        """Remove and return the oldest message.

        Raises:
            Empty: nothing in time.  ShutDown: shut down and drained.
            RingCorrupted: the next record fails validation.
            ValueError: the ring was closed (the message stays in the ring).
        """
        cdef rs_span span
        cdef int64_t deadline = fast_deadline(block, timeout)
        self._view(&span, deadline, RS__BRIEF)   # it checks that the ring is open
        out = self._copy(&span)
        self._end_view(&span, True)
        return out

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
        message is left (1).  Queue's records (ringshm/_items.py).  The
        reader runs with the get lock held: it must not touch this ring.

        Raises:
            Whatever reader raises (RingCorrupted for a bad header): the
                message stays in the ring.
            ValueError: `actions` is not 256 bytes, or destination is not a
                writable buffer of the size reader's offset implies (the
                message stays).
            Empty, ShutDown, RingCorrupted: as get().
        """
        cdef rs_span span
        cdef int64_t deadline = fast_deadline(block, timeout)
        cdef char action = 1
        if actions is None or PyBytes_GET_SIZE(actions) != 256:
            raise ValueError("actions must be 256 bytes, one per first byte")
        self._view(&span, deadline, 0)   # it checks that the ring is open
        if span.len != 0:
            action = PyBytes_AS_STRING(actions)[(<unsigned char *>span.data)[0]]
        if action == 0:
            out = self._copy(&span)
            self._end_view(&span, True)
            return out
        if action == 2:
            return self._read_direct(&span, reader)
        self._end_view(&span, False)
        return None

    cdef object _read_direct(self, rs_span *span, reader):
        """The message the span shows, read by reader (see _get_direct);
        consume it; or leave it in the ring if anything raises."""
        cdef size_t n = span.len
        cdef Py_buffer buf
        cdef uint64_t start
        try:
            head = PyBytes_FromStringAndSize(<char *>span.data, min(n, DIRECT_HEAD_BYTES))
            offset, destination, result = reader(head, n)
            start = check_nonnegative_int(offset, "offset")
            get_buffer(destination, &buf, "destination", True)
            try:
                if start > n or <uint64_t>buf.len != n - start:
                    raise ValueError(f"a destination of {buf.len} bytes for bytes {start} "
                                     f"to {n} of a message")
                copy_maybe_nogil(buf.buf, <char *>span.data + start, buf.len)
            finally:
                PyBuffer_Release(&buf)
        except BaseException:
            self._end_view(span, False)
            raise
        self._end_view(span, True)
        return result

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
        cdef rs_span span
        cdef int64_t deadline = deadline_from(block, timeout)
        cdef size_t n
        self._check_open()
        get_buffer(buffer, &buf, "buffer", True)
        try:
            self._view(&span, deadline, RS__BRIEF)
            n = span.len
            if <uint64_t>buf.len < n:
                self._end_view(&span, False)
                raise ValueError(f"buffer of {buf.len} bytes is too small for the "
                                 f"next message ({n} bytes)")
            copy_maybe_nogil(buf.buf, span.data, n)
            self._end_view(&span, True)
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
        begins with one of the bytes of `tags` (Queue reads those in place):
        an empty list when the oldest message does."""
        cdef int64_t deadline = deadline_from(block, timeout)
        cdef Py_ssize_t limit, taken = 0
        cdef uint64_t byte_limit, nbytes = 0
        cdef rs_span span
        cdef bint consume_shown = False
        cdef const char *tag_bytes = NULL
        cdef Py_ssize_t tag_count = 0
        limit = check_positive_int(max_messages, "max_messages")
        byte_limit = 0xFFFFFFFFFFFFFFFF if max_bytes is None else \
            check_positive_int(max_bytes, "max_bytes")
        if tags is not None:
            tag_bytes = PyBytes_AS_STRING(tags)
            tag_count = PyBytes_GET_SIZE(tags)
        self._view(&span, deadline, 0)   # it checks that the ring is open
        out = []
        try:
            while span.data != NULL:
                # A tagged message (or an empty one, which has no first byte
                # to vouch for it) is read in place by the caller: stop.
                if tag_bytes != NULL and (span.len == 0 or memchr(
                        tag_bytes, (<unsigned char *>span.data)[0], tag_count) != NULL):
                    break
                out.append(self._copy_kept(&span))
                taken += 1
                nbytes += span.len
                # Over a limit (the byte limit already, with a first message
                # bigger than it): take this one and do not look at the next
                # (the look would read the line the producer may be writing).
                if taken >= limit or nbytes > byte_limit:
                    consume_shown = True
                    break
                if rs_view_next(self.ring, &span) != 0 or nbytes + span.len > byte_limit:
                    break   # none ready, one too big, or damage (the next get reports it)
        except BaseException:
            rs_rewind(self.ring, &span)   # nothing is consumed unless returned
            self._end_view(&span, False)
            raise
        # Publishes the messages stepped past, and the one shown if taken.
        self._end_view(&span, consume_shown)
        return out

    @cython.final
    cdef inline bytes _copy_kept(self, rs_span *span):
        # As _copy, leaving the span open when it fails (the caller rewinds).
        cdef bytes out
        if span.len < NOGIL_COPY_BYTES:
            return PyBytes_FromStringAndSize(<char *>span.data, span.len)
        out = PyBytes_FromStringAndSize(NULL, span.len)
        copy_maybe_nogil(PyBytes_AS_STRING(out), span.data, span.len)
        return out

    # -- the out bridge's window --------------------------------------------
    # The NATS out bridge publishes many messages before JetStream has
    # acknowledged any, and consumes each only after its acknowledgement:
    # it looks past the messages in flight without consuming (_peek_many),
    # then consumes the acknowledged ones (_consume).  Both take the get
    # lock, so a consumer that died holding it is repaired first and
    # messages_got is exact: message k of the ring (counting from 0 at its
    # creation) is the one _peek_many numbers k, whatever crashed before.

    cdef uint64_t _window(self, rs_span *span, int64_t deadline) except? 0xFFFFFFFFFFFFFFFF:
        # Enter and open a window (see rs__window): the count consumed.
        cdef uint64_t consumed = 0
        cdef int rc
        self._enter()
        with nogil:
            rc = rs__window(self.ring, span, deadline, &consumed)
        if rc != 0:
            self._leave()
            self._raise(rc, False)
        return consumed

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
        cdef rs_span span
        cdef int rc = 0
        out = []
        self._check_open()
        sequence = self._window(&span, deadline) + skip
        try:
            while len(out) < limit and span.data != NULL:
                if skip > 0:
                    skip -= 1
                elif out and nbytes + span.len > byte_limit:
                    break
                else:
                    out.append(PyBytes_FromStringAndSize(<char *>span.data, span.len))
                    nbytes += span.len
                rc = rs_view_next(self.ring, &span)
                if rc != 0 and rc != RS_EMPTY:
                    break
        finally:
            # Nothing is consumed, not even the padding skipped.
            rs__window_close(self.ring, &span)
            self._leave()
        if rc != 0 and rc != RS_EMPTY:
            self._raise(rc, False)
        return sequence, out

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
        cdef uint64_t got
        cdef Py_ssize_t done = 0
        cdef rs_span span
        cdef int rc = 0
        if count == 0:
            return
        self._check_open()
        got = self._window(&span, deadline)
        try:
            if got != expected:
                rs__window_close(self.ring, &span)
                raise RingError(f"the ring's consumed count is {got}, not {expected}: "
                                "another consumer took messages")
            while done < count and span.data != NULL:
                rc = rs_view_next(self.ring, &span)
                done += 1
                if rc != 0 and rc != RS_EMPTY:
                    break
            if done == count and (rc == 0 or rc == RS_EMPTY):
                rc = rs_keep(self.ring, &span)   # publishes the `count` stepped past
                if rc != 0:
                    self._raise(rc, False)
                return
            rs__window_close(self.ring, &span)
        finally:
            self._leave()
        if rc != 0 and rc != RS_EMPTY:
            self._raise(rc, False)
        raise RingError(f"only {done} of the {count} messages to consume are in the ring")

    def _last_tag(self, timeout=None):
        """The tag of the last tagged put_many() (0: none).  Takes the put
        lock, so a tagged put that a dead producer left half-published is
        settled first (counted and tagged, or neither).

        Raises:
            Full: the put lock did not come within `timeout`.
            ShutDown: the ring was shut down.
        """
        cdef int64_t deadline = deadline_from(True, timeout)
        cdef uint64_t tag = 0
        cdef int rc
        self._enter()
        try:
            with nogil:
                rc = rs__last_tag(self.ring, deadline, &tag)
        finally:
            self._leave()
        self._check(rc, True)
        return tag

    def _bridge_count(self, str counter, n):
        """Add `n` to one of the bridges' counters in the header ("sent",
        "acked", "received", "redelivered", "put"): statistics only.

        Raises:
            KeyError: no such counter.
        """
        cdef uint64_t count = check_nonnegative_int(n, "n")
        self._check_open()
        if counter not in BRIDGE_COUNTERS:
            raise KeyError(counter)
        self._check(rs__bridge_add(self.ring, BRIDGE_COUNTERS.index(counter), count), False)

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
            ValueError: the ring was closed inside the block (nothing was
                published).
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
            ValueError: the ring was closed inside the block (the message
                stays in the ring).
        """
        return ViewBlock(self, timeout)

    def _reserved_end(self):
        """Inside this thread's reserve() block: the head counter just past
        its record, once published (Queue's side files, _sidefile.py)."""
        end = self._reserve_ends.get(PyThread_get_thread_ident())
        if end is None:
            raise RuntimeError("_reserved_end() outside a reserve() block")
        return end

    # -- the whole ring ----------------------------------------------------

    def shutdown(self):
        """End the ring for everyone: blocked callers wake at once; put()
        raises ShutDown; get() returns what is left, then raises ShutDown.
        Returns once a put that was publishing elsewhere (another process,
        or another thread of this one) has finished (at most 1 s: a holder
        that is stopped is not waited for longer), so nothing appears in the
        ring after it."""
        cdef int rc
        self._enter()
        try:
            with nogil:
                rc = rs_shutdown(self.ring, 0)
        finally:
            self._leave()
        self._check(rc, False)

    def qsize(self):
        """Messages in the ring now (a snapshot)."""
        self._check_open()
        return rs_count(self.ring)

    def __len__(self):
        self._check_open()
        return rs_count(self.ring)

    def empty(self):
        """True if the ring holds no message now (a snapshot)."""
        self._check_open()
        return rs_count(self.ring) == 0

    def full(self):
        """True if a 1-byte message would not fit now (a snapshot)."""
        self._check_open()
        return rs_full(self.ring) == 1

    def stats(self):
        """Counters kept in the segment, as a dict (a snapshot)."""
        cdef rs_stats_t s
        self._enter()
        try:
            self._check(rs_stats(self.ring, &s), False)
        finally:
            self._leave()
        return {
            "capacity": s.capacity,
            "used_bytes": s.used_bytes,
            "messages": s.messages,
            "messages_put": s.messages_put,
            "bytes_put": s.bytes_put,
            "messages_got": s.messages_got,
            "bytes_got": s.bytes_got,
            "put_waits": s.put_waits,
            "get_waits": s.get_waits,
            "put_timeouts": s.put_timeouts,
            "get_timeouts": s.get_timeouts,
            "lock_recoveries": s.lock_recoveries,
            "creator_pid": s.creator_pid,
            "creator_alive": bool(s.creator_alive),
            "shutdown": bool(s.shutdown),
            "ephemeral": bool(s.ephemeral),
            "version": s.version,
            "max_messages": s.max_messages,
            "recovery_interval": s.recovery_interval,
            "spin": s.spin,
            "created": s.created,
            "head": s.head,
            "tail": s.tail,
            "bridge_sent": s.bridge_sent,
            "bridge_acked": s.bridge_acked,
            "bridge_received": s.bridge_received,
            "bridge_redelivered": s.bridge_redelivered,
            "bridge_put": s.bridge_put,
        }

    # -- waiting without taking (ringshm.asyncio) ----------------------------

    cdef int _wait_public(self, int kind, size_t size, object timeout) except -1:
        # 1 when it holds, 0 on timeout; raises else.
        cdef int64_t wait_ns = relative_ns(deadline_from(True, timeout))
        cdef int rc
        self._enter()
        try:
            with nogil:
                if kind == 0:
                    rc = rs_wait_data(self.ring, wait_ns)
                elif kind == 1:
                    rc = rs_wait_room(self.ring, size, wait_ns)
                else:
                    rc = rs_wait_joined(self.ring, wait_ns)
        finally:
            self._leave()
        if rc == 0:
            return 1
        if rc == RS_EMPTY or rc == RS_FULL or rc == RS_BUSY:
            return 0
        return self._raise(rc, kind == 1)

    def _wait_data(self, timeout=None):
        """Block, holding no lock and without the GIL, until the ring holds
        at least one message or is shut down and drained (True: no put that
        began before the shutdown can still publish), or `timeout` seconds
        passed (False).  Takes nothing: a get() that follows may still find
        the ring empty (another consumer was faster).  For ringshm.asyncio.

        Raises:
            ValueError: the ring is closed (before or during the wait), or a
                bad timeout.  KeyboardInterrupt (or what a signal handler
                raises) during the wait.
        """
        self._check_open()
        return self._wait_public(0, 0, timeout) == 1

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
        return self._wait_public(1, n, timeout) == 1

    # -- JoinableQueue's task count ----------------------------------------

    def _unfinished_tasks(self):
        """Messages put minus tasks done (0 if a peer's counters say less)."""
        self._check_open()
        return rs_unfinished_tasks(self.ring)

    def _task_done(self, n=1):
        """Count `n` tasks done, atomically; wake join() when none is left.

        Raises:
            ValueError: more tasks done than messages put (nothing counted),
                or the ring is closed.
        """
        cdef uint64_t count = check_nonnegative_int(n, "n")
        self._check_open()
        self._check(rs_task_done(self.ring, count), False)

    def _wait_joined(self, timeout=None):
        """Block (GIL released, no lock held) until no task is unfinished:
        True; False when `timeout` expires first.  Shutdown does not end it;
        close() does.

        Raises:
            ValueError: the ring is closed (or closed while waiting).
        """
        self._check_open()
        return self._wait_public(2, 0, timeout) == 1


include "_blocks.pxi"
include "_scan.pxi"
include "_topic.pxi"
include "_waitmany.pxi"
