# The context managers of RingCore.reserve() and view(): each holds its
# own span (the library's per-block state) and the Span its memoryview
# exports, so blocks of different threads never share anything.  Included
# into _ring.pyx.

cdef class ReserveBlock:
    """The context manager of RingCore.reserve() (compiled: a generator-based
    one costs a microsecond per message)."""
    cdef RingCore ring
    cdef object size, timeout, view
    cdef rs_span span
    cdef Span export
    cdef bint open
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
        try:
            self.export = make_span(ring._mapping, <char *>self.span.data, n, False)
            self.view = memoryview(self.export)
        except BaseException:
            self.export = None
            rs_cancel(ring.ring, &self.span)
            ring._leave()
            raise
        self.open = True
        self.thread = PyThread_get_thread_ident()
        ring._reserve_ends[self.thread] = self.span._position
        return self.view

    def __exit__(self, exc_type, exc, traceback):
        cdef RingCore ring = self.ring
        cdef int rc
        view, self.view = self.view, None
        if not self.open:
            return False
        self.open = False
        ring._reserve_ends.pop(self.thread, None)
        export, self.export = self.export, None
        if not end_span(export, view):
            # Somebody kept a slice of the view: it could still write into
            # the ring after the message is published.
            rc = rs_cancel(ring.ring, &self.span)
            ring._leave()
            if rc != RS_NOT_OWNER:
                raise BufferError("a view of the reserved space outlived its with-block; "
                                  "the message was discarded")
            return False
        if exc_type is None:
            rc = rs_commit(ring.ring, &self.span)
        else:
            rc = rs_cancel(ring.ring, &self.span)
        ring._leave()
        # A forked child's copy of the block is the parent's: it does nothing.
        if rc != RS_NOT_OWNER:
            ring._check(rc, True)
        return False


cdef class ViewBlock:
    """The context manager of RingCore.view()."""
    cdef RingCore ring
    cdef object timeout, view
    cdef rs_span span
    cdef Span export
    cdef bint open

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
        try:
            self.export = make_span(ring._mapping, <char *>self.span.data, self.span.len, True)
            self.view = memoryview(self.export)
        except BaseException:
            self.export = None
            ring._end_view(&self.span, False)
            raise
        self.open = True
        return self.view

    def __exit__(self, exc_type, exc, traceback):
        cdef RingCore ring = self.ring
        cdef int rc
        view, self.view = self.view, None
        if not self.open:
            return False
        self.open = False
        export, self.export = self.export, None
        if not end_span(export, view):
            # A slice of the view is still alive: handing the space back
            # would let it read the next lap's bytes.
            rc = rs_keep(ring.ring, &self.span)
            ring._leave()
            if rc != RS_NOT_OWNER:
                raise BufferError("a view of the message outlived its with-block; "
                                  "the message was left in the ring")
            return False
        if exc_type is None:
            rc = rs_release(ring.ring, &self.span)
        else:
            rc = rs_keep(ring.ring, &self.span)
        ring._leave()
        if rc != RS_NOT_OWNER:
            ring._check(rc, False)
        return False
