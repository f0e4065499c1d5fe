# The zero-copy windows of the core: the mapping a ring and its views share,
# and the Span that reserve()/view() export.  Included into _ring.pyx.

from libc.errno cimport errno
from cpython.buffer cimport PyBUF_WRITABLE

import os


# How a Mapping gives its memory back: munmap for a file's mapping, shmdt
# for a System V segment (_sysv.pxi).
ctypedef int (*unmap_function)(char *base, size_t length) noexcept nogil


cdef int unmap_file(char *base, size_t length) noexcept nogil:
    return munmap(base, length)


cdef class Mapping:
    """Owns one attachment of a segment, whatever its backing (a base
    pointer and the function that gives it back); unmapped when the last
    reference (a ring or a memoryview handed out by reserve()/view()) goes
    away, so no view can ever point at unmapped memory.  It also holds this
    process's share of the segment's presence (_liveness.h), taken from the
    file its lock slots live on: the slot that names it in lock words stays
    its own as long as any mapping of the segment lives."""
    cdef char *base
    cdef readonly size_t length   # bytes attached
    cdef unmap_function unmap
    cdef rs_presence *presence
    # The presence's file is not the segment (a System V segment's
    # companion): the ring header records which file it is.
    cdef bint separate_liveness

    def __cinit__(self):
        self.base = NULL
        self.length = 0
        self.unmap = NULL
        self.presence = NULL
        self.separate_liveness = False

    cdef void adopt(self, char *base, size_t length, unmap_function unmap):
        self.base = base
        self.length = length
        self.unmap = unmap

    def bind_liveness(self, int fd, bint separate):
        """Take this process's presence from the file open as `fd` (the
        segment's own, or a companion when `separate`).  Once only.

        Raises:
            OSError: no /proc to open the file afresh, or it cannot be opened.
        """
        if self.presence != NULL:
            raise RuntimeError("the mapping already has its lock file")
        self.presence = rs_presence_attach(fd)
        if self.presence == NULL:
            raise OSError(errno, os.strerror(errno))
        self.separate_liveness = separate

    def __dealloc__(self):
        if self.base != NULL:
            self.unmap(self.base, self.length)
            self.base = NULL
        rs_presence_release(self.presence)
        self.presence = NULL


def map_file(int fd, size_t length):
    """A Mapping of the first `length` bytes of the file open as `fd`,
    whose lock slots live on the same file.

    Raises:
        ValueError: no descriptor.
        OSError: mmap or the presence failed.
    """
    cdef void *p
    cdef Mapping mapping = Mapping.__new__(Mapping)
    if fd < 0:
        raise ValueError("a ring is mapped from a file descriptor "
                         "(an anonymous ring from a memfd)")
    p = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
    if p == MAP_FAILED:
        raise OSError(errno, os.strerror(errno))
    mapping.adopt(<char *>p, length, unmap_file)
    mapping.bind_liveness(fd, False)   # on failure the mapping unmaps itself
    return mapping


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
    an export of the view is still alive (it could reach the ring later).
    `view` None: only end the span."""
    if view is not None:
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
