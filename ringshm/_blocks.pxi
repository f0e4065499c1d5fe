# The context managers of RingCore.reserve() and view().  Included into
# _ring.pyx.

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
