"""What a Queue record is made of, shared by the record forms (_items.py)
and the side files of big items (_sidefile.py), below both: a Frame (a
record written by pieces), the sources a record is read from (a
RecordSource: a ViewSource inside the ring, or a side file's FileSource),
a Taken (a record copied out, ready to load), and the RecordReader that
turns a source into a Taken (_items.Codec).  docs/FORMAT.md, "Queue
records".
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Optional, Protocol

from ._typing import Buffer

__all__ = ["BUFFER_ALIGN", "Frame", "RecordReader", "RecordSource", "TAG_OOB", "Taken",
           "ViewSource"]

TAG_OOB = ord("O")
# 'O' record: tag, 3 zero bytes, u32 buffer count, u64 in-band length, then
# one u64 length per buffer, the in-band pickle, and each buffer at the next
# multiple of BUFFER_ALIGN.
OOB_HEAD = struct.Struct("<B3xIQ")
BUFFER_ALIGN = 64


class RecordSource(Protocol):
    """Where a record is read from: a ViewSource, or a side file's
    _sidefile.FileSource."""

    size: int

    def read_bytes(self, offset: int, length: int) -> bytes: ...

    def read_owned(self, offset: int, length: int) -> bytearray: ...

    def read_into(self, offset: int, buffer: Any) -> None: ...


def align(offset: int) -> int:
    return (offset + BUFFER_ALIGN - 1) & ~(BUFFER_ALIGN - 1)


class Frame:
    """An item serialised with out-of-band buffers, or too large for one
    ring message: written by pieces (Ring._put_pieces, ``write_to``) instead
    of as one bytes."""

    __slots__ = ("pieces", "size")

    def __init__(self, pieces: list[tuple[int, Buffer]], size: int) -> None:
        self.pieces = pieces   # (offset, bytes-like), in order
        self.size = size

    @classmethod
    def framed(cls, inband: bytes, raws: list[memoryview]) -> Frame:
        """The 'O' record of a pickle-5 stream and its out-of-band buffers."""
        count = len(raws)
        table = OOB_HEAD.pack(TAG_OOB, count, len(inband)) + \
            struct.pack(f"<{count}Q", *(raw.nbytes for raw in raws))
        pieces: list[tuple[int, Buffer]] = [(0, table), (len(table), inband)]
        offset = len(table) + len(inband)
        for raw in raws:
            offset = align(offset)
            pieces.append((offset, raw))
            offset += raw.nbytes
        return cls(pieces, offset)

    @classmethod
    def whole(cls, *chunks: Buffer) -> Frame:
        """A record made of chunks laid end to end (a tag and a payload)."""
        pieces: list[tuple[int, Buffer]] = []
        offset = 0
        for chunk in chunks:
            pieces.append((offset, chunk))
            offset += memoryview(chunk).nbytes
        return cls(pieces, offset)

    def write_to(self, buffer: Buffer) -> None:
        """Copy the record into a writable buffer of exactly ``size`` bytes
        (space reserved in the ring): one copy of each piece, gaps zeroed."""
        view = memoryview(buffer)
        end = 0
        for offset, piece in self.pieces:
            if offset != end:
                view[end:offset] = bytes(offset - end)
            flat = memoryview(piece).cast("B")
            end = offset + flat.nbytes
            view[offset:end] = flat


#: Class names Queue._put_item hands to encode_special rather than pickling
#: inline (their records are not the pickle's).


class Taken:
    """A record copied out of the ring, ready for loads (which runs only
    after the message was consumed, outside every lock)."""

    __slots__ = ("loads", "data", "buffers", "side")

    # loads is the Queue's (data: bytes), pickle.loads (with buffers) or
    # _as_it_is (data: an array already built).
    def __init__(self, loads: Callable[..., Any], data: object,
                 buffers: Optional[list[bytearray]] = None,
                 side: Optional[str] = None) -> None:
        self.loads = loads
        self.data = data
        self.buffers = buffers
        self.side = side   # the side file to remove once consumed

    def load(self) -> Any:
        """The object. Raises: whatever loads raises."""
        if self.buffers is None:
            return self.loads(self.data)
        return self.loads(self.data, buffers=self.buffers)


class ViewSource:
    """A record inside the ring (the memoryview of view())."""

    __slots__ = ("view", "size", "ring")

    def __init__(self, view: memoryview, ring: Any) -> None:
        self.view = view
        self.size = view.nbytes
        self.ring = ring   # its identity (and, from 0.2, name) name its side file, if any

    def read_bytes(self, offset: int, length: int) -> bytes:
        return self.view[offset:offset + length].tobytes()

    def read_owned(self, offset: int, length: int) -> bytearray:
        # bytearray(view) allocates and copies in one pass (no zero fill).
        return bytearray(self.view[offset:offset + length])

    def read_into(self, offset: int, buffer: Any) -> None:
        # buffer: a C-contiguous array of its own (exactly its bytes copied).
        target = memoryview(buffer).cast("B")
        target[:] = self.view[offset:offset + target.nbytes]


class RecordReader(Protocol):
    """What copies a record out of a source (_items.Codec)."""

    def take(self, source: RecordSource, allow_big: bool = True) -> Taken: ...
