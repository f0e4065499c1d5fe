# Checks of the arguments of the Python-facing methods: one message per
# mistake, the exception a user would catch.

from cpython.buffer cimport PyObject_GetBuffer, PyBUF_SIMPLE, PyBUF_WRITABLE
from libc.stdint cimport uint64_t


cdef inline int get_buffer(object obj, Py_buffer *buf, str what, bint writable) except -1:
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


cdef inline Py_ssize_t check_positive_int(object value, str name) except -1:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, not {value}")
    return min(value, 0x7FFFFFFFFFFFFFFF)


cdef inline uint64_t check_nonnegative_int(object value, str name) except? 0xFFFFFFFFFFFFFFFF:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be non-negative, not {value}")
    return min(value, 0xFFFFFFFFFFFFFFF0)
