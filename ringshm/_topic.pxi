# Topics: publish/subscribe over one log (libringshm/src/topic.c).  The
# compiled halves of ringshm.Topic and its subscriptions: TopicCore (a
# SegmentCore: the same mapping, attach and lifecycle as a ring's) and
# SubscriptionCore, with the context managers of their zero-copy blocks.
# Included into _ring.pyx.  The binding keeps the topic's handle as an
# rs_ring * (it makes and attaches the segment itself, as a ring's); topic.c's
# rs_topic * is the same handle, hence the casts.

from collections import namedtuple

TOPIC_MAX_SUBSCRIBERS = RS_TOPIC_MAX_SUBSCRIBERS
TOPIC_MAX_HISTORY = RS_TOPIC_MAX_HISTORY

#: One subscriber as the topic's table shows it (Topic.subscribers()).
SubscriberInfo = namedtuple("SubscriberInfo", [
    "entry", "pid", "tethered", "stalled", "alive", "position", "lag_bytes",
    "lag_messages", "messages", "bytes", "missed", "lags", "stall_timeout", "since"])


def topic_header_size(uint32_t history):
    """Bytes before a topic's data area: its header page, the subscriber
    table and the history index, rounded to a page."""
    if history > RS_TOPIC_MAX_HISTORY:
        raise ValueError(f"history must be at most {RS_TOPIC_MAX_HISTORY}, not {history}")
    return rs__topic_header_size(history)


cdef class TopicCore(SegmentCore):
    """A topic in a shared mapping: publishing, shutdown, statistics, and
    making subscriptions.  The public class is ringshm.Topic."""

    def __cinit__(self, *args, **kwargs):
        self._kind = "topic"

    cdef inline rs_topic *topic(self) noexcept nogil:
        return <rs_topic *>self.ring

    def _initialize(self, uint64_t capacity, double recovery_interval, double spin,
                    uint32_t history, bint ephemeral=False):
        """Write a fresh topic header (the creator only, before anyone
        attaches).

        Raises:
            RuntimeError: the mapping has no lock file yet.
        """
        cdef rs_liveness_id liveness
        cdef unsigned char identity[16]
        self._liveness_id(&liveness)
        self._check(rs__random_identity(identity), False)
        rs__init_topic_header(self._mapping.base, capacity, recovery_interval, spin, ephemeral,
                              &liveness if liveness.ino else NULL, identity, history)
        self._attach()

    def _validate(self, size_t mapped_length, bint exact=True):
        """Check a topic header written by somebody else before trusting it.

        Raises:
            RingWrongKind: a ring, not a topic (nothing was changed).
            RingCorrupted: as RingCore._validate.
        """
        cdef rs_liveness_id liveness
        self._liveness_id(&liveness)
        self._validated(rs__validate_topic(self._mapping.base, mapped_length, exact,
                                           &liveness))

    def _segment_kind(self):
        """What the mapped header's magic says: "ring", "topic" or None."""
        return (None, "ring", "topic")[rs__segment_kind(self._mapping.base) + 1]

    # -- publishing --------------------------------------------------------

    def publish(self, data, block=True, timeout=None):
        """Append one message for every subscriber.

        Raises:
            Full: no room in time (a tethered subscriber is behind).
            ShutDown: the topic was shut down.
            MessageTooLarge: larger than max_message_size.
            TypeError: data is not bytes-like.
        """
        cdef Py_buffer buf
        cdef int64_t wait_ns = relative_ns(deadline_from(block, timeout))
        cdef int rc
        self._check_open()
        get_buffer(data, &buf, "data", False)
        try:
            if <uint64_t>buf.len > self.max_payload:
                raise MessageTooLarge(f"message of {buf.len} bytes exceeds max_message_size "
                                      f"({self.max_payload})")
            self._enter()
            try:
                with nogil:
                    rc = rs_topic_publish(self.topic(), buf.buf, buf.len, wait_ns)
            finally:
                self._leave()
        finally:
            PyBuffer_Release(&buf)
        self._check(rc, True)

    def publish_nowait(self, data):
        """publish(data, block=False)."""
        self.publish(data, False)

    def publish_many(self, messages, block=True, timeout=None):
        """Append a batch, all or nothing: every subscriber receives it
        contiguous, no other publisher's message inside it.

        Raises:
            Full: the whole batch did not fit in time (nothing published).
            MessageTooLarge: the batch can never fit (more than half the
                capacity).
            ShutDown, TypeError: as publish().
        """
        cdef int64_t wait_ns = relative_ns(deadline_from(block, timeout))
        cdef Py_ssize_t count
        cdef Py_buffer *bufs = NULL
        cdef iovec *iov = NULL
        cdef int rc
        self._check_open()
        count = batch_of(messages, &bufs, &iov)
        if count == 0:
            return
        try:
            self._enter()
            try:
                with nogil:
                    rc = rs_topic_publish_many(self.topic(), iov, count, wait_ns)
            finally:
                self._leave()
            self._check(rc, True)
        finally:
            release_batch(bufs, count)

    def reserve(self, size, timeout=None):
        """Zero-copy publish, as a context manager: ``with topic.reserve(n)
        as buf:`` gives a writable memoryview of exactly `size` bytes in the
        log, published when the block ends normally and dropped if it
        raises.  The publishers' lock is held for the whole block.

        Raises:
            Full, MessageTooLarge, ShutDown: as publish().
            RuntimeError: a publish of this topic inside the block (deadlock).
            BufferError: a slice of the view outlived the block (dropped).
            ValueError: the topic was closed inside the block.
        """
        return TopicReserveBlock(self, size, timeout)

    def shutdown(self):
        """End the topic for everyone: publishing raises ShutDown; each
        subscriber receives what it still has to take, then ShutDown."""
        cdef int rc
        self._enter()
        try:
            with nogil:
                rc = rs_topic_shutdown(self.topic())
        finally:
            self._leave()
        self._check(rc, False)

    # -- subscribing -------------------------------------------------------

    def _subscribe(self, cls, bint tethered=True, double stall_timeout=0.0, timeout=None):
        """A new subscription, an instance of `cls` (a SubscriptionCore
        subclass).

        Raises:
            RingError: 128 subscribers already (RS_NO_SLOT).
            ValueError: stall_timeout with an untethered subscriber, or out
                of [0, 86400].
            Empty: the publishers' lock did not come within `timeout`.
        """
        cdef int64_t wait_ns = relative_ns(deadline_from(True, timeout))
        cdef rs_sub *sub = NULL
        cdef unsigned flags = 0 if tethered else RS_SUB_UNTETHERED
        cdef int rc
        cdef SubscriptionCore made
        if not issubclass(cls, SubscriptionCore):
            raise TypeError("cls must be a SubscriptionCore subclass")
        made = cls.__new__(cls)
        self._enter()
        try:
            with nogil:
                rc = rs_topic_subscribe(self.topic(), flags, stall_timeout, wait_ns, &sub)
        finally:
            self._leave()
        self._check(rc, False)
        rs__sub_hold(sub)
        made.sub = sub
        made._mapping = self._mapping
        made._topic = self
        made.max_payload = self.max_payload
        return made

    # -- what ls and stats show --------------------------------------------

    @property
    def history(self):
        """How many recent messages a new subscriber receives first."""
        cdef rs_topic_stats_t s
        self._enter()
        try:
            self._check(rs_topic_stats(self.topic(), &s), False)
        finally:
            self._leave()
        return s.history

    def stats(self):
        """Counters kept in the segment, as a dict (a snapshot)."""
        cdef rs_topic_stats_t s
        self._enter()
        try:
            self._check(rs_topic_stats(self.topic(), &s), False)
        finally:
            self._leave()
        return {
            "capacity": s.capacity,
            "used_bytes": s.used_bytes,
            "history": s.history,
            "published": s.published,
            "bytes_published": s.bytes_published,
            "overwritten": s.overwritten,
            "publish_waits": s.publish_waits,
            "publish_timeouts": s.publish_timeouts,
            "lock_recoveries": s.lock_recoveries,
            "subscribers": s.subscribers,
            "tethered": s.tethered,
            "subscribed": s.subscribed,
            "stalls": s.stalls,
            "reaped": s.reaped,
            "scans": s.scans,
            "head": s.head,
            "tail": s.tail,
            "creator_pid": s.creator_pid,
            "creator_alive": bool(s.creator_alive),
            "shutdown": bool(s.shutdown),
            "ephemeral": bool(s.ephemeral),
            "recovery_interval": s.recovery_interval,
            "created": s.created,
        }

    def subscribers(self):
        """The subscribers in the topic's table now, as SubscriberInfo
        tuples (a snapshot; a dead one stays until a publisher frees it)."""
        cdef rs_sub_info *infos
        cdef int n, i
        out = []
        infos = <rs_sub_info *>malloc(RS_TOPIC_MAX_SUBSCRIBERS * sizeof(rs_sub_info))
        if infos == NULL:
            raise MemoryError()
        try:
            self._enter()
            try:
                n = rs_topic_subscribers(self.topic(), infos, RS_TOPIC_MAX_SUBSCRIBERS)
            finally:
                self._leave()
            self._check(n, False)
            for i in range(min(n, <int>RS_TOPIC_MAX_SUBSCRIBERS)):
                out.append(SubscriberInfo(
                    infos[i].index, infos[i].pid,
                    bool(infos[i].flags & RS_SUB_INFO_TETHERED),
                    bool(infos[i].flags & RS_SUB_INFO_STALLED),
                    bool(infos[i].flags & RS_SUB_INFO_ALIVE),
                    infos[i].position, infos[i].lag_bytes, infos[i].lag_messages,
                    infos[i].messages, infos[i].bytes, infos[i].missed, infos[i].lags,
                    infos[i].stall_timeout, infos[i].since))
        finally:
            free(infos)
        return out


@cython.no_gc_clear
cdef class SubscriptionCore:
    """One subscriber of a topic: receiving.  The public class is
    ringshm.Subscription (made by Topic.subscribe()).

    It keeps the topic's mapping (the subscriber reads the log in it) and
    an extra reference to the library's subscription (rs__sub_hold): any
    number of threads may use it; close() ends their calls at once and the
    last call to leave lets the subscription go.  It belongs to the
    process that made it: a forked child's copy raises RuntimeError."""

    cdef rs_sub *sub
    cdef Mapping _mapping
    cdef object _topic
    cdef uint64_t max_payload
    cdef int _busy
    cdef bint _closing

    def __cinit__(self, *args, **kwargs):
        self.sub = NULL
        self._mapping = None

    def __init__(self):
        raise TypeError("use Topic.subscribe()")

    def __dealloc__(self):
        # no_gc_clear: the mapping is still ours here.
        if self.sub != NULL:
            if not self._closing:
                rs_sub_close(self.sub)
            rs__sub_unhold(self.sub)
            self.sub = NULL

    def __reduce__(self):
        raise TypeError("a Subscription cannot be pickled: it belongs to the process that "
                        "made it; pass the Topic and subscribe in the other process")

    @cython.final
    cdef inline int _enter(self) except -1:
        if self.sub == NULL or self._closing:
            raise ValueError("operation on a closed subscription")
        self._busy += 1
        return 0

    @cython.final
    cdef inline void _leave(self) noexcept:
        self._busy -= 1
        if self._busy == 0 and self._closing and self.sub != NULL:
            rs__sub_unhold(self.sub)
            self.sub = NULL

    def close(self):
        """Leave the topic (idempotent): publishers stop waiting for this
        subscriber at once; calls of it in other threads raise ValueError."""
        if self._closing or self.sub == NULL:
            self._closing = True
            return
        self._closing = True
        rs_sub_close(self.sub)
        if self._busy == 0:
            rs__sub_unhold(self.sub)
            self.sub = NULL

    @property
    def closed(self):
        """True once close() was called."""
        return self.sub == NULL or self._closing

    @property
    def topic(self):
        """The Topic this subscription was made through."""
        return self._topic

    @property
    def tethered(self):
        """True while publishers wait for this subscriber (False for an
        untethered one, and once a stall_timeout untethered it)."""
        self._enter()
        try:
            return rs_sub_tethered(self.sub) != 0
        finally:
            self._leave()

    @property
    def lag(self):
        """Messages published and not yet taken by this subscriber."""
        self._enter()
        try:
            return rs_sub_lag(self.sub)
        finally:
            self._leave()

    @property
    def missed(self):
        """The count of the last Lagged this subscription raised (0: none)."""
        self._enter()
        try:
            return rs_sub_missed(self.sub)
        finally:
            self._leave()

    cdef inline uint64_t _missed(self, int rc) noexcept:
        # The count of an RS_LAGGED, read before the call leaves (a close
        # in another thread may let the subscription go then).
        return rs_sub_missed(self.sub) if rc == RS_LAGGED else 0

    cdef int _raise(self, int rc, uint64_t missed) except -1:
        if rc == RS_LAGGED:
            raise Lagged(missed)
        if rc == RS_SHUTDOWN:
            raise ShutDown("the topic was shut down and this subscriber has taken everything")
        if rc == RS_EMPTY:
            raise Empty("no message for this subscriber")
        if rc == RS_CLOSED:
            raise ValueError("the subscription (or its topic) was closed")
        if rc == RS_NOT_OWNER:
            raise RuntimeError("a Subscription belongs to the process that made it (this is "
                               "a forked copy): subscribe again in this process")
        return (<SegmentCore>self._topic)._raise(rc, False)

    cdef int _view(self, rs_span *span, int64_t wait_ns) except -1:
        # Enter, then the next message: on failure raises, having left.
        cdef int rc
        cdef uint64_t missed
        self._enter()
        with nogil:
            rc = rs_sub_view(self.sub, span, wait_ns)
        if rc != 0:
            missed = self._missed(rc)
            self._leave()
            return self._raise(rc, missed)
        return 0

    cdef int _end_view(self, rs_span *span, bint consume) except -1:
        cdef int rc = rs_sub_release(self.sub, span) if consume else rs_sub_keep(self.sub, span)
        cdef uint64_t missed = self._missed(rc)
        self._leave()
        if rc != 0:
            return self._raise(rc, missed)
        return 0

    def get(self, block=True, timeout=None):
        """The next message for this subscriber.

        Raises:
            Empty: nothing in time.  ShutDown: shut down, and this
                subscriber has taken everything.
            Lagged: (untethered) overrun: ``missed`` messages were lost;
                the next get continues with the oldest message held.
            ValueError: closed.  RuntimeError: a forked copy.
        """
        cdef rs_span span
        cdef int64_t wait_ns = relative_ns(deadline_from(block, timeout))
        cdef PyObject *made
        cdef bytes out
        self._view(&span, wait_ns)
        made = bytes_or_null(NULL, span.len)
        if made == NULL:
            self._end_view(&span, False)
            pending_error()
        out = <bytes>made
        Py_DECREF(out)
        copy_maybe_nogil(PyBytes_AS_STRING(out), span.data, span.len)
        self._end_view(&span, True)
        return out

    def get_nowait(self):
        """get(block=False)."""
        return self.get(False)

    def get_into(self, buffer, block=True, timeout=None):
        """Copy the next message into `buffer`; its length.

        Raises:
            ValueError: `buffer` is too small (the message stays next).
            Empty, ShutDown, Lagged: as get().
        """
        cdef Py_buffer buf
        cdef rs_span span
        cdef int64_t wait_ns = relative_ns(deadline_from(block, timeout))
        cdef size_t n
        get_buffer(buffer, &buf, "buffer", True)
        try:
            self._view(&span, wait_ns)
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
        """Wait for one message, then take as many as are ready, up to
        `max_messages` and `max_bytes` payload bytes (the first is taken
        whatever its size; None: no byte limit).  Never an empty list.

        Raises:
            Empty, ShutDown, Lagged: as get().
        """
        cdef int64_t wait_ns = relative_ns(deadline_from(block, timeout))
        cdef size_t limit = check_positive_int(max_messages, "max_messages")
        # The log never holds more payload than its capacity (twice the
        # largest message): no buffer need be larger.
        cdef size_t most = 2 * self.max_payload + 32
        cdef size_t cap = most if max_bytes is None else \
            check_positive_int(max_bytes, "max_bytes")
        cdef size_t *lengths
        cdef char *out = NULL
        cdef size_t offset = 0
        cdef uint64_t missed = 0
        cdef int rc, i
        if cap > most:
            cap = most
        if limit > 65536:
            limit = 65536
        lengths = <size_t *>malloc(limit * sizeof(size_t))
        if lengths == NULL:
            raise MemoryError()
        try:
            self._enter()
            try:
                while True:
                    out = <char *>malloc(cap if cap > 0 else 1)
                    if out == NULL:
                        raise MemoryError()
                    with nogil:
                        rc = rs_sub_get_many(self.sub, out, cap, lengths, limit, wait_ns)
                    if rc != RS_TOO_LARGE or lengths[0] <= cap:
                        break
                    # The first message alone is larger than max_bytes.
                    cap = lengths[0]
                    free(out)
                    out = NULL
                missed = self._missed(rc)
            finally:
                self._leave()
            if rc < 0:
                self._raise(rc, missed)
            batch = []
            for i in range(rc):
                batch.append(PyBytes_FromStringAndSize(out + offset, lengths[i]))
                offset += lengths[i]
            return batch
        finally:
            free(lengths)
            free(out)

    def view(self, timeout=None):
        """Zero-copy read, as a context manager: ``with sub.view() as mv:``
        gives a read-only memoryview of the next message, taken when the
        block ends normally, left next if it raises.  An untethered
        subscriber's message may be written over while the block is open:
        its end then raises Lagged (missed=1; what the view showed may be
        torn).

        Raises:
            Empty, ShutDown, Lagged: as get().
            RuntimeError: a get of this subscription in the same thread
                inside the block (deadlock).
            BufferError: a slice of the view outlived the block.
        """
        return SubscriptionViewBlock(self, timeout)

    def _wait(self, timeout=None):
        """Block, taking nothing and without the GIL, until a message may be
        there for this subscriber or the topic is shut down and drained
        (True), or `timeout` passed (False)."""
        cdef int64_t wait_ns = relative_ns(deadline_from(True, timeout))
        cdef int rc
        self._enter()
        try:
            with nogil:
                rc = rs_sub_wait(self.sub, wait_ns)
        finally:
            self._leave()
        if rc == 0 or rc == RS_SHUTDOWN:
            return True
        if rc == RS_EMPTY:
            return False
        return self._raise(rc, 0)


cdef class TopicReserveBlock(SpanBlock):
    """The context manager of TopicCore.reserve()."""
    cdef TopicCore topic
    cdef object size, timeout

    def __cinit__(self, TopicCore topic, size, timeout):
        self.topic = topic
        self.size = size
        self.timeout = timeout

    def __enter__(self):
        cdef TopicCore topic = self.topic
        cdef int64_t wait_ns
        cdef uint64_t n
        cdef int rc
        if self.open:
            raise RuntimeError("this reserve() block is already open")
        wait_ns = relative_ns(deadline_from(True, self.timeout))
        n = check_nonnegative_int(self.size, "size")
        topic._check_open()
        if n > topic.max_payload:
            raise MessageTooLarge(f"reservation of {n} bytes exceeds max_message_size "
                                  f"({topic.max_payload})")
        topic._enter()
        with nogil:
            rc = rs_topic_reserve(topic.topic(), n, &self.span, wait_ns)
        if rc != 0:
            topic._leave()
            topic._raise(rc, True)
        return self._export(topic._mapping, n, False)

    cdef int _end(self, bint done) noexcept:
        cdef int rc = rs_topic_commit(self.topic.topic(), &self.span) if done else \
            rs_topic_cancel(self.topic.topic(), &self.span)
        self.topic._leave()
        return rc

    cdef int _fail(self, int rc) except -1:
        return self.topic._check(rc, True)

    def __exit__(self, exc_type, exc, traceback):
        return self._exit(exc_type, "reserved space outlived its with-block; the message "
                                    "was dropped")


cdef class SubscriptionViewBlock(SpanBlock):
    """The context manager of SubscriptionCore.view()."""
    cdef SubscriptionCore sub
    cdef object timeout
    cdef uint64_t missed

    def __cinit__(self, SubscriptionCore sub, timeout):
        self.sub = sub
        self.timeout = timeout

    def __enter__(self):
        cdef SubscriptionCore sub = self.sub
        if self.open:
            raise RuntimeError("this view() block is already open")
        sub._view(&self.span, relative_ns(deadline_from(True, self.timeout)))
        return self._export(sub._mapping, self.span.len, True)

    cdef int _end(self, bint done) noexcept:
        cdef int rc = rs_sub_release(self.sub.sub, &self.span) if done else \
            rs_sub_keep(self.sub.sub, &self.span)
        self.missed = self.sub._missed(rc)   # before leaving: a close may free it then
        self.sub._leave()
        return rc

    cdef int _fail(self, int rc) except -1:
        return self.sub._raise(rc, self.missed)

    def __exit__(self, exc_type, exc, traceback):
        return self._exit(exc_type, "message outlived its with-block; the message stays next")
