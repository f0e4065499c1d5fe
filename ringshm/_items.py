"""How one Queue item becomes one ring message, and back.

A Queue item is always exactly one ring message (a JoinableQueue counts
them), in one of these forms (docs/FORMAT.md, "Queue records"):

* a plain pickle (first byte 0x80, pickle's PROTO opcode): the default
  ``dumps`` when the object has no out-of-band buffer. The fast path, the
  same bytes that 0.1 wrote.
* ``dumps(obj)`` as it is, for a Queue with its own dumps/loads (so a
  program that is not Python can read or write them).
* ``O``: a pickle-5 stream and its out-of-band buffers (NumPy arrays,
  bytearray, PickleBuffer), each copied once straight into space reserved
  in the ring; a reader copies each once into a bytearray it owns, so the
  rebuilt object is writable and outlives the ring's space.
* a reference (first byte 0x00, an 8-byte magic, exactly 40 bytes): an item
  larger than the ring's max_message_size, whose record (one of the forms
  above) lives in a side file, /dev/shm/ringshm-item.*; _sidefile.py says
  how a crash at any point leaves nothing behind.

Serialisation happens outside every lock. The copies out of the ring (or
the side file) happen inside ``view()``, so a consumer that dies while
reading leaves the message for the next one; ``loads`` runs after the
message is consumed.
"""

from __future__ import annotations

import pickle
import struct
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Union, cast

from . import _sidefile as sidefile
from ._records import BUFFER_ALIGN, TAG_OOB, Frame, RecordSource, Taken, ViewSource
from ._records import OOB_HEAD as _OOB_HEAD
from ._records import align as _align
from ._ring import holds_no_buffer
from ._typing import Buffer
from .errors import MessageTooLarge, RingCorrupted

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from .ring import Ring

# The record's parts (_records.py) are named here too, as before they moved.
__all__ = ["BUFFER_ALIGN", "Codec", "Frame", "RecordSource", "TAG_OOB", "Taken", "ViewSource"]

TAG_PICKLE = 0x80
# First bytes of the messages a reader takes in place, inside view(), per
# kind of Queue: for pickle, all but a plain pickle's (so anything else is
# checked there, and the fast path is pickle.loads itself); for a custom
# one, a reference's (a custom record may begin with 0x00 too: view() then
# finds no reference's magic and reads it as it is).
_IN_PLACE_PICKLE = bytes(byte for byte in range(256) if byte != TAG_PICKLE)
_IN_PLACE_CUSTOM = bytes((sidefile.TAG_REFERENCE,))
# What Ring._get_direct does with a message, by its first byte: take it as
# bytes, leave it for view(), or read it with read_array in the same lock
# round. A pickle Queue takes plain pickles, reads array records, leaves
# the rest; a custom one takes all but a reference's.
TAKE, LEAVE, READ = 0, 1, 2
_ACTIONS_PICKLE = bytes(TAKE if byte == TAG_PICKLE else READ if byte == ord("N") else LEAVE
                        for byte in range(256))
_ACTIONS_CUSTOM = bytes(LEAVE if byte == sidefile.TAG_REFERENCE else TAKE
                        for byte in range(256))

# A framed record's buffer count is bounded so a hostile count cannot make
# a reader allocate a huge table before the lengths are checked.
MAX_BUFFERS = 1 << 16


SPECIAL_NAMES = frozenset(("ndarray", "bytearray"))
_pickle_dumps = pickle.dumps
_pickle_loads = pickle.loads


#: What Codec.encode returns: one ring message as it is, or a Frame.
Record = Union[Buffer, Frame]


def _encode_pickle(obj: Any) -> Union[bytes, Frame]:
    """The default dumps: a plain pickle, an array record, or a Frame of a
    pickle-5 stream and its out-of-band buffers."""
    if holds_no_buffer(obj):
        # Scalars and small containers of them: no buffer_callback, which
        # costs a list and a bound method per item.
        return _pickle_dumps(obj, 5)
    return encode_special(obj)


def encode_special(obj: Any) -> Union[bytes, Frame]:
    """_encode_pickle of an object holds_no_buffer refused (Queue._put_item
    calls it for the classes of SPECIAL_NAMES, having asked already)."""
    if obj.__class__.__name__ == "ndarray":
        record = encode_array(obj)
        if record is not None:
            return record
    elif obj.__class__ is bytearray:
        # pickle writes a bytearray in-band; as a PickleBuffer it goes out of
        # band, and loads hands back the bytearray the reader made.
        obj = pickle.PickleBuffer(obj)
    buffers: list[pickle.PickleBuffer] = []
    data = _pickle_dumps(obj, 5, buffer_callback=buffers.append)
    return frame_buffers(obj, data, buffers) if buffers else data


def frame_buffers(obj: Any, data: bytes,
                  buffers: list[pickle.PickleBuffer]) -> Union[bytes, Frame]:
    """The Frame of `data`, obj's pickle-5 stream whose out-of-band buffers
    (PickleBuffers) are `buffers`."""
    try:
        raws = [buffer.raw() for buffer in buffers]
    except BufferError:
        # A non-contiguous buffer cannot be copied as one span: keep it in
        # the stream, as pickle does without a callback.
        return _pickle_dumps(obj, 5)
    return Frame.framed(data, raws)


# 'N' record: a plain NumPy array without pickle (its pickle costs 7 µs of a
# 64 KiB array's 28 µs put+get): tag, flags, dtype-string length, ndim, the
# shape, the dtype string, then the data at the next multiple of
# BUFFER_ALIGN.
TAG_ARRAY = ord("N")
_ARRAY_HEAD = struct.Struct("<BBHI")
_FORTRAN, _READONLY = 1, 2
MAX_DIMS = 32
# The longest header (8 + 8 x MAX_DIMS + 16 bytes), rounded up; within what
# Ring._get_direct shows its reader (512 bytes).
ARRAY_HEAD_MAX = 512
# The dtypes it carries (bool, integers, floats, complex: every one exports
# a buffer); others go through pickle.
_DTYPE_KINDS = frozenset("biufc")
_ARRAY_ENDIAN = frozenset("<>|=")


# Headers already built or checked, so that a stream of arrays of one
# shape pays for struct and the checks once (about 2 µs of a 64 KiB array's
# 10 µs put+get each way): built heads by (dtype, shape, flags), checked
# ones by their bytes. Bounded: emptied when full.
_CACHE_ENTRIES = 256
_built_heads: dict[tuple[Any, tuple[int, ...], int], tuple[bytes, int]] = {}
_checked_heads: dict[bytes, tuple[bytes, int, tuple[int, Any, tuple[int, ...], int]]] = {}


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= _CACHE_ENTRIES:
        cache.clear()
    cache[key] = value


def encode_array(array: NDArray[Any]) -> Optional[Frame]:
    """The Frame of an 'N' record for `array` (an exact numpy.ndarray), or
    None when pickle must carry it (another dtype, not contiguous, ...)."""
    numpy = sys.modules.get("numpy")
    if numpy is None or array.__class__ is not numpy.ndarray:
        return None
    data: NDArray[Any]
    array_flags = array.flags
    if array_flags.c_contiguous:
        flags, data = 0, array
    elif array_flags.f_contiguous:
        flags, data = _FORTRAN, array.T   # the same bytes, in C order
    else:
        return None
    if not array_flags.writeable:
        flags |= _READONLY
    key = (array.dtype, array.shape, flags)
    built = _built_heads.get(key)
    if built is None:
        dtype = array.dtype
        dtype_text = dtype.str.encode("ascii")
        if (dtype.kind not in _DTYPE_KINDS or dtype.fields is not None or dtype.subdtype
                or array.ndim > MAX_DIMS or len(dtype_text) > 16):
            return None
        head = (_ARRAY_HEAD.pack(TAG_ARRAY, flags, len(dtype_text), array.ndim)
                + struct.pack(f"<{array.ndim}Q", *array.shape) + dtype_text)
        built = (head, _align(len(head)))
        _remember(_built_heads, key, built)
    head, offset = built
    # The C-contiguous array itself is the piece: every writer takes its
    # bytes through the buffer protocol (a memoryview cast cost 0.4 µs).
    # numpy's stubs give ndarray __buffer__ only from Python 3.12.
    raw: Buffer = data if array.size else b""  # type: ignore[assignment, unused-ignore]
    return Frame([(0, head), (offset, raw)], offset + array.nbytes)


# The last header _parse_array_head returned: (its bytes, the record's size,
# the parse). A stream of arrays of one shape then costs a startswith, not
# the look-up below (read_array was 2.6 µs a 64 KiB array with it alone).
_last_head: Optional[tuple[bytes, int, tuple[int, Any, tuple[int, ...], int]]] = None


def _numpy() -> Any:
    numpy: Any = sys.modules.get("numpy")
    if numpy is None:   # a consumer that has not imported it yet
        import numpy
    return numpy


def _parse_array_head(head: bytes, size: int) -> tuple[int, Any, tuple[int, ...], int]:
    """(data offset, numpy dtype, shape, flags) of an 'N' record of `size`
    bytes whose first bytes are `head` (at least the whole header, or all of
    the record).

    Raises:
        RingCorrupted: the header fails a check (docs/FORMAT.md).
    """
    global _last_head
    last = _last_head
    # head starting with the last header's bytes has the same header: the
    # fields that give a header's length come first in it.
    if last is not None and last[1] == size and head.startswith(last[0]):
        return last[2]
    if size < _ARRAY_HEAD.size or len(head) < _ARRAY_HEAD.size:
        raise RingCorrupted("array queue record shorter than its header")
    _, flags, dtype_length, ndim = _ARRAY_HEAD.unpack_from(head)
    head_end = _ARRAY_HEAD.size + 8 * ndim + dtype_length
    if ndim > MAX_DIMS or dtype_length > 16 or head_end > min(size, len(head)) or flags > 3:
        raise RingCorrupted("array queue record: a bad header")
    key = head[:head_end]
    checked = _checked_heads.get(key)
    if checked is not None and checked[1] == size:
        _last_head = checked
        return checked[2]
    shape: tuple[int, ...] = struct.unpack_from(f"<{ndim}Q", head, _ARRAY_HEAD.size)
    dtype_text = head[head_end - dtype_length:head_end]
    # Only the dtype strings encode_array writes: byte order, kind, size.
    if (len(dtype_text) < 3 or chr(dtype_text[0]) not in _ARRAY_ENDIAN
            or chr(dtype_text[1]) not in _DTYPE_KINDS or not dtype_text[2:].isdigit()):
        raise RingCorrupted(f"array queue record: dtype {dtype_text[:16]!r}")
    itemsize = int(dtype_text[2:])
    count = 1
    for extent in shape:
        count *= extent
    offset = _align(head_end)
    if itemsize > 64 or offset + count * itemsize != size:
        raise RingCorrupted("array queue record: its shape does not match its size")
    try:
        dtype = _numpy().dtype(dtype_text.decode("ascii"))
    except TypeError:   # '<f3': the right form, no such type
        raise RingCorrupted(f"array queue record: dtype {dtype_text!r}") from None
    remembered = (key, size, (offset, dtype, shape, flags))
    _remember(_checked_heads, key, remembered)
    _last_head = remembered
    return remembered[2]


def _new_array(dtype: Any, shape: tuple[int, ...],
               flags: int) -> tuple[NDArray[Any], NDArray[Any]]:
    """(destination, result) for an 'N' record: a C-contiguous array of
    its own for the record's data (numpy.empty: no zero fill), and the array
    to hand back (the same, its transpose for Fortran order, a read-only
    view for a read-only one).

    Raises:
        RingCorrupted: numpy refuses the shape (a hostile one of size 0).
    """
    empty = (sys.modules.get("numpy") or _numpy()).empty
    try:
        if not flags:   # the common case first
            destination = empty(shape, dtype)
            return destination, destination
        if flags & _FORTRAN:
            destination = empty(shape[::-1], dtype)
            result = destination.T   # the same bytes, in Fortran order
        else:
            destination = result = empty(shape, dtype)
    except ValueError as exc:
        raise RingCorrupted(f"array queue record: shape {shape[:4]}...: {exc}") from None
    if flags & _READONLY:
        result = result.view()
        result.flags.writeable = False
    return destination, result


def read_array(head: bytes, size: int) -> tuple[int, NDArray[Any], NDArray[Any]]:
    """The reader of Ring._get_direct for an 'N' record in the ring: where
    its data starts, the array it is copied into, the array to return.

    Raises:
        RingCorrupted: a bad header (the record stays in the ring).
    """
    offset, dtype, shape, flags = _parse_array_head(head, size)
    destination, result = _new_array(dtype, shape, flags)
    return offset, destination, result


def _take_array(source: RecordSource) -> Taken:
    size = source.size
    offset, dtype, shape, flags = _parse_array_head(
        source.read_bytes(0, min(size, ARRAY_HEAD_MAX)), size)
    destination, result = _new_array(dtype, shape, flags)
    if destination.nbytes:   # a view of shape (0, 3) cannot be cast to bytes
        source.read_into(offset, destination)
    return Taken(_as_it_is, result)


def _as_it_is(obj: Any) -> Any:
    return obj


class Codec:
    """Turns objects into ring messages and back, for one Queue.

    ``dumps``/``loads`` are the Queue's; with the default pickle pair,
    out-of-band buffers go straight into the ring. ``encode(obj)`` returns
    a bytes-like message or a Frame; ``decode(data)`` rebuilds the object of
    a message that ``Ring._get_direct(actions)`` returned as bytes. Both raise
    whatever dumps/loads raise.
    """

    __slots__ = ("loads", "custom", "in_place", "actions", "encode", "decode")

    loads: Callable[[bytes], Any]
    encode: Callable[[Any], Record]
    decode: Callable[[bytes], Any]

    def __init__(self, dumps: Callable[[Any], Buffer] = pickle.dumps,
                 loads: Callable[[bytes], Any] = pickle.loads) -> None:
        self.loads = loads
        self.custom = dumps is not pickle.dumps or loads is not pickle.loads
        self.in_place = _IN_PLACE_CUSTOM if self.custom else _IN_PLACE_PICKLE
        self.actions = _ACTIONS_CUSTOM if self.custom else _ACTIONS_PICKLE
        self.encode = dumps if self.custom else _encode_pickle
        self.decode = loads if self.custom else _pickle_loads

    def take(self, source: RecordSource, allow_big: bool = True) -> Taken:
        """Copy one record out of ``source`` (a memoryview of a ring message,
        or a side file) into memory this process owns. Returns a Taken whose
        ``load()`` builds the object.

        Raises:
            RingCorrupted: a length or form in the record fails its checks.
        """
        size = source.size
        if size == 0:
            raise RingCorrupted("empty queue record")
        if allow_big and sidefile.is_reference(source):
            # allow_big: the message itself, never a side file's record.
            return sidefile.take(self, cast("ViewSource", source))
        if self.custom:
            return Taken(self.loads, source.read_bytes(0, size))
        tag = source.read_bytes(0, 1)[:1]
        if tag == b"\x80":
            return Taken(pickle.loads, source.read_bytes(0, size))
        if tag == b"O":
            return self._take_framed(source)
        if tag == b"N":
            return _take_array(source)
        raise RingCorrupted(f"queue record of an unknown form ({tag!r}...)")

    def _take_framed(self, source: RecordSource) -> Taken:
        size = source.size
        if size < _OOB_HEAD.size:
            raise RingCorrupted("framed queue record shorter than its header")
        _, count, inband_length = _OOB_HEAD.unpack(source.read_bytes(0, _OOB_HEAD.size))
        table_end = _OOB_HEAD.size + 8 * count
        if count > MAX_BUFFERS or table_end > size:
            raise RingCorrupted(f"framed queue record claims {count} buffers")
        lengths = struct.unpack(f"<{count}Q", source.read_bytes(_OOB_HEAD.size, 8 * count))
        offset = table_end + inband_length
        if offset > size:
            raise RingCorrupted("framed queue record: in-band part beyond its end")
        spans = []
        for length in lengths:
            start = _align(offset)
            offset = start + length
            if offset > size:
                raise RingCorrupted("framed queue record: a buffer beyond its end")
            spans.append((start, length))
        if offset != size:
            raise RingCorrupted("framed queue record: lengths do not add up to its size")
        inband = source.read_bytes(table_end, inband_length)
        buffers = [source.read_owned(start, length) for start, length in spans]
        return Taken(pickle.loads, inband, buffers)


def put_record(ring: Ring, record: Record, block: bool, timeout: Optional[float]) -> None:
    """Put what Codec.encode returned as one ring message: in place for a
    Frame, through a side file beyond max_message_size. (Queue._put_item
    puts a bytes message that fits itself.)

    Raises:
        ringshm.Full, ringshm.ShutDown: as Ring.put.
        OSError: ENOSPC, no room in /dev/shm for an item beyond the ring.
    """
    if not isinstance(record, Frame):
        # A bytes-like message; nbytes, not len(): a custom dumps may return
        # any buffer.
        if memoryview(record).nbytes <= ring.max_message_size:
            ring.put(record, block=block, timeout=timeout)
            return
        frame = Frame.whole(record)
    else:
        frame = record
    wait = timeout if block else 0
    if frame.size > ring.max_message_size:
        sidefile.put(ring, frame, wait)
        return
    # One lock round, each piece copied once (gaps zeroed) by the core.
    ring._put_pieces(frame.pieces, frame.size, block, timeout)


def remaining(block: bool, timeout: Optional[float], started: float) -> Optional[float]:
    """The wait left for view() after _get_direct found a message to read
    in place (only a race with another consumer makes view() wait)."""
    if not block:
        return 0
    return None if timeout is None else max(0.0, timeout - (time.monotonic() - started))


def take_in_place(ring: Ring, codec: Codec, wait: Optional[float]) -> Any:
    """Copy the oldest message out inside view(), consume it, remove its
    side file, then load it.

    Raises:
        ringshm.Empty, ringshm.ShutDown, RingCorrupted; whatever loads raises.
    """
    with ring.view(timeout=wait) as view:
        taken = codec.take(ViewSource(view, ring))
    if taken.side is not None:
        sidefile.consumed(ring, taken.side)
    return taken.load()


def put_many_records(ring: Ring, codec: Codec, objs: Iterable[Any]) -> list[Buffer]:
    """The ring messages of a put_many batch (each item one message).

    Raises:
        MessageTooLarge: an item too large for one ring message (a batch
            is published at once, which a side file cannot join).
        Exception: whatever dumps raises.
    """
    batch: list[Buffer] = []
    for obj in objs:
        record = codec.encode(obj)
        if isinstance(record, Frame):
            if record.size > ring.max_message_size:
                raise MessageTooLarge(
                    f"put_many: an item of {record.size} bytes exceeds max_message_size "
                    f"({ring.max_message_size}); put() it on its own")
            space = bytearray(record.size)
            record.write_to(space)
            batch.append(space)
        else:
            batch.append(record)
    return batch


def get_many_items(ring: Ring, codec: Codec, max_messages: int, block: bool,
                   timeout: Optional[float]) -> list[Any]:
    """Up to max_messages items, oldest first, never an empty list.

    Raises:
        As get_item.
    """
    batch = ring._get_many_untagged(codec.in_place, max_messages, block=block,
                                    timeout=timeout)
    if not batch:
        return [take_in_place(ring, codec, 0 if not block else timeout)]
    decode = codec.decode
    return [decode(data) for data in batch]
