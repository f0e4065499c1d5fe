# Records in the data area: an 8-byte header (length, kind) and the
# payload, 8-aligned (docs/FORMAT.md, "Data area and records").

from libc.stdint cimport uint64_t

from ringshm._ring cimport RS_RECORD_HEADER


cdef inline uint64_t record_span(uint64_t payload) noexcept nogil:
    """Bytes a record of `payload` bytes occupies: header + payload, 8-aligned."""
    return (RS_RECORD_HEADER + payload + 7) & ~(<uint64_t>7)
