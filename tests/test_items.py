"""Queue items as ring messages (ringshm/_items.py, docs/FORMAT.md "Queue
records"): out-of-band buffers copied straight into the ring and back into
memory the reader owns, custom dumps/loads, and hostile records (every
length is checked: RingCorrupted, never a crash)."""

import json
import os
import pickle
import struct

import pytest
from conftest import closing

from ringshm import Queue, Ring, _items, _sidefile
from ringshm.errors import Empty, RingCorrupted

np = pytest.importorskip("numpy", reason="the out-of-band tests use NumPy arrays")

TIMEOUT = 5.0


def json_dumps(obj):
    return json.dumps(obj).encode()


def json_loads(data):
    return json.loads(data)


@pytest.fixture
def make_queue():
    yield from closing(Queue)


def raw_message(q):
    """The next ring message of q, taken off the ring as bytes."""
    with Ring.open(q.name) as ring:
        return ring.get(timeout=TIMEOUT)


def put_raw(q, data):
    with Ring.open(q.name) as ring:
        ring.put(data)


def side_files(q):
    return sorted(n for n in os.listdir(_sidefile.SHM_DIR)
                  if n.startswith(f"{_sidefile.PREFIX}{q._ring.identity}."))


# -- out-of-band buffers ---------------------------------------------------------

@pytest.mark.parametrize("array", [
    np.arange(1920 * 1080 * 3, dtype=np.uint8).reshape(1080, 1920, 3),
    np.linspace(0, 1, 16384, dtype=np.float32),
    np.arange(12, dtype=np.int64).reshape(3, 4).T.copy(order="F"),   # Fortran order
    np.zeros(0, dtype=np.float64),
], ids=["frame", "float32", "fortran", "empty"])
def test_an_array_arrives_equal_owned_and_writable(make_queue, array):
    q = make_queue(capacity=32 << 20)
    q.put(array)
    got = q.get(timeout=TIMEOUT)
    assert got.dtype == array.dtype and got.shape == array.shape
    assert np.array_equal(got, array)
    assert got.flags.writeable
    assert got.flags.f_contiguous == array.flags.f_contiguous
    got[...] = 0   # memory of its own: the ring's space is not written
    assert q.empty()


def test_buffers_go_out_of_band_once_next_to_the_pickle(make_queue):
    # The message is the framed form: the array's bytes are in it exactly
    # once, at an aligned offset after the in-band pickle (no in-band copy).
    q = make_queue(capacity=4 << 20)
    array = bytearray(os.urandom(1_000_000))
    q.put(array)
    message = raw_message(q)
    assert message[:1] == b"O"
    _, count, inband_length = struct.unpack_from("<B3xIQ", message)
    assert count == 1
    (length,) = struct.unpack_from("<Q", message, 16)
    assert length == len(array)
    start = len(message) - len(array)
    assert start % _items.BUFFER_ALIGN == 0
    assert message[start:] == array
    assert len(message) < len(array) + 512      # the in-band part is small
    assert 24 + inband_length <= start


def test_a_bytearray_arrives_as_its_own_bytearray(make_queue):
    q = make_queue(capacity=4 << 20)
    data = bytearray(os.urandom(100_000))
    q.put(data)
    got = q.get(timeout=TIMEOUT)
    assert type(got) is bytearray and got == data


def test_a_plain_array_is_an_array_record_without_pickle(make_queue):
    q = make_queue(capacity=4 << 20)
    array = np.arange(250_000, dtype=np.float32).reshape(500, 500)
    q.put(array)
    message = raw_message(q)
    assert message[:1] == b"N"
    _, flags, dtype_length, ndim = struct.unpack_from("<BBHI", message)
    assert (flags, ndim) == (0, 2)
    assert struct.unpack_from("<2Q", message, 8) == (500, 500)
    assert message[24:24 + dtype_length] == array.dtype.str.encode()
    start = len(message) - array.nbytes
    assert start % _items.BUFFER_ALIGN == 0 and message[start:] == array.tobytes()


@pytest.mark.parametrize("array", [
    np.array(3.5),                                       # 0-d
    np.arange(10, dtype=">i4"),                          # big-endian
    np.array([True, False]), np.arange(6, dtype=np.float16),
    np.arange(4, dtype=np.complex128).reshape(2, 2, order="F"),
    np.zeros((0, 3), dtype=np.uint16),
    np.array(["2026-12-01", "2026-12-02"], dtype="datetime64[s]"),  # pickle
    np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),
    np.array(["a", None], dtype=object),
    np.ma.masked_array([1, 2], mask=[0, 1]),             # a subclass: pickle
], ids=["0d", "big-endian", "bool", "float16", "complex-F", "empty-2d", "datetime",
        "structured", "object", "masked"])
def test_every_kind_of_array_round_trips(make_queue, array):
    q = make_queue(capacity=1 << 20)
    q.put(array)
    got = q.get(timeout=TIMEOUT)
    assert type(got) is type(array) and got.dtype == array.dtype and got.shape == array.shape
    assert got.flags.f_contiguous == array.flags.f_contiguous
    assert pickle.dumps(got) == pickle.dumps(pickle.loads(pickle.dumps(array, 5)))


def test_several_buffers_in_one_object(make_queue):
    q = make_queue(capacity=8 << 20)
    batch = {"x": np.ones((64, 64), dtype=np.float32), "y": np.arange(10),
             "raw": bytearray(b"abc" * 1000), "pb": pickle.PickleBuffer(bytearray(b"z" * 7)),
             "label": "batch 1"}
    q.put(batch)
    got = q.get(timeout=TIMEOUT)
    assert np.array_equal(got["x"], batch["x"]) and np.array_equal(got["y"], batch["y"])
    assert got["raw"] == batch["raw"] and isinstance(got["raw"], bytearray)
    assert bytes(got["pb"]) == b"z" * 7
    assert got["label"] == "batch 1"


def test_a_non_contiguous_array_goes_in_band(make_queue):
    q = make_queue(capacity=1 << 20)
    array = np.arange(100.0).reshape(10, 10)[:, ::2]
    q.put(array)
    assert np.array_equal(q.get(timeout=TIMEOUT), array)


@pytest.mark.parametrize("writeable", [True, False])
def test_writeable_flag_as_pickle_gives_it(make_queue, writeable):
    # pickle marks a read-only buffer (READONLY_BUFFER); the copy is rebuilt
    # as pickle.loads(pickle.dumps(a, 5)) would rebuild it.
    q = make_queue(capacity=1 << 20)
    array = np.arange(10_000)
    array.flags.writeable = writeable
    q.put(array)
    got = q.get(timeout=TIMEOUT)
    assert got.flags.writeable == pickle.loads(pickle.dumps(array, 5)).flags.writeable
    assert np.array_equal(got, array)


def test_small_objects_stay_plain_pickles(make_queue):
    # The fast path writes exactly what pickle writes (as 0.1 did).
    q = make_queue()
    for obj in (b"x" * 64, "text", 12, (1, "a", 2.5), {"k": [1, 2]}, None):
        q.put(obj)
        message = raw_message(q)
        assert message[:1] == b"\x80"
        assert pickle.loads(message) == obj


class _Tuple(tuple):
    """A subclass may reduce to anything, buffers included."""


@pytest.mark.parametrize("obj, plain", [
    (b"x", True), ("s", True), (1, True), (2.5, True), (True, True), (1j, True),
    (None, True), ((1, "a", 2.0), True), ({"k": 1, "v": [1, 2]}, True),
    ([[[[1]]]], True),                     # 4 containers deep: the most allowed
    ([[[[[1]]]]], False),
    (list(range(64)), True), (list(range(65)), False),   # the budget of parts
    ({i: i for i in range(32)}, True), ({i: i for i in range(33)}, False),
    (bytearray(b"x"), False), ((1, bytearray(b"x")), False), ({"a": [memoryview(b"")]}, False),
    ({bytearray(b"x").__class__: 1}, False), (_Tuple((1,)), False), ({1, 2}, False),
    ((np.zeros(2),), False), (pickle.PickleBuffer(b"x"), False),
], ids=repr)
def test_holds_no_buffer_says_true_only_for_builtin_scalars_and_containers(obj, plain):
    from ringshm._ring import holds_no_buffer
    assert holds_no_buffer(obj) is plain


@pytest.mark.parametrize("wrap", [tuple, list, lambda parts: dict(enumerate(parts))],
                         ids=["tuple", "list", "dict"])
def test_a_container_of_a_big_buffer_still_goes_out_of_band(make_queue, wrap):
    # The scan that spares small containers the buffer_callback must not
    # put a container's array in-band.
    q = make_queue(capacity=4 << 20)
    array = np.arange(200_000, dtype=np.float32)
    obj = wrap([1, "a", array])
    q.put(obj)
    message = raw_message(q)
    assert message[:1] == b"O"
    assert len(message) < array.nbytes + 512   # the array's bytes once
    q.put(obj)
    got = q.get(timeout=TIMEOUT)
    assert np.array_equal(got[2], array) and got[2].flags.writeable


def test_get_many_and_put_many_with_arrays(make_queue):
    q = make_queue(capacity=4 << 20)
    arrays = [np.full(1000 * (i + 1), i, dtype=np.int32) for i in range(5)]
    q.put_many([1, arrays[0], 2, arrays[1]])
    for i in range(2, 5):
        q.put(arrays[i])
    got = []
    while len(got) < 7:
        got += q.get_many(timeout=TIMEOUT)
    assert q.empty()
    assert got[0] == 1 and got[2] == 2
    for expected, actual in zip(arrays, [got[1], got[3]] + got[4:]):
        assert np.array_equal(expected, actual) and actual.flags.writeable


def test_maxsize_counts_items_of_every_form(make_queue):
    q = make_queue(maxsize=3, capacity=1 << 20)
    q.put(1)
    q.put(np.zeros(100_000, dtype=np.uint8))   # in-ring framed
    q.put(b"x" * (2 << 20))                     # a side file
    assert q.full() and q.qsize() == 3
    with pytest.raises(Exception) as caught:
        q.put_nowait(4)
    assert caught.type.__name__ == "Full"
    assert q.get() == 1
    assert q.get().nbytes == 100_000
    assert q.get() == b"x" * (2 << 20)
    assert side_files(q) == []


# -- custom dumps / loads ----------------------------------------------------------

def test_custom_records_are_dumps_output_as_is(make_queue):
    q = make_queue(dumps=json_dumps, loads=json_loads)
    q.put({"a": 1})
    assert raw_message(q) == b'{"a": 1}'


def custom_dumps(obj):
    return bytes(obj)


def custom_loads(data):
    return bytes(data)


def test_custom_record_beginning_with_zero_is_not_a_reference(make_queue):
    q = make_queue(dumps=custom_dumps, loads=custom_loads)
    for data in (b"\x00", b"\x00RSREF\x00\x01", b"\x00" * 40, b"\x00RSREF\x00\x01" + bytes(31)):
        q.put(data)
        assert q.get(timeout=TIMEOUT) == data


def test_custom_item_larger_than_the_ring(make_queue):
    q = make_queue(capacity=64 << 10, dumps=custom_dumps, loads=custom_loads)
    data = os.urandom(1 << 20)
    q.put(data)
    assert side_files(q)
    assert q.get(timeout=TIMEOUT) == data
    assert side_files(q) == []


# -- hostile records ------------------------------------------------------------------

def framed(count, inband_length, lengths, body):
    return (struct.pack("<B3xIQ", ord("O"), count, inband_length)
            + struct.pack(f"<{len(lengths)}Q", *lengths) + body)


HOSTILE = {
    "empty": b"",
    "unknown tag": b"Zgarbage",
    "framed, short header": b"O\x00\x00",
    "framed, huge count": framed(1 << 31, 0, [], b""),
    "framed, count beyond the record": framed(100, 0, [1], b""),
    "framed, in-band beyond the end": framed(0, 1 << 40, [], b"abc"),
    "framed, buffer beyond the end": framed(1, 0, [1 << 62], b""),
    "framed, buffer overflowing 64 bits": framed(2, 0, [2 ** 64 - 8, 64], b"x" * 64),
    "framed, lengths short of the size": framed(1, 0, [0], b"x" * 200),
    "array, short": b"N\x00",
    "array, huge ndim": struct.pack("<BBHI", ord("N"), 0, 3, 1000) + b"<f4",
    "array, bad dtype": struct.pack("<BBHI", ord("N"), 0, 3, 1) + struct.pack("<Q", 1)
    + b"<O8" + bytes(61),
    "array, shape beyond the record": struct.pack("<BBHI", ord("N"), 0, 3, 1)
    + struct.pack("<Q", 1 << 40) + b"<f4" + bytes(64),
    "array, shape overflowing": struct.pack("<BBHI", ord("N"), 0, 3, 2)
    + struct.pack("<2Q", 1 << 63, 4) + b"<f4" + bytes(29),
    "array, bad flags": struct.pack("<BBHI", ord("N"), 9, 3, 1) + struct.pack("<Q", 1)
    + b"<f4" + bytes(45),
    # Every check of the form passes, but numpy has no 3-byte float.
    "array, a dtype numpy does not have": struct.pack("<BBHI", ord("N"), 0, 3, 1)
    + struct.pack("<Q", 1) + b"<f3" + bytes(_items._align(19) - 19 + 3),
    # Size 0, so the lengths add up, but numpy refuses the shape.
    "array, empty with a huge extent": struct.pack("<BBHI", ord("N"), 0, 3, 2)
    + struct.pack("<2Q", 0, 1 << 63) + b"<f4" + bytes(37),
    "reference, no such file": struct.pack("<8sQQQQ", b"\x00RSREF\x00\x01", 10, 1, 1, 1),
    "reference, pid 0": struct.pack("<8sQQQQ", b"\x00RSREF\x00\x01", 10, 0, 1, 1),
    "reference, wrong size": b"\x00RSREF\x00\x01" + bytes(8),
}


@pytest.mark.parametrize("record", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_record_raises_ring_corrupted_and_stays(make_queue, record):
    q = make_queue(capacity=1 << 16)
    put_raw(q, record)
    with pytest.raises(RingCorrupted):
        q.get(timeout=TIMEOUT)
    with pytest.raises(RingCorrupted):
        q.get_many(timeout=TIMEOUT)
    # It stays: the queue is not silently skipping data. Take it off raw.
    assert raw_message(q) == record
    q.put("after")
    assert q.get(timeout=TIMEOUT) == "after"


@pytest.mark.parametrize("array", [np.zeros((0, 3)), np.zeros((2, 0), order="F"),
                                   np.array(2.5), np.arange(6.0).reshape(2, 3, order="F")],
                         ids=["empty-2d", "empty-F", "0d", "fortran"])
def test_get_many_reads_every_kind_of_array_in_place_too(make_queue, array):
    # get_many() reads an array record in place (take_in_place), not with
    # get()'s one-round reader: both must give the same array.
    q = make_queue(capacity=1 << 16)
    q.put_many([array, array])
    got = []
    while len(got) < 2:
        got += q.get_many(timeout=TIMEOUT)
    for value in got:
        assert value.shape == array.shape and value.dtype == array.dtype
        assert (value == array).all() and value.flags.writeable
        assert value.flags.f_contiguous == array.flags.f_contiguous


def test_arrays_of_one_shape_are_each_their_own(make_queue):
    # read_array remembers the last header it parsed; each array is new.
    q = make_queue(capacity=1 << 20)
    for value in range(3):
        q.put(np.full((4, 5), value, dtype=np.float32))
    got = [q.get(timeout=TIMEOUT) for _ in range(3)]
    assert [int(a[0, 0]) for a in got] == [0, 1, 2]
    assert not np.shares_memory(got[0], got[1]) and not np.shares_memory(got[1], got[2])
    got[0][:] = 9
    assert int(got[1][0, 0]) == 1


def test_the_header_just_read_with_a_wrong_size_is_refused(make_queue):
    # The remembered header must not vouch for a record of another size.
    q = make_queue(capacity=1 << 16)
    q.put(np.ones(4, dtype="<f4"))
    message = raw_message(q)
    q.put(np.ones(4, dtype="<f4"))
    assert q.get(timeout=TIMEOUT).tolist() == [1.0] * 4   # the header is remembered now
    for bad in (message[:-4], message + bytes(4)):
        put_raw(q, bad)
        with pytest.raises(RingCorrupted):
            q.get(timeout=TIMEOUT)
        assert raw_message(q) == bad
    q.put(np.ones(4, dtype="<f4"))
    assert q.get(timeout=TIMEOUT).tolist() == [1.0] * 4


def test_reference_to_a_file_of_the_wrong_size(make_queue):
    q = make_queue(capacity=1 << 16)
    q.put(b"y" * (100 << 10))              # a side file
    (name,) = side_files(q)
    path = os.path.join(_sidefile.SHM_DIR, name)
    os.truncate(path, 1000)                # a peer shrinks it
    with pytest.raises(RingCorrupted):
        q.get(timeout=TIMEOUT)
    os.unlink(path)
    with pytest.raises(RingCorrupted):     # and now it is missing
        q.get(timeout=TIMEOUT)
    raw_message(q)


def test_side_file_of_a_bad_record_inside(make_queue):
    # A side file whose record is itself hostile (a nested reference is not
    # followed).
    q = make_queue(capacity=1 << 16)
    q.put(b"y" * (100 << 10))
    (name,) = side_files(q)
    path = os.path.join(_sidefile.SHM_DIR, name)
    reference = struct.pack("<8sQQQQ", b"\x00RSREF\x00\x01", 10, 1, 1, 1)
    size = os.path.getsize(path) - _sidefile.HEADER_SIZE
    with open(path, "r+b") as f:
        f.seek(_sidefile.HEADER_SIZE)
        f.write(reference + bytes(size - len(reference)))
    with pytest.raises(RingCorrupted):
        q.get(timeout=TIMEOUT)
    raw_message(q)
    os.unlink(path)


def test_empty_queue_still_empty(make_queue):
    q = make_queue()
    with pytest.raises(Empty):
        q.get(timeout=0.05)
    with pytest.raises(Empty):
        q.get_nowait()


# -- the core's one-round paths: Ring._put_pieces and Ring._get_direct -------------

def test_put_pieces_writes_each_piece_at_its_offset_and_zeroes_the_gaps(make_ring):
    ring = make_ring(capacity=1 << 16)
    ring._put_pieces([(0, b"ab"), (8, memoryview(b"cdef")), (13, bytearray(b"g"))], 20)
    assert ring.get() == b"ab" + bytes(6) + b"cdef" + bytes(1) + b"g" + bytes(6)


@pytest.mark.parametrize("pieces, size", [
    ([(0, b"abc"), (2, b"d")], 8),     # overlaps the piece before
    ([(6, b"abc")], 8),                # ends beyond the message
    ([(-1, b"a")], 8),
], ids=["overlap", "beyond", "negative"])
def test_put_pieces_refuses_pieces_out_of_place_and_puts_nothing(make_ring, pieces, size):
    ring = make_ring(capacity=1 << 16)
    with pytest.raises(ValueError):
        ring._put_pieces(pieces, size)
    assert ring.empty()
    ring.put(b"next")   # the lock was let go
    assert ring.get() == b"next"


def _actions(**by_byte):
    """The actions table of Ring._get_direct: TAKE unless given."""
    table = bytearray([_items.TAKE]) * 256
    for byte, action in by_byte.items():
        table[ord(byte)] = action
    return bytes(table)


def test_get_direct_leaves_the_message_when_the_reader_fails(make_ring):
    ring = make_ring(capacity=1 << 16)
    ring.put(b"N" + bytes(15))
    actions = _actions(N=_items.READ)

    def failing(head, length):
        raise RingCorrupted("no")

    def wrong_size(head, length):
        return 0, bytearray(length - 1), None

    with pytest.raises(RingCorrupted):
        ring._get_direct(actions, failing, timeout=TIMEOUT)
    with pytest.raises(ValueError):
        ring._get_direct(actions, wrong_size, timeout=TIMEOUT)
    with pytest.raises(ValueError):
        ring._get_direct(actions[:255], wrong_size, timeout=TIMEOUT)
    got = ring._get_direct(actions, lambda head, length: (8, bytearray(8), "done"),
                           timeout=TIMEOUT)
    assert got == "done" and ring.empty()


def test_get_direct_takes_reads_or_leaves_by_the_first_byte(make_ring):
    ring = make_ring(capacity=1 << 16)
    ring.put(b"N1234567" + b"payload!")
    ring.put(b"plain")
    ring.put(b"Oframed")
    ring.put(b"")
    target = bytearray(8)
    seen = []
    actions = _actions(N=_items.READ, O=_items.LEAVE)

    def reader(head, length):
        seen.append((head, length))
        return 8, target, target

    assert ring._get_direct(actions, reader, timeout=TIMEOUT) is target
    assert target == b"payload!" and seen == [(b"N1234567payload!", 16)]
    assert ring._get_direct(actions, reader, timeout=TIMEOUT) == b"plain"
    assert ring._get_direct(actions, reader, timeout=TIMEOUT) is None   # left for view()
    assert ring.get() == b"Oframed"
    assert ring._get_direct(actions, reader, timeout=TIMEOUT) is None   # empty: left too
    assert ring.get() == b""
