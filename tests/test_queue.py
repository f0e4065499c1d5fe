"""ringshm.Queue: a port of the checks of CPython's _TestQueue
(Lib/test/_test_multiprocessing.py), plus what ringshm adds: maxsize in items,
serialisation outside the lock, custom dumps/loads, passing to children of
every start method, put_many/get_many and shutdown.

Timing checks are timeout semantics only, with generous bounds.
"""

import collections
import json
import multiprocessing
import pickle
import queue as pyqueue
import threading
import time

import pytest
from conftest import closing
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import ringshm
from ringshm.errors import Empty, Full, MessageTooLarge, RingNotFound, ShutDown
from ringshm.queue import Queue
from ringshm.ring import Ring

TIMEOUT = 0.2       # a timeout that must expire
PROMPT = 1.5        # "at once": far more than a non-blocking call ever needs
SLACK = 2.0         # how late an expired timeout may return
JOIN = 60.0         # seconds to wait for a child before failing
START_METHODS = [m for m in ("fork", "spawn", "forkserver")
                 if m in multiprocessing.get_all_start_methods()]


@pytest.fixture
def make_queue():
    """Queue factory whose queues are all closed (their rings unlinked) after the test."""
    yield from closing(Queue)


def timed(fn, *args, **kwargs):
    """Call fn; return (seconds, exception or None)."""
    start = time.monotonic()
    try:
        fn(*args, **kwargs)
    except Exception as exc:
        return time.monotonic() - start, exc
    return time.monotonic() - start, None


def assert_raises_at_once(error, fn, *args, **kwargs):
    elapsed, exc = timed(fn, *args, **kwargs)
    assert isinstance(exc, error), exc
    assert elapsed < PROMPT


def assert_raises_after(error, seconds, fn, *args, **kwargs):
    elapsed, exc = timed(fn, *args, **kwargs)
    assert isinstance(exc, error), exc
    assert seconds - 0.02 <= elapsed < seconds + SLACK


def join(*processes):
    """Join children; fail (after killing it) for one that hangs or fails."""
    for p in processes:
        p.join(JOIN)
        if p.is_alive():
            p.kill()
            p.join()
            pytest.fail(f"child {p.pid} hung")
        assert p.exitcode == 0, f"child {p.pid} exit code {p.exitcode}"


def start_with_events(target, q):
    """Start ``target(q, child_can_start, parent_can_continue)`` in a child."""
    child_can_start = multiprocessing.Event()
    parent_can_continue = multiprocessing.Event()
    proc = multiprocessing.Process(target=target, args=(q, child_can_start, parent_can_continue))
    proc.start()
    return proc, child_can_start, parent_can_continue


# -- children (module level, so spawn and forkserver can import them) ----------

def child_get_six(q, child_can_start, parent_can_continue):
    child_can_start.wait()
    for _ in range(6):
        q.get(timeout=JOIN)
    parent_can_continue.set()


def child_put_two_to_five(q, child_can_start, parent_can_continue):
    child_can_start.wait()
    for i in range(2, 6):
        q.put(i)
    parent_can_continue.set()


def child_put_range(q, start, stop):
    for i in range(start, stop):
        q.put(i)


def child_put_later(q, delay, obj):
    time.sleep(delay)
    q.put(obj)


def child_square(jobs, results):
    while (item := jobs.get(timeout=JOIN)) is not None:
        results.put(item * item)
    # the child's copy is not the owner: closing it must leave the ring alone
    jobs.close()
    results.close()


def child_use_inner(outer, replies):
    inner = outer.get(timeout=JOIN)
    replies.put(["child got", inner.get(timeout=JOIN)])


def pool_put(q, i):
    q.put(i * 10)
    return i


def json_dumps(obj):
    return json.dumps(obj).encode()


def json_loads(data):
    return json.loads(bytes(data))


class NotSerializable:
    def __reduce__(self):
        raise AttributeError("not serializable")


# -- _TestQueue ports ------------------------------------------------------------

@pytest.mark.multiprocess
def test_put(make_queue):
    maxsize = 6
    q = make_queue(maxsize=maxsize)
    proc, child_can_start, parent_can_continue = start_with_events(child_get_six, q)
    try:
        assert q.empty() is True
        assert q.full() is False

        q.put(1)
        q.put(2, True)
        q.put(3, True, None)
        q.put(4, False)
        q.put(5, False, None)
        q.put_nowait(6)

        assert q.empty() is False
        assert q.full() is True
        assert q.qsize() == maxsize

        assert_raises_at_once(pyqueue.Full, q.put, 7, False)
        assert_raises_at_once(pyqueue.Full, q.put, 7, False, None)
        assert_raises_at_once(pyqueue.Full, q.put_nowait, 7)
        assert_raises_after(pyqueue.Full, TIMEOUT, q.put, 7, True, TIMEOUT)
        assert_raises_at_once(pyqueue.Full, q.put, 7, False, TIMEOUT)   # block=False ignores it
        assert_raises_after(pyqueue.Full, TIMEOUT, q.put, 7, True, timeout=TIMEOUT)

        child_can_start.set()
        assert parent_can_continue.wait(JOIN)

        assert q.empty() is True
        assert q.full() is False
    finally:
        child_can_start.set()
        join(proc)


@pytest.mark.multiprocess
def test_get(make_queue):
    q = make_queue()
    proc, child_can_start, parent_can_continue = start_with_events(child_put_two_to_five, q)
    try:
        assert q.empty() is True
        child_can_start.set()
        assert parent_can_continue.wait(JOIN)
        assert q.empty() is False   # no feeder thread: visible as soon as put returned

        assert q.get(True, None) == 2
        assert q.get(True) == 3
        assert q.get(timeout=1) == 4
        assert q.get_nowait() == 5
        assert q.empty() is True

        assert_raises_at_once(pyqueue.Empty, q.get, False)
        assert_raises_at_once(pyqueue.Empty, q.get, False, None)
        assert_raises_at_once(pyqueue.Empty, q.get_nowait)
        assert_raises_after(pyqueue.Empty, TIMEOUT, q.get, True, TIMEOUT)
        assert_raises_at_once(pyqueue.Empty, q.get, False, TIMEOUT)
        assert_raises_after(pyqueue.Empty, TIMEOUT, q.get, timeout=TIMEOUT)
    finally:
        child_can_start.set()
        join(proc)


@pytest.mark.multiprocess
def test_fork(make_queue):
    """A child puts after the parent; everything arrives, in each producer's order."""
    q = make_queue()
    for i in range(10):
        q.put(i)
    proc = multiprocessing.Process(target=child_put_range, args=(q, 10, 20))
    proc.start()
    try:
        assert [q.get(timeout=JOIN) for _ in range(20)] == list(range(20))
        assert_raises_at_once(pyqueue.Empty, q.get, False)
    finally:
        join(proc)


def test_qsize(make_queue):
    q = make_queue()
    assert q.qsize() == 0
    q.put(1)
    assert q.qsize() == 1
    q.put(5)
    assert q.qsize() == 2
    q.get()
    assert q.qsize() == 1
    q.get()
    assert q.qsize() == 0


def test_timeout(make_queue):
    q = make_queue()
    start = time.monotonic()
    with pytest.raises(pyqueue.Empty):
        q.get(True, 0.200)
    assert time.monotonic() - start >= 0.170


def test_unpicklable_object_leaves_queue_unchanged(make_queue):
    """Port of test_queue_feeder_donot_stop_onexc: here the error reaches the caller."""
    q = make_queue()
    q.put("before")
    with pytest.raises(AttributeError):
        q.put(NotSerializable())
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        q.put(lambda: None)
    with pytest.raises(AttributeError):
        q.put_many([1, NotSerializable(), 3])
    assert q.qsize() == 1
    q.put(True)
    assert q.get(timeout=1) == "before"
    assert q.get(timeout=1) is True
    assert q.empty()


def test_closed_queue_put_get_exceptions(make_queue):
    q = make_queue()
    q.put("left behind")
    q.close()
    for call in (lambda: q.put("foo"), q.get, lambda: q.put_nowait(1), q.get_nowait,
                 lambda: q.put_many([1]), q.get_many, q.qsize, q.empty, q.full, q.shutdown,
                 lambda: pickle.dumps(q)):
        with pytest.raises(ValueError, match="is closed"):
            call()


def test_close_is_idempotent_and_join_thread_is_a_no_op(make_queue):
    q = make_queue()
    q.join_thread()
    q.cancel_join_thread()
    q.put(1)
    q.cancel_join_thread()
    q.close()
    q.close()
    q.join_thread()
    q.cancel_join_thread()


# -- blocking: every combination of block and timeout -----------------------------

def test_put_blocks_until_a_get_makes_room(make_queue):
    q = make_queue(maxsize=1)
    q.put("first")
    taker = threading.Timer(TIMEOUT, q.get)
    taker.start()
    try:
        elapsed, exc = timed(q.put, "second")          # block=True, timeout=None
        assert exc is None
        assert elapsed >= TIMEOUT - 0.02
    finally:
        taker.join()
    assert q.get(timeout=1) == "second"


def test_put_with_timeout_succeeds_when_room_appears(make_queue):
    q = make_queue(maxsize=1)
    q.put("first")
    taker = threading.Timer(TIMEOUT, q.get)
    taker.start()
    try:
        elapsed, exc = timed(q.put, "second", True, 30)
        assert exc is None
        assert TIMEOUT - 0.02 <= elapsed < 30
    finally:
        taker.join()


@pytest.mark.multiprocess
def test_get_blocks_forever_until_a_child_puts(make_queue):
    q = make_queue()
    proc = multiprocessing.Process(target=child_put_later, args=(q, TIMEOUT, "late"))
    proc.start()
    try:
        start = time.monotonic()
        assert q.get() == "late"                     # block=True, timeout=None
        assert time.monotonic() - start >= TIMEOUT - 0.05
    finally:
        join(proc)


def test_negative_timeout_is_a_value_error_unless_not_blocking(make_queue):
    q = make_queue(maxsize=1)
    with pytest.raises(ValueError, match="timeout"):
        q.get(timeout=-1)
    with pytest.raises(Empty):
        q.get(False, -1)                              # block=False ignores the timeout
    q.put(1)
    with pytest.raises(ValueError, match="timeout"):
        q.put(2, timeout=-1)
    with pytest.raises(Full):
        q.put(2, False, -1)
    with pytest.raises(ValueError, match="timeout"):
        q.get_many(timeout=-0.5)


def test_errors_are_ringshm_and_queue_errors(make_queue):
    q = make_queue(maxsize=1)
    with pytest.raises(Empty) as empty:
        q.get_nowait()
    assert isinstance(empty.value, pyqueue.Empty)
    assert isinstance(empty.value, ringshm.RingError)
    q.put(1)
    with pytest.raises(Full) as full:
        q.put_nowait(2)
    assert isinstance(full.value, pyqueue.Full)


# -- maxsize and capacity ------------------------------------------------------------

def test_maxsize_counts_items_not_bytes(make_queue):
    q = make_queue(maxsize=3, capacity=1 << 20)
    assert q.maxsize == 3
    for i in range(3):
        q.put_nowait(i)
    assert q.full()
    assert q.qsize() == 3
    with pytest.raises(Full):
        q.put_nowait(3)
    assert q.get_nowait() == 0
    assert not q.full()
    q.put_nowait(3)
    assert [q.get_nowait() for _ in range(3)] == [1, 2, 3]


def test_maxsize_zero_is_bounded_by_capacity_only(make_queue):
    q = make_queue(capacity=4096)
    assert q.maxsize == 0
    put = 0
    with pytest.raises(Full):
        for put in range(10_000):  # noqa: B007 -- read after the loop
            q.put_nowait(b"x" * 100)
    assert 10 < put < 100          # ~30 records of ~130 bytes fit in 4 KiB
    assert q.full()
    assert q.qsize() == put


def test_object_larger_than_the_ring_goes_through(make_queue):
    # Queue.put takes any size (SPEC 0.2, tests/test_big_items.py); a batch
    # is published at once, so put_many keeps the ring's bound.
    q = make_queue(capacity=4096)
    q.put("small")
    q.put(b"x" * 10_000, timeout=1)
    with pytest.raises(MessageTooLarge):
        q.put_many([b"x" * 1000] * 10, timeout=1)
    assert q.qsize() == 2
    assert q.get() == "small"
    assert q.get() == b"x" * 10_000


def test_put_many_is_all_or_nothing(make_queue):
    q = make_queue(maxsize=4)
    with pytest.raises(MessageTooLarge):
        q.put_many(range(5), timeout=TIMEOUT)     # more items than maxsize: never fits
    q.put_many(["a", "b", "c"])
    with pytest.raises(Full):
        q.put_many(["d", "e"], block=False)
    with pytest.raises(Full):
        q.put_many(["d", "e"], timeout=TIMEOUT)
    assert q.qsize() == 3
    q.put_many(["d"])
    q.put_many([])
    assert q.get_many(max_messages=2) == ["a", "b"]
    assert q.get_many() == ["c", "d"]
    with pytest.raises(Empty):
        q.get_many(block=False)
    with pytest.raises(ValueError):
        q.get_many(max_messages=0)


# -- serialisation ---------------------------------------------------------------

def test_custom_dumps_and_loads(make_queue):
    q = make_queue(dumps=json_dumps, loads=json_loads)
    q.put({"a": [1, 2]})
    q.put_many(["x", None])
    with Ring.open(q.name) as raw:
        assert raw.get(timeout=1) == b'{"a": [1, 2]}'
        raw.put(b'[3, "raw"]')
    assert q.get_many() == ["x", None, [3, "raw"]]


def test_loads_error_reaches_the_caller(make_queue):
    q = make_queue(loads=json_loads)
    q.put(b"payload")            # pickled, not JSON
    q.put_many([1])
    with pytest.raises(ValueError):
        q.get(timeout=1)
    # the item was consumed; the next one is there
    assert q.qsize() == 1


# -- passing to children -------------------------------------------------------------

@pytest.mark.multiprocess
@pytest.mark.parametrize("method", START_METHODS)
def test_process_argument_with_every_start_method(make_queue, method):
    ctx = multiprocessing.get_context(method)
    jobs, results = make_queue(), make_queue()
    children = [ctx.Process(target=child_square, args=(jobs, results)) for _ in range(2)]
    for child in children:
        child.start()
    try:
        jobs.put_many(range(100))
        jobs.put_many([None, None])
        got = sorted(results.get(timeout=JOIN) for _ in range(100))
    finally:
        jobs.put_many([None, None], timeout=JOIN)
        join(*children)
    assert got == [i * i for i in range(100)]
    # the children closed their copies: the owner's ring is still there
    with Ring.open(jobs.name):
        pass


@pytest.mark.multiprocess
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pool_argument(make_queue, method):
    q = make_queue()
    with multiprocessing.get_context(method).Pool(2) as pool:
        assert pool.starmap(pool_put, [(q, i) for i in range(10)]) == list(range(10))
        pool.close()
        pool.join()
    assert sorted(q.get(timeout=JOIN) for _ in range(10)) == [i * 10 for i in range(10)]


@pytest.mark.multiprocess
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_queue_inside_another_queue(make_queue, method):
    outer, replies = make_queue(), make_queue()
    inner = make_queue(dumps=json_dumps, loads=json_loads)
    proc = multiprocessing.get_context(method).Process(target=child_use_inner,
                                                       args=(outer, replies))
    proc.start()
    try:
        outer.put(inner)
        inner.put({"to": "child"})
        assert replies.get(timeout=JOIN) == ["child got", {"to": "child"}]
    finally:
        join(proc)


def test_queue_inside_queue_in_one_process(make_queue):
    outer = make_queue()
    inner = make_queue(maxsize=5, dumps=json_dumps, loads=json_loads)
    outer.put(inner)
    copy = outer.get(timeout=1)
    assert copy is not inner
    assert copy.name == inner.name and copy.maxsize == 5
    copy.put({"k": 1})               # the copy keeps the custom dumps
    assert inner.get(timeout=1) == {"k": 1}
    copy.close()                     # not the owner: the ring stays
    inner.put(2)
    assert inner.get(timeout=1) == 2


def test_the_creating_queue_unlinks_its_ring(make_queue):
    q = make_queue()
    name = q.name
    copy = pickle.loads(pickle.dumps(q))
    copy.put("still works")
    copy.close()
    with Ring.open(name):
        pass
    q.close()
    with pytest.raises(RingNotFound):
        Ring.open(name)


# -- shutdown ---------------------------------------------------------------------------

def test_shutdown_drains_then_raises(make_queue):
    q = make_queue()
    q.put_many([1, 2])
    q.shutdown()
    with pytest.raises(ShutDown):
        q.put(3)
    assert q.get(timeout=1) == 1
    assert q.get_many() == [2]
    with pytest.raises(ShutDown):
        q.get(timeout=1)


def test_shutdown_immediate_discards_items(make_queue):
    q = make_queue()
    q.put_many(range(10))
    q.shutdown(immediate=True)
    with pytest.raises(ShutDown):
        q.get_nowait()


def test_shutdown_wakes_a_blocked_getter(make_queue):
    q = make_queue()
    outcome = []

    def getter():
        try:
            q.get()
        except ShutDown as exc:
            outcome.append(exc)

    thread = threading.Thread(target=getter)
    thread.start()
    time.sleep(TIMEOUT)
    q.shutdown()
    thread.join(JOIN)
    assert not thread.is_alive()
    assert len(outcome) == 1


# -- threads and the public name ----------------------------------------------------------

def test_threads_every_item_once_in_producer_order(make_queue):
    q = make_queue(maxsize=50)
    producers, per_producer = 4, 500
    got = collections.defaultdict(list)
    lock = threading.Lock()

    def produce(p):
        for i in range(per_producer):
            q.put((p, i), timeout=JOIN)

    def consume():
        while (item := q.get(timeout=JOIN)) is not None:
            with lock:
                got[item[0]].append(item[1])

    consumers = [threading.Thread(target=consume) for _ in range(2)]
    threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    for t in consumers + threads:
        t.start()
    for t in threads:
        t.join(JOIN)
    q.put_many([None, None], timeout=JOIN)
    for t in consumers:
        t.join(JOIN)
    # two consumers interleave, so order holds per producer once each consumer's
    # share is merged back: every item exactly once
    for p in range(producers):
        assert sorted(got[p]) == list(range(per_producer))


def test_single_consumer_sees_each_producer_in_order(make_queue):
    q = make_queue(maxsize=20)
    threads = [threading.Thread(target=lambda p=p: [q.put((p, i)) for i in range(300)])
               for p in range(3)]
    for t in threads:
        t.start()
    items = [q.get(timeout=JOIN) for _ in range(900)]
    for t in threads:
        t.join(JOIN)
    for p in range(3):
        assert [i for (who, i) in items if who == p] == list(range(300))


def test_public_name_and_repr(make_queue):
    assert ringshm.Queue is Queue
    q = make_queue(maxsize=2)
    assert q.name in repr(q)
    q.close()
    assert "closed" in repr(q)


# -- model check: a Queue behaves like a deque ---------------------------------------------

class QueueMatchesDeque(RuleBasedStateMachine):
    """Random puts and gets, single process, against collections.deque."""

    def __init__(self):
        super().__init__()
        self.queue = Queue(maxsize=8, capacity=4096)
        self.model = collections.deque()

    items = st.one_of(st.integers(), st.text(max_size=20), st.binary(max_size=200), st.none())

    @rule(item=items)
    def put(self, item):
        if len(self.model) < 8:
            self.queue.put_nowait(item)
            self.model.append(item)
        else:
            with pytest.raises(Full):
                self.queue.put_nowait(item)

    @rule(batch=st.lists(items, max_size=4))
    def put_many(self, batch):
        if len(self.model) + len(batch) <= 8:
            self.queue.put_many(batch, block=False)
            self.model.extend(batch)
        else:
            with pytest.raises(Full):
                self.queue.put_many(batch, block=False)

    @rule()
    def get(self):
        if self.model:
            assert self.queue.get_nowait() == self.model.popleft()
        else:
            with pytest.raises(Empty):
                self.queue.get_nowait()

    @rule(limit=st.integers(1, 5))
    def get_many(self, limit):
        if self.model:
            expected = [self.model.popleft() for _ in range(min(limit, len(self.model)))]
            assert self.queue.get_many(limit, block=False) == expected
        else:
            with pytest.raises(Empty):
                self.queue.get_many(limit, block=False)

    @invariant()
    def sizes_agree(self):
        assert self.queue.qsize() == len(self.model)
        assert self.queue.empty() == (not self.model)

    def teardown(self):
        self.queue.close()


TestQueueMatchesDeque = QueueMatchesDeque.TestCase
TestQueueMatchesDeque.settings = settings(max_examples=50, stateful_step_count=30,
                                          deadline=None)
