"""Defects of the Cython core that preceded libringshm (commit 59ab811),
each as a test that failed there and passes now.

Each test forces its interleaving instead of hoping for it: a thread is
known to be asleep when the test sees it blocked in futex(2) on a word
inside the ring's segment (/proc/self/task/TID/syscall names the call and
its first argument, /proc/self/maps the segment); a close() "during" a
block runs from another thread while the block's thread waits on an event
inside it.  Waits for the other side are bounded generously; no sleep
orders anything.

    (a) test_put_asleep_for_room_wakes_though_another_put_failed
    (b) test_close_inside_view_leaves_the_message,
        test_close_inside_reserve_publishes_nothing,
        test_queue_get_racing_close_never_duplicates,
        test_big_queue_get_racing_close_leaves_a_readable_item,
        test_big_queue_put_racing_close_raises_or_puts
    (c) test_stats_racing_close_in_a_finalizer
    (d) test_close_wakes_join_at_once
    (e) test_impossible_positions_are_corrupted_not_written
"""

import mmap
import multiprocessing
import os
import pickle
import platform
import struct
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from conftest import child_env, join_or_kill, ringshm_home, shm_path

import ringshm.queue
from ringshm import Empty, Full, JoinableQueue, Queue, Ring, RingCorrupted

# Generous bounds: reached only when something is broken.
BOUND = 20.0
# docs/FORMAT.md: header offsets.
HEADER_SIZE = 4096
HEAD_AT = 128        # producer position
TAIL_AT = 256        # consumer position
SPACE_WANTED_AT = 768   # space_waitq.wanted: a producer may sleep for room
_U64 = struct.Struct("<Q")
# futex(2) by machine; the first argument /proc/.../syscall shows is its word.
FUTEX_SYSCALL = {"x86_64": "202", "aarch64": "98"}.get(platform.machine())
SIDE_FILE_PREFIX = "ringshm-item."


# ------------------------------------------------------------ helpers

def wait_for(condition, what, bound=BOUND):
    deadline = time.monotonic() + bound
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {bound} s waiting for {what}")
        time.sleep(0.001)


def _segment_ranges(path):
    """Address ranges at which this process maps the file `path`."""
    ranges = []
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].rstrip("\n").removesuffix(" (deleted)") == path:
                low, high = (int(x, 16) for x in fields[0].split("-"))
                ranges.append((low, high))
    return ranges


def asleep_in_segment(tid, path):
    """True while thread `tid` of this process sleeps in futex(2) on a word
    of the segment `path` (not on the GIL, nor anything else)."""
    try:
        with open(f"/proc/self/task/{tid}/syscall") as f:
            fields = f.read().split()
    except OSError:
        return False
    if len(fields) < 2 or fields[0] != FUTEX_SYSCALL:
        return False
    word = int(fields[1], 16)
    return any(low <= word < high for low, high in _segment_ranges(path))


needs_futex_probe = pytest.mark.skipif(
    FUTEX_SYSCALL is None or not os.path.exists(f"/proc/self/task/{threading.get_native_id()}"),
    reason="needs /proc/self/task and a known futex syscall number")


class Started(threading.Thread):
    """A thread that records its kernel thread id before running `target`;
    what target returns or raises is kept in `.result` / `.error`."""

    def __init__(self, target):
        super().__init__(daemon=True)
        self._target_fn = target
        self.tid = None
        self.started_event = threading.Event()
        self.result = None
        self.error = None
        self.finished_at = None

    def run(self):
        self.tid = threading.get_native_id()
        self.started_event.set()
        try:
            self.result = self._target_fn()
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.finished_at = time.monotonic()

    def begin(self):
        self.start()
        assert self.started_event.wait(BOUND)
        return self


class CloseInside:
    """Wraps a reserve()/view() block: once it is open (its lock held),
    `on_open()` runs, then the body."""

    def __init__(self, block, on_open):
        self.block = block
        self.on_open = on_open

    def __enter__(self):
        view = self.block.__enter__()
        try:
            self.on_open()
        except BaseException:
            self.block.__exit__(*sys.exc_info())
            raise
        return view

    def __exit__(self, *exc_info):
        return self.block.__exit__(*exc_info)


def close_from_another_thread(closeable):
    """on_open for CloseInside: close `closeable` from a second thread, and
    return once that close() has returned (the block is still open)."""
    def on_open():
        closer = threading.Thread(target=closeable.close)
        closer.start()
        closer.join(BOUND)
        assert not closer.is_alive(), "close() did not return while a block was open"
    return on_open


def hook_blocks(ring, on_open, kind):
    """Make `kind` ("view" or "reserve") blocks of this Ring object run
    on_open() once open (an attribute of the instance: others unchanged)."""
    original = getattr(Ring, kind)
    if kind == "view":
        ring.view = lambda timeout=None: CloseInside(original(ring, timeout), on_open)
    else:
        ring.reserve = lambda size, timeout=None: CloseInside(
            original(ring, size, timeout), on_open)


def side_files(identity):
    """The side files of the ring of `identity` (Ring.identity names them)."""
    return sorted(n for n in os.listdir("/dev/shm")
                  if n.startswith(f"{SIDE_FILE_PREFIX}{identity}."))


def remove_side_files(identity):
    for name in side_files(identity):
        try:
            os.unlink(os.path.join("/dev/shm", name))
        except FileNotFoundError:
            pass


def attached_copy(queue):
    """The queue as another process would get it (attached, not the owner)."""
    return pickle.loads(pickle.dumps(queue))


# ------------------------------------------------------------ (a)

@needs_futex_probe
def test_put_asleep_for_room_wakes_though_another_put_failed(make_ring):
    """Producer A (900 B) finds no room and sleeps; a consumer frees 1,008
    B, enough for A; before A looks again, producer B's put of 2,000 B, for
    which there is still no room, fails (and keeps failing while A waits).
    A must take the room at once.  The old core kept "what the consumers
    had done when I found no room" in the Ring object, shared by its
    threads: B's failure overwrote A's, A concluded that no consumer had
    moved since it looked, and slept until its timeout (Full).

    To be sure that B fails before A looks again, the test clears the
    wait queue's `wanted` flag (FORMAT.md: space_waitq at 768) while A
    sleeps, so the consumer does not wake A: A looks again at the end of
    its sleep (a slice of the recovery interval, 0.25 s), as a thread the
    scheduler is slow to run would.  Without that, A usually woke first
    and the old core passed 4 runs in 10."""
    ring = make_ring(capacity=4096, spin=0, recovery_interval=0.25)
    consumer = make_ring.track(Ring.open(ring.name))
    # Four records of 8 + 1000 bytes: 4,032 of 4,096 used, 64 left at the
    # end.  A needs 912 (after 64 of padding); B 2,008.
    for i in range(4):
        ring.put_nowait(bytes([i]) * 1000)
    a_payload, b_payload = b"a" * 900, b"b" * 2000
    with pytest.raises(Full):
        ring.put_nowait(a_payload)
    a_timeout = 5.0

    def producer_a():
        started = time.monotonic()
        ring.put(a_payload, timeout=a_timeout)
        return time.monotonic() - started

    fd = os.open(shm_path(ring.name), os.O_RDWR)
    try:
        header = mmap.mmap(fd, HEADER_SIZE)
    finally:
        os.close(fd)
    try:
        a = Started(producer_a).begin()
        path = shm_path(ring.name)
        wait_for(lambda: (asleep_in_segment(a.tid, path)
                          and _U64.unpack_from(header, SPACE_WANTED_AT)[0] == 1)
                 or not a.is_alive(), "producer A to sleep waiting for room")
        assert a.is_alive(), f"A did not wait: {a.error!r}"
        _U64.pack_into(header, SPACE_WANTED_AT, 0)   # the consumer will not wake A
        # The consumer frees 1,008 B; B fails right after, then keeps trying.
        freed = consumer.get_nowait()
        b_failures = 0
        give_up = time.monotonic() + a_timeout + BOUND
        while a.is_alive() and time.monotonic() < give_up:
            try:
                ring.put(b_payload, timeout=0)
                break
            except Full:
                b_failures += 1
            time.sleep(0.0005)
        a.join(BOUND)
    finally:
        header.close()
    assert freed == bytes([0]) * 1000
    assert not a.is_alive()
    assert b_failures >= 1
    assert a.error is None, f"A's put failed with room available: {a.error!r}"
    assert a.result < a_timeout / 2, f"A took {a.result:.2f} s to see the room"
    # The ring holds what it should: three of the first four, then A's.
    assert [consumer.get_nowait()[:1] for _ in range(4)] == [b"\x01", b"\x02", b"\x03", b"a"]


# ------------------------------------------------------------ (b)

@pytest.mark.parametrize("closer", ["same thread", "another thread"])
def test_close_inside_view_leaves_the_message(make_ring, closer):
    """close() of the Ring whose view() block is open: the block's end
    raises ValueError and the message stays, for another consumer to get
    exactly once (the old core left it without a word: a caller could not
    tell that it had not been consumed)."""
    ring = make_ring()
    ring.put(b"first")
    ring.put(b"second")
    reader = make_ring.track(Ring.open(ring.name))
    seen = []
    with pytest.raises(ValueError):
        with reader.view(timeout=BOUND) as view:
            seen.append(bytes(view))
            if closer == "same thread":
                reader.close()
            else:
                close_from_another_thread(reader)()
    assert seen == [b"first"]
    assert reader.closed
    assert ring.get(timeout=BOUND) == b"first"
    assert ring.get(timeout=BOUND) == b"second"
    with pytest.raises(Empty):
        ring.get_nowait()
    # The get lock was let go: the ring works on.
    ring.put(b"third", timeout=BOUND)
    with ring.view(timeout=BOUND) as view:
        assert bytes(view) == b"third"
    assert len(ring) == 0


@pytest.mark.parametrize("closer", ["same thread", "another thread"])
def test_close_inside_reserve_publishes_nothing(make_ring, closer):
    """close() inside a reserve() block: its end raises ValueError and
    nothing is published; the put lock is free again."""
    ring = make_ring()
    writer = make_ring.track(Ring.open(ring.name))
    with pytest.raises(ValueError):
        with writer.reserve(5, timeout=BOUND) as space:
            space[:] = b"never"
            if closer == "same thread":
                writer.close()
            else:
                close_from_another_thread(writer)()
    assert len(ring) == 0
    with pytest.raises(Empty):
        ring.get_nowait()
    assert ring.stats()["messages_put"] == 0
    ring.put(b"after", timeout=BOUND)
    assert ring.get(timeout=BOUND) == b"after"


def test_queue_get_racing_close_never_duplicates():
    """Queue.get() in one thread, close() of that Queue in another while
    the get is inside its view() block (an item read in place: a
    bytearray's framed record).  The get may raise or return the item, but
    an item it returns is gone from the queue: the old core returned it
    and left it queued, so the next consumer got it again."""
    queue = Queue(capacity=1 << 16)
    try:
        item = bytearray(b"payload" * 100)
        queue.put(item)
        getter = attached_copy(queue)
        hook_blocks(getter._ring, close_from_another_thread(getter), "view")
        try:
            returned = [getter.get(timeout=BOUND)]
        except ValueError:
            returned = []
        assert getter._closed
        left = []
        while True:
            try:
                left.append(queue.get_nowait())
            except Empty:
                break
        assert returned + left == [item], (
            f"returned by the racing get: {len(returned)}, still in the queue: {len(left)}")
    finally:
        queue.close()


def _get_in_child(queue, conn):
    try:
        conn.send(("item", queue.get(timeout=BOUND)))
    except Empty:
        conn.send(("empty", None))
    except BaseException as exc:
        conn.send(("error", repr(exc)))
    finally:
        conn.close()


def test_big_queue_get_racing_close_leaves_a_readable_item():
    """A Queue item larger than max_message_size lives in a side file; its
    get is closed (from another thread) while inside the view() block
    that reads the file.  Another process must then still get the item
    (or nothing, if the racing get returned it) and never RingCorrupted:
    the old core left the message but the get removed its side file, so
    every later get raised RingCorrupted (the queue was wedged)."""
    queue = Queue(capacity=4096)
    name = queue._ring.identity
    try:
        item = os.urandom(3 * queue._ring.max_message_size)
        queue.put(item)
        assert len(side_files(name)) == 1
        getter = attached_copy(queue)
        hook_blocks(getter._ring, close_from_another_thread(getter), "view")
        try:
            returned = [getter.get(timeout=BOUND)]
        except ValueError:
            returned = []
        ctx = multiprocessing.get_context("fork")
        receiver, sender = ctx.Pipe(duplex=False)
        child = ctx.Process(target=_get_in_child, args=(queue, sender))
        child.start()
        sender.close()
        got = receiver.recv() if receiver.poll(BOUND) else ("nothing", None)
        assert join_or_kill(child)
        if returned:
            assert returned == [item]
            assert got == ("empty", None)
        else:
            assert got[0] == "item", got
            assert got[1] == item
        assert side_files(name) == []
    finally:
        queue.close()
        remove_side_files(name)


def test_big_queue_put_racing_close_raises_or_puts():
    """A big Queue.put (through a side file and a reserve() block) whose
    Queue is closed from another thread inside that block either raises
    (nothing queued, no side file left) or the item really is in the
    queue.  The old core returned normally having published nothing: the
    item was lost, its side file left behind."""
    queue = Queue(capacity=4096)
    name = queue._ring.identity
    try:
        item = os.urandom(3 * queue._ring.max_message_size)
        putter = attached_copy(queue)
        hook_blocks(putter._ring, close_from_another_thread(putter), "reserve")
        try:
            putter.put(item, timeout=BOUND)
            raised = None
        except ValueError as exc:
            raised = exc
        assert putter._closed
        if raised is None:
            assert queue.get_nowait() == item
        else:
            with pytest.raises(Empty):
                queue.get_nowait()
        assert side_files(name) == []
        assert len(queue._ring) == 0
    finally:
        queue.close()
        remove_side_files(name)


# ------------------------------------------------------------ (c)

STATS_VS_FINALIZER = textwrap.dedent("""
    import gc
    import weakref

    from ringshm import Ring

    class Cycle:
        pass

    inside = 0
    for attempt in range(200):
        ring = Ring.anonymous(capacity=4096)
        ring.put(b"x")
        # Garbage in a cycle whose finalizer closes the ring: only the
        # collector frees it, at an allocation of its choosing.
        cycle = Cycle()
        cycle.me = cycle
        weakref.finalize(cycle, ring.close)
        del cycle
        # A dict taken from the free list is not counted by the collector:
        # empty the list, so that stats() allocates its dict afresh, and
        # let the collector run at one of the next few allocations.
        dicts = [{} for _ in range(200)]
        gc.set_threshold(1 + attempt % 8)
        try:
            ring.stats()
            inside += ring.closed   # the finalizer ran inside stats()
        except ValueError:
            pass                    # closed before stats() began: fine
        gc.set_threshold(700, 10, 10)
        del dicts
        gc.collect()
        ring.close()
    print("closed inside stats()", inside)
""")


def test_stats_racing_close_in_a_finalizer():
    """A finalizer (of garbage in a cycle) that closes the ring while
    stats() allocates its dict: the old core read the header after the
    collector ran close() and the mapping was gone (SIGSEGV).  In a
    subprocess: it must exit 0."""
    done = subprocess.run([sys.executable, "-c", STATS_VS_FINALIZER], cwd=ringshm_home(),
                          env=child_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (
        f"exit status {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr[-2000:]}")
    # The finalizer did run inside stats() (else this tests nothing).
    assert done.stdout.startswith("closed inside stats()")
    assert int(done.stdout.split()[-1]) > 0, done.stdout


# ------------------------------------------------------------ (d)

class SlowRecoveryRing(Ring):
    """Ring.create with recovery_interval=5 s: the old core's waits woke
    once a recovery interval to look for a close()."""

    @classmethod
    def create(cls, *args, **kwargs):
        kwargs.setdefault("recovery_interval", 5.0)
        return super().create(*args, **kwargs)


@needs_futex_probe
def test_close_wakes_join_at_once(monkeypatch):
    """close() of a JoinableQueue wakes a thread asleep in its join() at
    once (ValueError), whatever the recovery interval: the old core's
    close() did not wake join()'s wait queue, so with recovery_interval=5
    the joiner slept on for ~4.5 s."""
    monkeypatch.setattr(ringshm.queue, "Ring", SlowRecoveryRing)
    queue = JoinableQueue(capacity=4096)
    try:
        assert queue._ring.stats()["recovery_interval"] == 5.0
        queue.put("unfinished")
        path = shm_path(queue.name)
        joiner = Started(lambda: queue.join(timeout=BOUND)).begin()
        wait_for(lambda: asleep_in_segment(joiner.tid, path) or not joiner.is_alive(),
                 "the joiner to sleep")
        assert joiner.is_alive(), f"join() returned: {joiner.result!r} {joiner.error!r}"
        closed_at = time.monotonic()
        queue.close()
        joiner.join(BOUND)
        assert not joiner.is_alive()
        assert joiner.finished_at - closed_at < 2.0, \
            f"join() went on for {joiner.finished_at - closed_at:.2f} s after close()"
        assert isinstance(joiner.error, ValueError), (joiner.result, joiner.error)
    finally:
        queue.close()


# ------------------------------------------------------------ (e)

@pytest.mark.parametrize("handle", ["opened after", "the writer's"])
def test_impossible_positions_are_corrupted_not_written(make_ring, handle):
    """The producer position written by hand to 8 bytes behind the
    consumer's (head = tail - 8: more than a whole ring "in use"): put()
    and get() raise RingCorrupted, and nothing is written: len() and the
    data area stay as they were.  The old core's put wrote over the unread
    records (a record of "an unknown kind" for the next get).

    Through a Ring opened after the damage, and through the one that put
    the messages.  That one's cached tail predates the damage (by it the
    head has room), but the head went back below one it published: its
    puts raise too.  Its get may still deliver the records it knows were
    published before the damage, in order, and nothing else (the cached
    head, docs/DESIGN.md "Caches"); a check of the real head on every get
    is what the cache exists to avoid."""
    writer = make_ring(capacity=4096)
    for i in range(3):
        writer.put(bytes([65 + i]) * 100)
    assert writer.get_nowait() == b"A" * 100
    fd = os.open(shm_path(writer.name), os.O_RDWR)
    try:
        segment = mmap.mmap(fd, HEADER_SIZE + writer.capacity)
    finally:
        os.close(fd)
    try:
        tail = _U64.unpack_from(segment, TAIL_AT)[0]
        assert tail == 112 and _U64.unpack_from(segment, HEAD_AT)[0] == 336
        _U64.pack_into(segment, HEAD_AT, tail - 8)
        ring = writer if handle == "the writer's" else make_ring.track(Ring.open(writer.name))
        length = len(ring)
        data = bytes(segment[HEADER_SIZE:])
        with pytest.raises(RingCorrupted):
            ring.put(b"Z" * 100, timeout=1)
        with pytest.raises(RingCorrupted):
            ring.put_nowait(b"Z" * 100)
        with pytest.raises(RingCorrupted):
            with ring.reserve(100, timeout=1):
                pass
        with pytest.raises(RingCorrupted):
            ring.put_many([b"Z", b"Z"], timeout=1)
        assert bytes(segment[HEADER_SIZE:]) == data
        assert _U64.unpack_from(segment, HEAD_AT)[0] == tail - 8
        if handle == "opened after":
            with pytest.raises(RingCorrupted):
                ring.get(timeout=1)
            with pytest.raises(RingCorrupted):
                ring.get_nowait()
            assert len(ring) == length
            assert _U64.unpack_from(segment, TAIL_AT)[0] == tail
        else:
            got = []
            for _ in range(3):
                try:
                    got.append(ring.get(timeout=1))
                except RingCorrupted:
                    break
            assert got == [b"B" * 100, b"C" * 100][:len(got)]
            with pytest.raises(RingCorrupted):
                ring.get_nowait()
        assert bytes(segment[HEADER_SIZE:]) == data
    finally:
        segment.close()
