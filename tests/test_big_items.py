"""Queue items of any size (SPEC 0.2, "The queue family"): items larger than
the ring go through a side file (ringshm/_sidefile.py); a producer or
consumer SIGKILLed at chosen points loses no committed item, delivers no
half item and leaves no file behind. Plus a port of faster-fifo's test of
0.5 MB messages through a 1 MB queue."""

import array
import hashlib
import os
import pickle
import time
import weakref

import faultkit
import pytest

import ringshm.queue
import ringshm.ring
from ringshm import Queue, _items, _sidefile, watcher

np = pytest.importorskip("numpy", reason="some items are NumPy arrays")

TIMEOUT = 30.0


@pytest.fixture
def make_queue():
    """Queues closed at the end of the test; none may leave a side file."""
    made = []

    def make(*args, **kwargs):
        q = Queue(*args, **kwargs)
        _IDENTITIES[q] = q._ring.identity
        made.append(q)
        return q

    yield make
    identities = [_IDENTITIES[q] for q in made]
    for q in made:
        q.close()
    left = [n for n in os.listdir(_sidefile.SHM_DIR)
            if any(n.startswith(f"{_sidefile.PREFIX}{identity}.") for identity in identities)]
    assert not left, f"side files left behind: {left}"


# Each queue's ring identity, noted while it is open: side files are named
# by it, and they are looked for after close() too.
_IDENTITIES = weakref.WeakKeyDictionary()


def side_files(q):
    """The side files of q's ring."""
    if q not in _IDENTITIES:
        _IDENTITIES[q] = q._ring.identity
    return files_of(_IDENTITIES[q])


def files_of(identity):
    return sorted(n for n in os.listdir(_sidefile.SHM_DIR)
                  if n.startswith(f"{_sidefile.PREFIX}{identity}."))


def pattern(size, seed):
    """size bytes that differ with seed (cheap to make, cheap to check)."""
    block = hashlib.sha256(str(seed).encode()).digest() * 2048   # 64 KiB
    return (block * (size // len(block) + 1))[:size]


def stop_here(link, note):
    """In a child: tell the parent we are at the point, then wait to be killed."""
    link.ready(note)
    time.sleep(600)


# -- any size ------------------------------------------------------------------------

def test_item_larger_than_the_ring_round_trip(make_queue):
    q = make_queue(capacity=64 << 10)
    for size in (q._ring.max_message_size + 1, 1 << 20, 5 << 20):
        data = pattern(size, size)
        q.put(data)
        assert len(side_files(q)) == 1
        assert q.get(timeout=TIMEOUT) == data
        assert side_files(q) == []


def test_a_custom_dumps_buffer_is_sized_in_bytes_not_items(make_queue):
    # A custom dumps may return any buffer: one of doubles whose item count
    # fits max_message_size but whose bytes do not still goes to a side file.
    q = make_queue(capacity=64 << 10, dumps=lambda obj: memoryview(array.array("d", obj)),
                   loads=lambda data: array.array("d", data).tolist())
    items = [float(i) for i in range(q._ring.max_message_size // 2)]
    q.put(items)
    assert len(side_files(q)) == 1
    assert q.get(timeout=TIMEOUT) == items
    assert side_files(q) == []

def test_big_arrays_and_small_items_keep_their_order(make_queue):
    q = make_queue(capacity=1 << 20)
    items = []
    for i in range(6):
        items.append(i)
        items.append(np.full((1 << 20) // 4 * (i % 3 + 1), i, dtype=np.float32))
    for item in items:
        q.put(item)
    for expected in items:
        got = q.get(timeout=TIMEOUT)
        if isinstance(expected, int):
            assert got == expected
        else:
            assert got.flags.writeable and np.array_equal(got, expected)
    assert side_files(q) == []


def _consume_and_digest(link, q, count):
    for _ in range(count):
        data = q.get(timeout=300)
        link.ready(f"{len(data)} {hashlib.sha256(data).hexdigest()}")


@pytest.mark.slow
@pytest.mark.multiprocess
def test_one_gib_bytes_through_a_16_mib_queue_to_another_process(make_queue):
    q = make_queue(capacity=16 << 20)
    size = 1 << 30
    data = pattern(size, "gib")
    digest = hashlib.sha256(data).hexdigest()
    with faultkit.Child(_consume_and_digest, q, 1) as child:
        q.put(data)
        del data
        assert child.wait_ready(timeout=300) == f"{size} {digest}"
        assert child.join() == 0
    assert side_files(q) == []


def _produce_numbered(link, q, producer, count, size):
    for number in range(count):
        q.put((producer, number, pattern(size, (producer, number))))
    link.ready("done")


@pytest.mark.multiprocess
@pytest.mark.parametrize("size", [500_000, 900_000], ids=["0.5MB-in-ring", "0.9MB-side-file"])
def test_faster_fifo_port_half_megabyte_messages_through_a_1mb_queue(make_queue, size):
    # faster-fifo's tests send 0.5 MB messages through a queue of
    # max_size_bytes=1_000_000 with several producers; every message must
    # arrive once, intact, in each producer's order.
    q = make_queue(capacity=1_000_000)
    producers, count = 3, 20
    children = [faultkit.Child(_produce_numbered, q, p, count, size) for p in range(producers)]
    try:
        seen = {p: [] for p in range(producers)}
        for _ in range(producers * count):
            producer, number, payload = q.get(timeout=TIMEOUT)
            assert payload == pattern(size, (producer, number))
            seen[producer].append(number)
        for child in children:
            assert child.wait_ready() == "done"
            assert child.join() == 0
    finally:
        for child in children:
            child.close()
    assert seen == {p: list(range(count)) for p in range(producers)}
    assert q.empty() and side_files(q) == []


# -- producer killed --------------------------------------------------------------

def _put_stopping_in_pwrite(link, q, data, at_end_offset):
    real = os.pwrite

    def pwrite(fd, buffer, offset):
        if at_end_offset and offset == _sidefile._END_AT:
            written = real(fd, buffer, offset)   # `end` is written: inside reserve()
            stop_here(link, "end written")
            return written
        if not at_end_offset and offset >= _sidefile.HEADER_SIZE:
            real(fd, memoryview(buffer)[:4096], offset)
            stop_here(link, "halfway through the file")
        return real(fd, buffer, offset)

    _sidefile.os.pwrite = pwrite
    q.put(data)


@pytest.mark.fault
@pytest.mark.parametrize("at_end_offset", [False, True], ids=["writing-the-file", "in-reserve"])
def test_producer_killed_mid_item_delivers_nothing_and_leaves_nothing(make_queue, at_end_offset):
    q = make_queue(capacity=64 << 10)
    q.put("before")
    data = pattern(1 << 20, "killed")
    with faultkit.Child(_put_stopping_in_pwrite, q, data, at_end_offset) as child:
        child.wait_ready()
        child.kill()
    assert len(side_files(q)) == 1
    q.put("after")                   # takes the dead producer's put lock over
    assert q.get(timeout=TIMEOUT) == "before"
    assert q.get(timeout=TIMEOUT) == "after"
    assert q.empty()
    bigger = pattern(1 << 20, "next")
    q.put(bigger)                    # a big put sweeps the dead one's file
    assert len(side_files(q)) == 1
    assert q.get(timeout=TIMEOUT) == bigger
    assert side_files(q) == []


def _put_and_die(link, q, data):
    q.put(data)
    link.ready("put returned")
    time.sleep(600)


@pytest.mark.fault
def test_producer_killed_after_put_returned_loses_nothing(make_queue):
    q = make_queue(capacity=64 << 10)
    data = pattern(3 << 20, "committed")
    with faultkit.Child(_put_and_die, q, data) as child:
        child.wait_ready()
        child.kill()
    q.put(pattern(1 << 20, "sweep"))   # its sweep must keep the dead one's item
    assert q.get(timeout=TIMEOUT) == data
    assert q.get(timeout=TIMEOUT) == pattern(1 << 20, "sweep")
    assert side_files(q) == []


# -- consumer killed --------------------------------------------------------------

def _get_stopping_in(link, q, where):
    if where == "reading the side file":
        real = _sidefile.FileSource.read_bytes

        def read_bytes(self, offset, length):
            data = real(self, offset, min(length, 4096))
            stop_here(link, where)
            return data

        _sidefile.FileSource.read_bytes = read_bytes
    elif where == "reading an array in the ring":
        # Ring._get_direct's reader, with the get lock held, the record
        # not yet consumed.
        def new_array(dtype_text, shape, flags):
            stop_here(link, where)

        _items._new_array = new_array
    else:   # consumed, before the side file is removed
        def consumed(ring, path):
            stop_here(link, where)

        _sidefile.consumed = consumed
    q.get(timeout=TIMEOUT)


@pytest.mark.fault
@pytest.mark.parametrize("where", ["reading the side file", "reading an array in the ring"])
def test_consumer_killed_mid_item_leaves_it_for_the_next(make_queue, where):
    q = make_queue(capacity=1 << 20)
    item = pattern(3 << 20, "again") if where == "reading the side file" else \
        np.arange(50_000, dtype=np.float64)   # in the ring
    q.put(item)
    q.put("second")
    with faultkit.Child(_get_stopping_in, q, where) as child:
        assert child.wait_ready() == where
        child.kill()
    got = q.get(timeout=TIMEOUT)     # takes the dead consumer's get lock over
    if isinstance(item, bytes):
        assert got == item
    else:
        assert np.array_equal(got, item) and got.flags.writeable
    assert q.get(timeout=TIMEOUT) == "second"
    assert q.empty() and side_files(q) == []


@pytest.mark.fault
def test_consumer_killed_after_consuming_leaves_a_file_that_is_swept(make_queue):
    q = make_queue(capacity=64 << 10)
    q.put(pattern(1 << 20, "taken"))
    with faultkit.Child(_get_stopping_in, q, "consumed") as child:
        child.wait_ready()
        child.kill()
    assert q.empty()                  # it was consumed: not delivered twice
    assert len(side_files(q)) == 1
    q.put(pattern(1 << 20, "next"))   # the sweep of a big put removes it
    assert len(side_files(q)) == 1
    assert q.get(timeout=TIMEOUT) == pattern(1 << 20, "next")
    assert side_files(q) == []


# -- the ring's name goes ------------------------------------------------------------

def _create_put_and_die(link, size, seed="orphan", watched=False):
    q = Queue(capacity=64 << 10)
    if not watched:
        # As if its watcher had died with it (what `ringshm gc` cleans up): the
        # ring's name must outlive this process for the test, not go within 1 s.
        watcher.unregister(ringshm.ring.shm_path(q.name))
    q.put(pattern(size, seed))
    stop_here(link, f"{q.name} {q._ring.identity}")


@pytest.mark.fault
def test_files_of_a_killed_creator_go_once_its_ring_is_gone(make_queue):
    with faultkit.Child(_create_put_and_die, 1 << 20) as child:
        name, identity = child.wait_ready().split()
        child.kill()
    prefix = f"{_sidefile.PREFIX}{identity}."
    assert [n for n in os.listdir(_sidefile.SHM_DIR) if n.startswith(prefix)]
    make_queue()                      # the ring is still there: kept
    assert [n for n in os.listdir(_sidefile.SHM_DIR) if n.startswith(prefix)]
    # What `ringshm gc` (or the creator watchdog) does with the stale ring.
    os.unlink(os.path.join(_sidefile.SHM_DIR, "ringshm." + name))
    make_queue()
    assert not [n for n in os.listdir(_sidefile.SHM_DIR) if n.startswith(prefix)]


def test_closing_the_creator_removes_the_files_of_queued_items(make_queue):
    q = Queue(capacity=64 << 10)
    _IDENTITIES[q] = q._ring.identity
    q.put(pattern(1 << 20, "left"))
    q.put(pattern(1 << 20, "left too"))
    identity = q._ring.identity
    q.close()
    assert not files_of(identity)


def _attach_wait_and_digest(link, q, count):
    # Attached (a forked copy of the creator's Queue); reads only after the
    # parent has closed its queue, so the ring's name is gone by then.
    link.ready("attached")
    link.wait_go()
    for _ in range(count):
        data = q.get(timeout=TIMEOUT)
        link.ready(hashlib.sha256(data).hexdigest())
    q.close()
    link.ready("closed")


@pytest.mark.multiprocess
def test_an_attached_process_gets_big_items_after_the_creator_closed(make_queue):
    q = make_queue(capacity=64 << 10)
    items = [pattern(1 << 20, ("after close", n)) for n in range(2)]
    name = q.name
    with faultkit.Child(_attach_wait_and_digest, q, len(items)) as child:
        assert child.wait_ready() == "attached"
        for item in items:
            q.put(item)
        q.close()                     # the name goes; the child still maps the ring
        assert not os.path.exists(ringshm.ring.shm_path(name))
        assert len(side_files(q)) == len(items)
        child.go()
        for item in items:
            assert child.wait_ready() == hashlib.sha256(item).hexdigest()
        assert child.wait_ready() == "closed"
        assert child.join() == 0
    # The child closed last: it removed what was left (nothing, all consumed).
    assert side_files(q) == []


def _attach_put_and_linger(link, q, size):
    q.put(pattern(size, "left queued"))
    link.ready("put")
    link.wait_go()
    q.close()                         # the last one out
    link.ready("closed")


@pytest.mark.multiprocess
def test_the_last_process_to_close_removes_the_files_of_queued_items(make_queue):
    q = make_queue(capacity=64 << 10)
    with faultkit.Child(_attach_put_and_linger, q, 1 << 20) as child:
        assert child.wait_ready() == "put"
        q.close()                     # the child still maps the ring: kept
        assert len(side_files(q)) == 1
        make_queue()                  # a new queue's orphan sweep keeps it too
        assert len(side_files(q)) == 1
        child.go()
        assert child.wait_ready() == "closed"
        assert child.join() == 0
    assert side_files(q) == []


@pytest.mark.fault
def test_big_items_outlive_a_killed_creator_while_a_process_maps_the_ring(make_queue):
    with faultkit.Child(_create_put_and_die, 1 << 20, "creator died", True) as child:
        name, identity = child.wait_ready().split()
        attached = ringshm.queue._rebuild(Queue, ringshm.Ring.open(name), 0,
                                          pickle.dumps, pickle.loads)
        child.kill()
    try:
        faultkit.wait_until(lambda: not os.path.exists(ringshm.ring.shm_path(name)))
        make_queue()                  # its orphan sweep: the ring is still mapped here
        assert attached.get(timeout=TIMEOUT) == pattern(1 << 20, "creator died")
    finally:
        attached.close()
    assert not files_of(identity)


def test_a_side_file_is_private_and_preallocated(make_queue):
    q = make_queue(capacity=64 << 10)
    q.put(pattern(1 << 20, "mode"))
    (name,) = side_files(q)
    info = os.stat(os.path.join(_sidefile.SHM_DIR, name))
    assert info.st_mode & 0o777 == 0o600
    assert info.st_blocks * 512 >= info.st_size     # no hole to SIGBUS on
    q.get(timeout=TIMEOUT)


def test_shutdown_immediate_frees_the_side_files_of_what_it_discards(make_queue):
    # 0.2 kept them until close(): a long-lived process that shut a queue
    # down and kept it open held that memory.
    q = make_queue(capacity=64 << 10)
    for seed in range(3):
        q.put(pattern(100_000, seed))
    q.put(b"small")
    assert len(side_files(q)) == 3
    q.shutdown(immediate=True)
    assert side_files(q) == []
    assert q.empty()
