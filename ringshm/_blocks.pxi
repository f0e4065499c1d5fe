# The context managers of the zero-copy blocks: RingCore.reserve() and
# view() here, TopicCore.reserve() and SubscriptionCore.view() in
# _topic.pxi.  Each holds its own span (the library's per-block state) and
# the Span its memoryview exports, so blocks of different threads never
# share anything.  Included into _ring.pyx.

cdef class SpanBlock:
    """What every zero-copy block shares: the span, the memoryview over it,
    and how the block ends (the view released first: a slice of it that
    outlived the block means the space must not be handed on).  A subclass
    takes the span in __enter__, then calls _export(); it says how its span
    ends in _end() and _fail()."""
    cdef rs_span span
    cdef Span export
    cdef object view
    cdef bint open

    cdef int _end(self, bint done) noexcept:
        # End the span: publish or consume it (done), else drop or leave it;
        # let the object's operation go; the library's status.
        return 0

    cdef int _fail(self, int rc) except -1:
        # Raise for a status of _end() (neither 0 nor RS_NOT_OWNER).
        return 0

    cdef object _export(self, Mapping mapping, size_t n, bint readonly):
        try:
            self.export = make_span(mapping, <char *>self.span.data, n, readonly)
            self.view = memoryview(self.export)
        except BaseException:
            self.export = None
            self._end(False)
            raise
        self.open = True
        return self.view

    cdef object _exit(self, object exc_type, str outlived):
        cdef int rc
        view, self.view = self.view, None
        if not self.open:
            return False
        self.open = False
        export, self.export = self.export, None
        if not end_span(export, view):
            # Somebody kept a slice of the view: it could still reach the
            # space once it is handed on.
            rc = self._end(False)
            if rc != RS_NOT_OWNER:
                raise BufferError(f"a view of the {outlived}")
            return False
        rc = self._end(exc_type is None)
        # A forked child's copy of the block is the parent's: it does nothing.
        if rc != 0 and rc != RS_NOT_OWNER:
            self._fail(rc)
        return False


cdef class ReserveBlock(SpanBlock):
    """The context manager of RingCore.reserve() (compiled: a generator-based
    one costs a microsecond per message)."""
    cdef RingCore ring
    cdef object size, timeout
    cdef unsigned long thread

    def __cinit__(self, RingCore ring, size, timeout):
        self.ring = ring
        self.size = size
        self.timeout = timeout

    def __enter__(self):
        cdef RingCore ring = self.ring
        cdef int64_t deadline
        cdef uint64_t n
        if self.open:
            raise RuntimeError("this reserve() block is already open")
        deadline = deadline_from(True, self.timeout)
        n = check_nonnegative_int(self.size, "size")
        ring._check_open()
        if n > ring.max_payload:
            raise MessageTooLarge(f"reservation of {n} bytes exceeds max_message_size "
                                  f"({ring.max_payload})")
        ring._reserve(n, &self.span, deadline, 0)
        view = self._export(ring._mapping, n, False)
        self.thread = PyThread_get_thread_ident()
        ring._reserve_ends[self.thread] = self.span._position
        return view

    cdef int _end(self, bint done) noexcept:
        cdef int rc = rs_commit(self.ring.ring, &self.span) if done else \
            rs_cancel(self.ring.ring, &self.span)
        self.ring._leave()
        return rc

    cdef int _fail(self, int rc) except -1:
        return self.ring._check(rc, True)

    def __exit__(self, exc_type, exc, traceback):
        if self.open:
            self.ring._reserve_ends.pop(self.thread, None)
        return self._exit(exc_type, "reserved space outlived its with-block; the message "
                                    "was discarded")


cdef class ViewBlock(SpanBlock):
    """The context manager of RingCore.view()."""
    cdef RingCore ring
    cdef object timeout

    def __cinit__(self, RingCore ring, timeout):
        self.ring = ring
        self.timeout = timeout

    def __enter__(self):
        cdef RingCore ring = self.ring
        cdef int64_t deadline
        if self.open:
            raise RuntimeError("this view() block is already open")
        deadline = deadline_from(True, self.timeout)
        ring._check_open()
        ring._view(&self.span, deadline, 0)
        return self._export(ring._mapping, self.span.len, True)

    cdef int _end(self, bint done) noexcept:
        cdef int rc = rs_release(self.ring.ring, &self.span) if done else \
            rs_keep(self.ring.ring, &self.span)
        self.ring._leave()
        return rc

    cdef int _fail(self, int rc) except -1:
        return self.ring._check(rc, False)

    def __exit__(self, exc_type, exc, traceback):
        return self._exit(exc_type, "message outlived its with-block; the message was left "
                                    "in the ring")
