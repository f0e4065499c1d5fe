"""Ring behaviour in one process (plus a forked child where sharing is the
point): lifecycle, attributes, counters, shutdown, errors, pickling, batches
and the kinds of input a put accepts."""

import array
import gc
import mmap
import multiprocessing
import os
import pickle
import queue
import re
import stat
import subprocess
import sys
import threading
import time

import posix_ipc
import pytest
from conftest import SHM_PREFIX, fill, join_or_kill, remove_segment, shm_path

from ringshm import (
    Empty,
    Full,
    MessageTooLarge,
    Ring,
    RingCorrupted,
    RingError,
    RingExists,
    RingNotFound,
    ShutDown,
)

STATS_KEYS = {
    "capacity", "used_bytes", "messages", "messages_put", "bytes_put",
    "messages_got", "bytes_got", "put_waits", "get_waits", "put_timeouts",
    "get_timeouts", "lock_recoveries", "creator_pid", "creator_alive",
    "shutdown", "version", "max_messages", "recovery_interval", "spin", "created",
}


def record_size(n):
    """Bytes a message of n bytes takes in the ring (DESIGN: 8-byte header,
    payload padded to 8)."""
    return 8 + (n + 7) // 8 * 8


def run_forked(target, *args):
    """Run target(*args) in a forked child; return its exit code (0 = it
    returned normally)."""
    child = multiprocessing.get_context("fork").Process(target=target, args=args)
    child.start()
    if not join_or_kill(child, 20):
        pytest.fail("forked child did not finish")
    return child.exitcode


# ---------------------------------------------------------------- lifecycle

def test_create_and_open_share_messages(make_ring):
    creator = make_ring()
    opened = make_ring.track(Ring.open(creator.name))
    creator.put(b"to the opener")
    assert opened.get(timeout=1) == b"to the opener"
    opened.put(b"to the creator")
    assert creator.get(timeout=1) == b"to the creator"


def test_create_without_name_picks_unique_names():
    first = Ring.create(capacity=4096)
    second = Ring.create(capacity=4096)
    try:
        assert first.name != second.name
        # "<pid>-<12 hex>" (contract note): the pid lets tools see the owner.
        assert re.fullmatch(rf"{os.getpid()}-[0-9a-f]{{12}}", first.name)
        assert os.path.exists(shm_path(first.name))
    finally:
        first.close()
        second.close()
    assert not os.path.exists(shm_path(first.name))
    assert not os.path.exists(shm_path(second.name))


def test_create_of_existing_name_raises_and_leaves_ring_intact(make_ring):
    ring = make_ring()
    ring.put(b"still here")
    with pytest.raises(RingExists):
        Ring.create(ring.name, capacity=4096)
    # The failed create must neither re-initialise nor unlink the ring.
    assert os.path.exists(shm_path(ring.name))
    assert ring.get_nowait() == b"still here"


def test_exist_ok_opens_the_existing_ring(make_ring):
    ring = make_ring()
    ring.put(b"kept")
    again = Ring.create(ring.name, capacity=4096, exist_ok=True)
    try:
        assert again.get_nowait() == b"kept"
    finally:
        again.close()
    # It did not create the ring, so closing it must not remove the name.
    assert os.path.exists(shm_path(ring.name))


def test_exist_ok_creates_when_missing(ring_name):
    ring = Ring.create(ring_name, capacity=4096, exist_ok=True)
    try:
        ring.put(b"x")
        assert ring.get_nowait() == b"x"
    finally:
        ring.close()
    assert not os.path.exists(shm_path(ring_name))


# Regression: an opener that found no magic yet once got a ring marked
# closed (the retry went through close's path).
def test_open_waits_for_a_creator_still_writing_the_header(ring_name):
    """open() (and create(exist_ok=True)) may find a segment that its
    creator has sized but not yet initialised: it must wait for the header,
    then work. Played here by copying a real ring's header into a zeroed
    segment 0.1 s late, the magic at offset 0 last."""
    template_name = ring_name + "-template"
    with Ring.create(template_name, capacity=4096):
        size = os.stat(shm_path(template_name)).st_size
        with open(shm_path(template_name), "rb") as f:
            header = f.read(4096)
    segment = posix_ipc.SharedMemory("/" + SHM_PREFIX + ring_name, posix_ipc.O_CREX,
                                     mode=0o600, size=size)
    mapping = mmap.mmap(segment.fd, size)
    segment.close_fd()

    def finish_header():
        mapping[8:4096] = header[8:]
        mapping[0:8] = header[:8]

    writer = threading.Timer(0.1, finish_header)
    writer.start()
    try:
        with Ring.open(ring_name) as ring:
            ring.put(b"after the wait")
            assert ring.get_nowait() == b"after the wait"
    finally:
        writer.join()
        mapping.close()
        remove_segment(ring_name)


def test_open_of_missing_ring_raises_ring_not_found(ring_name, tmp_path):
    with pytest.raises(RingNotFound):
        Ring.open(ring_name)
    with pytest.raises(RingNotFound):
        Ring.open(path=str(tmp_path / "no.ring"))


@pytest.mark.parametrize("content", [b"this is not a ring" * 1000, b"short", b""])
def test_open_of_a_file_that_is_not_a_ring_raises_corrupted(tmp_path, content):
    path = tmp_path / "garbage.ring"
    path.write_bytes(content)
    with pytest.raises(RingCorrupted):
        Ring.open(path=str(path))


def _anonymous_child(ring):
    message = ring.get(timeout=10)
    ring.put(b"child got " + message)


def test_anonymous_ring_is_shared_with_forked_children():
    before = set(os.listdir("/dev/shm"))
    ring = Ring.anonymous(capacity=4096)
    try:
        assert ring.name is None and ring.path is None
        # No name anywhere: nothing new of this process (other processes'
        # rings may come and go meanwhile; they are not this test's).
        ours = f"ringshm.{os.getpid()}-"
        assert [n for n in set(os.listdir("/dev/shm")) - before if n.startswith(ours)] == []
        ring.put(b"hello")
        assert run_forked(_anonymous_child, ring) == 0
        assert ring.get(timeout=1) == b"child got hello"
    finally:
        ring.close()


def test_file_backed_ring(tmp_path):
    path = str(tmp_path / "jobs.ring")
    ring = Ring.create(path=path, capacity=4096)
    try:
        assert ring.path == path and ring.name is None
        assert os.path.isfile(path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        opened = Ring.open(path=path)
        try:
            ring.put(b"via the file")
            assert opened.get(timeout=1) == b"via the file"
            assert opened.capacity == ring.capacity
        finally:
            opened.close()
        assert os.path.isfile(path)  # open() never unlinks
    finally:
        ring.close()
    assert not os.path.exists(path)  # the creator does, on close


def test_persist_keeps_the_name_after_close(ring_name):
    try:
        ring = Ring.create(ring_name, capacity=4096, persist=True)
        ring.put(b"survives")
        ring.close()
        assert os.path.exists(shm_path(ring_name))
        with Ring.open(ring_name) as later:
            assert later.get_nowait() == b"survives"
        assert os.path.exists(shm_path(ring_name))
        with Ring.open(ring_name) as last:
            last.unlink()
        assert not os.path.exists(shm_path(ring_name))
    finally:
        remove_segment(ring_name)


def test_collected_creator_unlinks(ring_name):
    ring = Ring.create(ring_name, capacity=4096)
    del ring
    gc.collect()
    assert not os.path.exists(shm_path(ring_name))


def _close_and_exit(ring):
    ring.close()


def test_a_forked_copy_of_the_creator_never_unlinks(make_ring):
    ring = make_ring()
    assert run_forked(_close_and_exit, ring) == 0
    assert os.path.exists(shm_path(ring.name))
    ring.put(b"still mine")
    assert ring.get_nowait() == b"still mine"


def _attached_child(name, attached, unlinked, answered):
    ring = Ring.open(name)
    attached.set()
    assert unlinked.wait(10)
    ring.put(b"from the child after unlink")
    assert answered.wait(10)
    assert ring.get(timeout=10) == b"from the parent after unlink"
    ring.close()


def test_unlink_removes_name_but_attached_processes_keep_working(make_ring):
    ring = make_ring()
    ctx = multiprocessing.get_context("fork")
    attached, unlinked, answered = ctx.Event(), ctx.Event(), ctx.Event()
    child = ctx.Process(target=_attached_child,
                        args=(ring.name, attached, unlinked, answered))
    child.start()
    try:
        assert attached.wait(10)
        ring.unlink()
        assert not os.path.exists(shm_path(ring.name))
        with pytest.raises(RingNotFound):
            Ring.open(ring.name)
        unlinked.set()
        assert ring.get(timeout=10) == b"from the child after unlink"
        ring.put(b"from the parent after unlink")
        answered.set()
    finally:
        join_or_kill(child)
    assert child.exitcode == 0
    with pytest.raises(RingNotFound):   # the name is gone already
        ring.unlink()
    ring.close()   # after unlink(): must not raise


def test_a_name_unlinked_can_be_created_again_apart_from_the_old_ring(make_ring):
    old = make_ring()
    attached = make_ring.track(Ring.open(old.name))
    old.unlink()
    new = make_ring(name=old.name)
    attached.put(b"on the old segment")
    with pytest.raises(Empty):
        new.get_nowait()
    assert old.get_nowait() == b"on the old segment"
    new.put(b"on the new segment")
    with Ring.open(old.name) as opened:   # the name now means the new ring
        assert opened.get_nowait() == b"on the new segment"


def test_an_anonymous_ring_has_no_name_to_unlink():
    ring = Ring.anonymous(capacity=4096)
    try:
        with pytest.raises(TypeError):
            ring.unlink()
    finally:
        ring.close()


def test_exist_ok_opens_an_existing_file_backed_ring(make_ring, tmp_path):
    ring = make_ring(path=str(tmp_path / "shared.ring"))
    ring.put(b"kept")
    with Ring.create(path=ring.path, capacity=4096, exist_ok=True) as again:
        assert again.get_nowait() == b"kept"
    assert os.path.isfile(ring.path)   # it did not create the file


# --------------------------------------------------------------- attributes

@pytest.mark.parametrize("asked, real", [
    (1, 4096), (4096, 4096), (4097, 8192), (5000, 8192), ((1 << 16) + 1, 1 << 17),
])
def test_capacity_rounds_up_to_a_power_of_two(backing, asked, real):
    ring = backing(capacity=asked)
    assert ring.capacity == real
    assert ring.stats()["capacity"] == real


def test_attributes(make_ring):
    ring = make_ring(capacity=8192)
    assert isinstance(ring.name, str) and ring.path is None
    # Half the ring (contract): an empty ring takes any single message
    # wherever its head stands.
    assert ring.max_message_size == ring.capacity // 2 - 8
    assert ring.closed is False
    for attribute in ("name", "path", "capacity", "max_message_size", "closed"):
        with pytest.raises(AttributeError):
            setattr(ring, attribute, getattr(ring, attribute))
    ring.close()
    assert ring.closed is True


def test_close_is_idempotent_and_later_calls_raise_value_error(ring_name):
    ring = Ring.create(ring_name, capacity=4096)
    ring.put(b"x")
    ring.close()
    ring.close()
    assert not os.path.exists(shm_path(ring_name))
    # As with a closed file: ValueError, never a crash on an unmapped segment.
    for call in (lambda: ring.put(b"y"), ring.get_nowait, ring.qsize, ring.stats):
        with pytest.raises(ValueError):
            call()


def test_context_manager_closes_and_unlinks(ring_name):
    with Ring.create(ring_name, capacity=4096) as ring:
        assert isinstance(ring, Ring)
        ring.put(b"x")
        assert os.path.exists(shm_path(ring_name))
    assert ring.closed
    assert not os.path.exists(shm_path(ring_name))


def test_len_qsize_empty_full(backing):
    ring = backing()
    assert (len(ring), ring.qsize(), ring.empty(), ring.full()) == (0, 0, True, False)
    for _ in range(3):
        ring.put(b"abc")
    assert (len(ring), ring.qsize(), ring.empty(), ring.full()) == (3, 3, False, False)
    count = 3 + fill(ring)
    assert len(ring) == count and ring.full()
    ring.get_nowait()
    assert len(ring) == count - 1 and not ring.full()


def test_stats_keys_and_counters(backing):
    ring = backing()
    stats = ring.stats()
    assert STATS_KEYS <= set(stats)
    assert stats["creator_pid"] == os.getpid() and stats["creator_alive"] is True
    assert stats["messages_put"] == stats["messages_got"] == stats["messages"] == 0
    assert stats["shutdown"] is False and stats["capacity"] == ring.capacity
    for size in (1, 2, 3):
        ring.put(b"x" * size)
    ring.get()
    ring.get()
    stats = ring.stats()
    assert (stats["messages_put"], stats["bytes_put"]) == (3, 6)
    assert (stats["messages_got"], stats["bytes_got"]) == (2, 3)
    assert stats["messages"] == 1
    assert stats["used_bytes"] == record_size(3)


def test_stats_live_in_the_segment(make_ring):
    ring = make_ring()
    ring.put(b"12345")
    ring.get()
    with pytest.raises(Empty):
        ring.get(timeout=0.01)
    fill(ring)
    with pytest.raises(Full):
        ring.put(b"x", timeout=0.01)
    ring.shutdown()
    # Another attachment sees the same counters: they are in shared memory.
    stats = make_ring.track(Ring.open(ring.name)).stats()
    assert stats["messages_got"] == 1 and stats["bytes_got"] == 5
    assert stats["get_timeouts"] >= 1 and stats["put_timeouts"] >= 1
    assert stats["creator_pid"] == os.getpid()
    assert stats["shutdown"] is True


def test_create_options_live_in_the_segment(make_ring):
    ring = make_ring(recovery_interval=0.25, spin=0, max_messages=7)
    before = time.time()
    for stats in (ring.stats(), make_ring.track(Ring.open(ring.name)).stats()):
        assert stats["recovery_interval"] == 0.25
        assert stats["spin"] == 0
        assert stats["max_messages"] == 7
        assert stats["version"] >= 1
        assert before - 60 < stats["created"] <= time.time()


def test_default_recovery_interval_is_at_most_a_second(make_ring):
    assert 0 < make_ring().stats()["recovery_interval"] <= 1


# ----------------------------------------------------------------- shutdown

def test_iteration_ends_after_shutdown_and_drain(backing):
    ring = backing()
    messages = [b"a", b"bb", b""]
    for message in messages:
        ring.put(message)
    ring.shutdown()
    assert list(ring) == messages


def test_iteration_in_a_thread_ends_when_another_thread_shuts_down(make_ring):
    ring = make_ring()
    received = []
    reader = threading.Thread(target=lambda: received.extend(ring))
    reader.start()
    for n in range(5):
        ring.put(b"%d" % n)
    ring.shutdown()
    reader.join(5)
    assert not reader.is_alive()
    assert received == [b"0", b"1", b"2", b"3", b"4"]


def test_shutdown_refuses_puts_and_drains_gets(make_ring):
    ring = make_ring()
    peer = make_ring.track(Ring.open(ring.name))
    ring.put(b"one")
    ring.put(b"two")
    assert not ring.is_shutdown
    ring.shutdown()
    ring.shutdown()  # idempotent
    assert ring.is_shutdown and peer.is_shutdown
    for put in (lambda: ring.put(b"x"), lambda: peer.put_nowait(b"x"),
                lambda: peer.put_many([b"x"])):
        with pytest.raises(ShutDown):
            put()
    assert peer.get() == b"one"          # blocking get still drains
    assert ring.get_many(block=False) == [b"two"]
    for get in (ring.get, peer.get_nowait, lambda: ring.get_many(timeout=1)):
        with pytest.raises(ShutDown):   # not Empty: it will never have more
            get()
    assert len(ring) == 0


# ------------------------------------------------------------------- errors

def test_error_hierarchy():
    for error in (Full, Empty, ShutDown, MessageTooLarge, RingExists, RingNotFound,
                  RingCorrupted):
        assert issubclass(error, RingError)
    assert issubclass(Full, queue.Full)
    assert issubclass(Empty, queue.Empty)
    if hasattr(queue, "ShutDown"):
        assert issubclass(ShutDown, queue.ShutDown)
    assert issubclass(MessageTooLarge, ValueError)
    assert issubclass(RingExists, FileExistsError)
    assert issubclass(RingNotFound, FileNotFoundError)


def test_message_too_large_raises_at_once(backing):
    ring = backing()
    with pytest.raises(MessageTooLarge):
        ring.put(bytes(ring.max_message_size + 1))   # block=True: must not wait
    with pytest.raises(MessageTooLarge):
        ring.put_many([bytes(2000), bytes(2000), bytes(2000)])
    assert len(ring) == 0


# ----------------------------------------------------------------- pickling

def test_pickled_named_ring_attaches_in_the_same_process(make_ring):
    ring = make_ring()
    copy = make_ring.track(pickle.loads(pickle.dumps(ring)))
    assert copy is not ring and copy.name == ring.name
    assert copy.capacity == ring.capacity
    ring.put(b"through the copy")
    assert copy.get(timeout=1) == b"through the copy"
    copy.close()
    # The copy only attached: closing it must not remove the name.
    assert os.path.exists(shm_path(ring.name))
    ring.put(b"still works")
    assert ring.get_nowait() == b"still works"


def test_pickled_file_backed_ring(make_ring, tmp_path):
    ring = make_ring(path=str(tmp_path / "p.ring"))
    copy = make_ring.track(pickle.loads(pickle.dumps(ring)))
    assert copy.path == ring.path
    copy.put(b"back")
    assert ring.get(timeout=1) == b"back"


def test_pickling_an_anonymous_ring_says_to_use_a_named_one():
    ring = Ring.anonymous(capacity=4096)
    try:
        with pytest.raises(TypeError, match="named"):
            pickle.dumps(ring)
    finally:
        ring.close()


# ------------------------------------------------------------------ batches

def test_put_many_then_get_many_keeps_order(backing):
    ring = backing()
    batch = [b"%d" % n * n for n in range(20)]
    ring.put_many(batch)
    assert ring.get_many(max_messages=100, block=False) == batch


def test_put_many_of_nothing_is_a_no_op(make_ring):
    ring = make_ring()
    ring.put_many([])
    assert len(ring) == 0 and ring.stats()["messages_put"] == 0


def test_put_many_is_all_or_nothing(backing):
    ring = backing()
    ring.put(b"first" * 400)
    ring.put(b"second" * 100)
    # Would fit an empty ring (2032 bytes, half the ring at most), not next
    # to the 2616 bytes of those two.
    batch = [bytes(1000), bytes(900), bytes(100)]
    with pytest.raises(Full):
        ring.put_many(batch, block=False)
    with pytest.raises(Full):
        ring.put_many(batch, timeout=0.05)
    assert len(ring) == 2 and ring.stats()["messages_put"] == 2
    assert ring.get_many(block=False) == [b"first" * 400, b"second" * 100]
    with pytest.raises(Empty):   # no part of either batch is in the ring
        ring.get_nowait()


def test_put_many_of_half_the_ring_fits_an_empty_ring_after_traffic(make_ring):
    ring = make_ring()
    ring.put(bytes(2000))   # moves head to 3016 of 4096
    ring.put(bytes(1000))
    ring.get_many(block=False)
    batch = [bytes(1000), bytes(900), bytes(100)]   # 2032 bytes: half the ring at most
    ring.put_many(batch, block=False)   # wraps after its first record
    assert ring.get_many(block=False) == batch


def test_a_put_many_that_raised_full_leaves_the_room_as_it_was(make_ring):
    ring = make_ring()
    ring.put(b"a" * 2040)
    ring.put(b"b" * 1000)
    used = ring.stats()["used_bytes"]   # 3056 of 4096: 1040 free
    with pytest.raises(Full):   # 2016 bytes: allowed, but not next to these
        ring.put_many([bytes(1000), bytes(1000)], block=False)
    assert ring.stats()["used_bytes"] == used
    assert not ring.full()
    ring.put_nowait(b"y" * 100)
    assert ring.get_many(block=False) == [b"a" * 2040, b"b" * 1000, b"y" * 100]


def test_a_batch_of_more_than_half_the_ring_is_too_large(make_ring):
    ring = make_ring()
    with pytest.raises(MessageTooLarge):
        ring.put_many([bytes(1000), bytes(1000), bytes(100)], block=False)  # 2128 > 2048
    assert ring.empty()


def test_put_many_accepts_any_iterable(make_ring):
    ring = make_ring()
    ring.put_many(bytes([n]) for n in range(5))
    assert ring.get_many(block=False) == [bytes([n]) for n in range(5)]


def test_put_many_from_a_generator_that_fails_puts_nothing(make_ring):
    ring = make_ring()

    def batch():
        yield b"one"
        raise LookupError("the producer's source failed")

    with pytest.raises(LookupError):
        ring.put_many(batch())
    assert len(ring) == 0 and ring.stats()["messages_put"] == 0


def test_get_many_limits(backing):
    ring = backing()
    ring.put_many([bytes([n]) * 10 for n in range(10)])
    assert ring.get_many(max_messages=3, block=False) == [bytes([n]) * 10 for n in range(3)]
    # 35 bytes allow three 10-byte messages, not four.
    assert ring.get_many(max_bytes=35, block=False) == [bytes([n]) * 10 for n in range(3, 6)]
    # Always at least one message, even one larger than max_bytes.
    assert ring.get_many(max_bytes=5, block=False) == [bytes([6]) * 10]
    assert ring.get_many(block=False) == [bytes([n]) * 10 for n in range(7, 10)]
    with pytest.raises(Empty):
        ring.get_many(block=False)
    with pytest.raises(Empty):
        ring.get_many(timeout=0.01)


def test_get_many_takes_256_kib_by_default_and_everything_with_none(make_ring):
    ring = make_ring(capacity=1 << 21)
    messages = [bytes([n]) * (64 << 10) for n in range(10)]
    for message in messages:
        ring.put(message)
    assert ring.get_many(block=False) == messages[:4]          # 4 x 64 KiB = 256 KiB
    assert ring.get_many(max_bytes=None, block=False) == messages[4:]


# ------------------------------------------------------------ zero copy

def test_get_into(backing):
    ring = backing()
    ring.put(b"hello")
    with pytest.raises(ValueError):
        ring.get_into(bytearray(4))
    assert len(ring) == 1  # a buffer too small leaves the message
    buffer = bytearray(16)
    assert ring.get_into(buffer) == 5
    assert buffer[:5] == b"hello"
    with pytest.raises(Empty):
        ring.get_into(buffer, block=False)


def test_reserve_publishes_on_exit_and_discards_on_error(backing):
    ring = backing()
    with pytest.raises(RuntimeError):
        with ring.reserve(3) as buffer:
            buffer[:] = b"bad"
            raise RuntimeError
    assert len(ring) == 0
    with ring.reserve(5) as buffer:
        assert len(buffer) == 5 and not buffer.readonly
        buffer[:] = b"vroom"
    assert ring.get_nowait() == b"vroom"


def test_view_consumes_on_exit_and_leaves_on_error(backing):
    ring = backing()
    ring.put(b"seen twice")
    with pytest.raises(RuntimeError):
        with ring.view() as view:
            assert bytes(view) == b"seen twice"
            raise RuntimeError
    assert len(ring) == 1
    with ring.view() as view:
        assert view.readonly and bytes(view) == b"seen twice"
    assert len(ring) == 0


def test_the_lock_a_block_holds_is_not_taken_again_by_its_own_thread(backing):
    # The lock owner is the process: without a check these would wait for
    # themselves for ever.
    ring = backing()
    ring.put(b"m")
    with ring.view():
        for get in (ring.get, ring.get_nowait, ring.get_many,
                    lambda: ring.get_into(bytearray(8)), lambda: ring.view().__enter__()):
            with pytest.raises(RuntimeError):
                get()
        ring.put(b"a put is fine inside a view")
    with ring.reserve(1) as buffer:
        buffer[:] = b"r"
        for put in (lambda: ring.put(b"x"), lambda: ring.put_many([b"x"]),
                    lambda: ring.reserve(1).__enter__()):
            with pytest.raises(RuntimeError):
                put()
        assert ring.get() == b"a put is fine inside a view"
    assert ring.get_many(block=False) == [b"r"]


def test_a_second_ring_object_inside_a_block_of_the_first_is_refused(make_ring):
    # Two objects of one ring in one process share its lock token: a put
    # through the second inside the first's reserve() would wait for
    # itself (0.2: Full after the timeout, or a hang without one).
    ring = make_ring()
    other = Ring.open(ring.name)
    try:
        with ring.reserve(1) as buffer:
            buffer[:] = b"r"
            with pytest.raises(RuntimeError, match="deadlock"):
                other.put(b"x", timeout=5)
            with pytest.raises(RuntimeError, match="deadlock"):
                other.put_many([b"x"])
        with ring.view() as message:
            assert bytes(message) == b"r"
            with pytest.raises(RuntimeError, match="deadlock"):
                other.get(timeout=5)
        assert len(other) == 0
        other.put(b"after the blocks")
        assert ring.get_nowait() == b"after the blocks"
    finally:
        other.close()


def test_a_put_in_its_own_block_that_would_wait_for_room_says_so(make_ring):
    # A put that finds the ring full waits for room before it takes the
    # lock: inside its own thread's reserve() block it must refuse instead.
    ring = make_ring(capacity=4096)
    fill(ring)
    ring.get()                    # room for one record: the block's
    with ring.reserve(1) as buffer:
        buffer[:] = b"r"
        for put in (lambda: ring.put(b"x", timeout=5),
                    lambda: ring.put_many([b"x"], timeout=5)):
            with pytest.raises(RuntimeError):
                put()


# ------------------------------------------------------------------- inputs

def test_every_size_round_trips_across_many_wraps(backing):
    ring = backing()
    for size in range(700):
        message = bytes((size + i) % 251 for i in range(size))
        ring.put_nowait(message)
        assert ring.get_nowait() == message
    assert len(ring) == 0


def test_message_of_max_size_on_a_fresh_ring(make_ring):
    ring = make_ring()
    message = bytes(range(256)) * (ring.max_message_size // 256) + b"z" * (
        ring.max_message_size % 256)
    ring.put_nowait(message)
    assert ring.get_nowait() == message
    with pytest.raises(MessageTooLarge):
        ring.put_nowait(message + b"!")


def test_message_of_max_size_fits_an_empty_ring_after_traffic(backing):
    ring = backing()
    ring.put(b"x" * 100)   # moves head off the start of the data area
    ring.get()
    # The ring is empty: a message of max_message_size must go in now,
    # wherever head stands, or max_message_size promises too much.
    ring.put_nowait(b"m" * ring.max_message_size)
    assert ring.get_nowait() == b"m" * ring.max_message_size


def test_message_of_max_size_reaches_a_waiting_consumer_after_traffic(make_ring):
    ring = make_ring()
    ring.put(b"x" * 100)
    ring.get()
    received = []
    consumer = threading.Thread(target=lambda: received.append(ring.get(timeout=5)))
    consumer.start()
    try:
        ring.put(b"m" * ring.max_message_size, timeout=5)
    finally:
        consumer.join(10)
    assert received == [b"m" * ring.max_message_size]


@pytest.mark.parametrize("size", [32767, 32768, 50000])
def test_large_messages_round_trip_every_way(backing, size):
    # From 32 KiB on the copies run without the GIL: another code path.
    ring = backing(capacity=1 << 18)   # the batch of two: half the ring at most
    message = bytes(range(256)) * (size // 256) + bytes(size % 256)
    ring.put(message, timeout=5)   # timeouts: a bug fails the test, not hangs it
    ring.put_many([message, message[::-1]], timeout=5)
    with ring.reserve(size, timeout=5) as buffer:
        buffer[:] = message
    assert ring.get() == message
    assert ring.get_many(max_messages=2) == [message, message[::-1]]
    buffer = bytearray(size + 1)
    assert ring.get_into(buffer) == size and buffer[:size] == message
    ring.put(message)
    with ring.view() as view:
        assert view == message
    assert len(ring) == 0


@pytest.mark.parametrize("data, expected", [
    (b"bytes", b"bytes"),
    (bytearray(b"bytearray"), b"bytearray"),
    (memoryview(b"memoryview"), b"memoryview"),
    (memoryview(b"0123456789")[2:6], b"2345"),
    (array.array("i", [1, 2, 3]), array.array("i", [1, 2, 3]).tobytes()),
    (memoryview(bytes(range(12))).cast("B", (3, 4)), bytes(range(12))),
    (b"", b""),
])
def test_put_accepts_c_contiguous_bytes_like(make_ring, data, expected):
    ring = make_ring()
    ring.put(data)
    ring.put_many([data])
    assert ring.get_nowait() == expected
    assert ring.get_nowait() == expected


def test_put_rejects_non_contiguous_memoryview(make_ring):
    ring = make_ring()
    strided = memoryview(b"0123456789")[::2]
    for put in (ring.put, ring.put_nowait, lambda data: ring.put_many([data])):
        with pytest.raises((TypeError, ValueError, BufferError)):
            put(strided)
    assert len(ring) == 0


# --------------------------------------------------------------- file modes

def test_segment_mode_is_0600_by_default(make_ring):
    ring = make_ring()
    assert stat.S_IMODE(os.stat(shm_path(ring.name)).st_mode) == 0o600


def test_segment_mode_is_honoured(make_ring, tmp_path):
    old_umask = os.umask(0o022)   # 0o640 is the same under any such umask
    try:
        named = make_ring(mode=0o640)
        backed = make_ring(path=str(tmp_path / "m.ring"), mode=0o640)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(os.stat(shm_path(named.name)).st_mode) == 0o640
    assert stat.S_IMODE(os.stat(backed.path).st_mode) == 0o640


def test_a_get_whose_bytes_cannot_be_made_leaves_the_message():
    # MemoryError from the copy (an address-space limit in a child): the
    # message stays in the ring and the next get takes it.
    script = """
import resource
from ringshm import Ring
ring = Ring.anonymous(capacity=64 << 20)
ring.put(b"y" * (24 << 20))
with open("/proc/self/status") as status:
    size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize"))
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
resource.setrlimit(resource.RLIMIT_AS, (size + (8 << 20), hard))
try:
    ring.get()
    raise SystemExit("no MemoryError")
except MemoryError:
    pass
resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
assert len(ring) == 1
assert ring.get() == b"y" * (24 << 20) and len(ring) == 0
ring.put(b"after")
assert ring.get() == b"after"
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr
