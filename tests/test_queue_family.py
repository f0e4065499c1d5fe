"""JoinableQueue (the task count in the segment, exact across deaths),
SimpleQueue, is_shutdown, ctx=, subclasses through pickling, and a spawned
child whose parent closed the queue right after start()."""

import gc
import multiprocessing
import os
import random
import threading
import time

import faultkit
import pytest
from conftest import closing, join_or_kill
from faultkit import RawHeader
from test_faults import dead_token

from ringshm import Empty, Queue, Ring, RingNotFound, ShutDown
from ringshm.queue import JoinableQueue, SimpleQueue

JOIN = 60.0
BOUND = 10.0        # a wait that must end long before this
EXPIRES = 0.2       # a timeout that must expire
START_METHODS = [m for m in ("fork", "spawn", "forkserver")
                 if m in multiprocessing.get_all_start_methods()]


@pytest.fixture
def make_queue():
    """make_queue(cls=Queue, ...): queues closed (rings unlinked) afterwards."""
    yield from closing(lambda cls=Queue, *args, **kwargs: cls(*args, **kwargs))


class TaggedQueue(Queue):
    """A subclass with state of its own, which must survive pickling."""

    def __init__(self, tag, **options):
        super().__init__(**options)
        self.tag = tag

    def describe(self):
        return f"{type(self).__name__}:{self.tag}"


class TaggedJoinableQueue(JoinableQueue):
    pass


# -- children (module level: spawn and forkserver import them) -----------------

def report_class(q, replies):
    replies.put(q.describe() if isinstance(q, TaggedQueue) else type(q).__name__)


def pool_describe(q):
    return q.describe()


def echo_first_item(q, replies):
    replies.put(("child got", q.get(timeout=JOIN)))


def echo_first_simple_item(q, replies):
    replies.put(("child got", q.get(), type(q).__name__))


def consume_and_mark_done(q, count):
    for _ in range(count):
        q.get(timeout=JOIN)
        time.sleep(0.001)
        q.task_done()


def mark_done_until_refused(q, counts):
    done = 0
    try:
        while True:
            q.task_done()
            done += 1
    except ValueError:
        counts.put(done)


def put_forever(link, q):
    link.ready()
    i = 0
    while True:
        q.put(i)
        i += 1


def get_one_then_wait(link, q):
    q.get(timeout=JOIN)
    link.ready()
    link.wait_go()   # killed here: between get() and task_done()


# -- JoinableQueue ---------------------------------------------------------------

def test_task_done_and_join_across_processes(make_queue):
    q = make_queue(JoinableQueue)
    q.put_many(range(50))
    assert q.unfinished_tasks == 50
    child = multiprocessing.Process(target=consume_and_mark_done, args=(q, 50))
    child.start()
    assert q.join(timeout=JOIN) is True
    assert q.unfinished_tasks == 0
    assert join_or_kill(child, JOIN) and child.exitcode == 0


def test_join_times_out_while_tasks_are_unfinished(make_queue):
    q = make_queue(JoinableQueue)
    assert q.join(timeout=0) is True   # nothing was ever put
    q.put("x")
    started = time.monotonic()
    assert q.join(timeout=EXPIRES) is False
    assert time.monotonic() - started >= EXPIRES - 0.02
    q.get()
    assert q.join(timeout=0) is False   # got, but not marked done
    q.task_done()
    assert q.join(timeout=0) is True


def test_task_done_more_often_than_items_raises(make_queue):
    q = make_queue(JoinableQueue)
    with pytest.raises(ValueError):
        q.task_done()
    q.put(1)
    q.task_done()   # done before it was got: allowed, as in multiprocessing
    with pytest.raises(ValueError):
        q.task_done()
    assert q.unfinished_tasks == 0


def test_task_done_is_atomic_across_processes(make_queue):
    # Four processes race to mark 20,000 tasks done: exactly 20,000 calls
    # succeed (a read-then-add would let some through twice).
    q = make_queue(JoinableQueue)
    q.put_many(range(20_000))
    counts = multiprocessing.Queue()
    children = [multiprocessing.Process(target=mark_done_until_refused, args=(q, counts))
                for _ in range(4)]
    for child in children:
        child.start()
    total = sum(counts.get(timeout=JOIN) for _ in children)
    for child in children:
        assert join_or_kill(child, JOIN)
    assert total == 20_000
    assert q.unfinished_tasks == 0


def test_shutdown_immediate_counts_discarded_items_as_done(make_queue):
    q = make_queue(JoinableQueue)
    q.put_many([1, 2, 3])
    q.get()
    q.shutdown(immediate=True)
    assert q.unfinished_tasks == 1    # the one got and not yet marked done
    q.task_done()
    assert q.join(timeout=BOUND) is True


def test_shutdown_alone_does_not_end_join(make_queue):
    q = make_queue(JoinableQueue)
    q.put(1)
    q.shutdown()
    assert q.join(timeout=EXPIRES) is False


PUT_STEPS = ["locked", "written", "intent", "published", "counted"]


@pytest.mark.parametrize("step", PUT_STEPS)
def test_unfinished_count_is_exact_whatever_step_a_producer_died_at(make_queue, step):
    """A producer dies after each step of a put (FORMAT.md, "Protocol"),
    and nobody takes its lock over: the count already reads the intent."""
    q = make_queue(JoinableQueue, capacity=4096)
    q.put("m0")
    done = PUT_STEPS[:PUT_STEPS.index(step) + 1]
    with RawHeader(q.name) as raw:
        head = raw.u64(faultkit.HEAD)
        messages, nbytes = raw.u64(faultkit.MESSAGES_PUT), raw.u64(faultkit.BYTES_PUT)
        raw.set_u64(faultkit.PUT_LOCK, dead_token(q.name))
        data = q._dumps("dying")
        new_head = raw.write_record(head, data) if "written" in done else head
        if "intent" in done:
            for i, value in enumerate((new_head, messages + 1, nbytes + len(data))):
                raw.set_u64(faultkit.PUT_INTENT + 8 * i, value)
        if "published" in done:
            raw.set_u64(faultkit.HEAD, new_head)
        if "counted" in done:
            raw.set_u64(faultkit.MESSAGES_PUT, messages + 1)
    expected = ["m0", "dying"] if "published" in done else ["m0"]
    assert q.unfinished_tasks == len(expected)
    assert [q.get(timeout=BOUND) for _ in expected] == expected
    for _ in expected:
        q.task_done()
    with pytest.raises(ValueError):
        q.task_done()
    assert q.join(timeout=BOUND) is True


@pytest.mark.fault
def test_producer_sigkilled_mid_put_leaves_the_count_exact(make_queue):
    q = make_queue(JoinableQueue, capacity=1 << 16)
    rng = random.Random(10)
    for _ in range(10):
        with faultkit.Child(put_forever, q) as producer:
            producer.wait_ready()
            time.sleep(rng.uniform(0.001, 0.02))
            producer.kill()
        got = 0
        while True:
            try:
                q.get_nowait()
            except Empty:
                break
            got += 1
            q.task_done()
        assert q.unfinished_tasks == 0, f"after {got} items"
        with pytest.raises(ValueError):
            q.task_done()
        assert q.join(timeout=BOUND) is True


@pytest.mark.fault
def test_consumer_killed_before_task_done_leaves_join_waiting(make_queue):
    q = make_queue(JoinableQueue)
    q.put("task")
    with faultkit.Child(get_one_then_wait, q) as consumer:
        consumer.wait_ready()
        consumer.kill()
    assert q.empty()
    assert q.unfinished_tasks == 1
    assert q.join(timeout=EXPIRES) is False   # for ever, without the timeout


def test_join_waits_while_others_mark_tasks_done(make_queue):
    q = make_queue(JoinableQueue)
    q.put_many(range(100))

    def work():
        while True:
            try:
                q.get(timeout=EXPIRES)
            except Empty:
                return
            q.task_done()

    workers = [threading.Thread(target=work) for _ in range(3)]
    for worker in workers:
        worker.start()
    assert q.join(timeout=BOUND) is True
    for worker in workers:
        worker.join()


# -- SimpleQueue -----------------------------------------------------------------

def test_simple_queue(make_queue):
    q = make_queue(SimpleQueue)
    assert q.empty()
    q.put({"a": 1})
    assert not q.empty()
    assert q.get() == {"a": 1}
    for name in ("put_nowait", "get_nowait", "qsize", "full", "task_done"):
        assert not hasattr(q, name)
    q.close()
    with pytest.raises(ValueError):
        q.put(1)


@pytest.mark.parametrize("method", START_METHODS)
def test_simple_queue_passes_to_a_child(make_queue, method):
    ctx = multiprocessing.get_context(method)
    q = make_queue(SimpleQueue, ctx=ctx)
    replies = make_queue()
    q.put("hello")
    child = ctx.Process(target=echo_first_simple_item, args=(q, replies))
    child.start()
    assert replies.get(timeout=JOIN) == ("child got", "hello", "SimpleQueue")
    assert join_or_kill(child, JOIN) and child.exitcode == 0


# -- Queue: is_shutdown, ctx -------------------------------------------------------

def test_is_shutdown(make_queue):
    q = make_queue()
    other = Queue._open_ring(q)   # the same ring, as another process sees it
    assert q.is_shutdown is False
    q.shutdown()
    assert q.is_shutdown is True and other.is_shutdown
    with pytest.raises(ShutDown):
        q.put(1)
    q.close()
    with pytest.raises(ValueError):
        _ = q.is_shutdown


def test_ctx_is_accepted_and_ignored(make_queue):
    for method in START_METHODS:
        q = make_queue(Queue, 3, ctx=multiprocessing.get_context(method))
        assert q.maxsize == 3
        make_queue(JoinableQueue, ctx=multiprocessing.get_context(method))


# -- subclasses through pickling -----------------------------------------------------

@pytest.mark.parametrize("method", START_METHODS)
def test_subclass_stays_itself_in_a_child(make_queue, method):
    ctx = multiprocessing.get_context(method)
    q = make_queue(TaggedQueue, "blue")
    jq = make_queue(TaggedJoinableQueue)
    replies = make_queue()
    for queue in (q, jq):
        child = ctx.Process(target=report_class, args=(queue, replies))
        child.start()
        assert join_or_kill(child, JOIN) and child.exitcode == 0
    assert [replies.get(timeout=BOUND) for _ in range(2)] == [
        "TaggedQueue:blue", "TaggedJoinableQueue"]


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_subclass_stays_itself_in_a_pool_worker(make_queue, method):
    q = make_queue(TaggedQueue, "green")
    with multiprocessing.get_context(method).Pool(1) as pool:
        assert pool.apply(pool_describe, (q,)) == "TaggedQueue:green"


def test_subclass_stays_itself_inside_another_queue(make_queue):
    outer = make_queue()
    inner = make_queue(TaggedQueue, "red")
    outer.put(inner)
    received = outer.get(timeout=BOUND)
    try:
        assert type(received) is TaggedQueue and received.describe() == "TaggedQueue:red"
        received.put("through the copy")
        assert inner.get(timeout=BOUND) == "through the copy"
    finally:
        received.close()


# -- spawn, then close at once ------------------------------------------------------

@pytest.mark.parametrize("method", [m for m in START_METHODS if m != "fork"])
@pytest.mark.parametrize("how", ["close", "collect"])
def test_child_attaches_after_the_parent_dropped_the_queue(method, how):
    ctx = multiprocessing.get_context(method)
    q = Queue()
    replies = Queue()
    name = q.name
    q.put("first")
    child = ctx.Process(target=echo_first_item, args=(q, replies))
    child.start()
    if how == "close":
        q.close()
    else:
        del q
        gc.collect()
    with pytest.raises(RingNotFound):
        Ring.open(name)   # the name is gone: the child holds the segment itself
    try:
        assert replies.get(timeout=JOIN) == ("child got", "first")
        assert join_or_kill(child, JOIN) and child.exitcode == 0
    finally:
        replies.close()


def test_a_segment_of_another_user_is_not_attached_from_a_handed_fd(make_queue):
    """The descriptor a spawned child receives passes the owner rule too."""
    import ringshm.ring as ring_module

    q = make_queue()
    fd = os.open(f"/dev/shm/ringshm.{q.name}", os.O_RDWR)

    class Handed:
        def detach(self):
            return fd

    os.fchown(fd, 12345, -1)
    try:
        with pytest.raises(PermissionError):
            ring_module._open_inherited(Handed(), q.name, None)
    finally:
        os.chown(f"/dev/shm/ringshm.{q.name}", os.geteuid(), -1)
    with pytest.raises(OSError):
        os.fstat(fd)   # closed, refused or not


def test_no_descriptor_is_left_behind_by_spawning(make_queue):
    ctx = multiprocessing.get_context("spawn")
    q = make_queue()
    replies = make_queue()
    before = len(os.listdir("/proc/self/fd"))
    for i in range(3):
        q.put(i)
        child = ctx.Process(target=echo_first_item, args=(q, replies))
        child.start()
        assert replies.get(timeout=JOIN) == ("child got", i)
        assert join_or_kill(child, JOIN)
        del child
        gc.collect()
    assert len(os.listdir("/proc/self/fd")) <= before
