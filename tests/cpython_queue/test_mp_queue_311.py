"""CPython 3.11's multiprocessing queue tests, with ringshm's classes swapped in.

Ported from Lib/test/_test_multiprocessing.py of CPython 3.11.7 (PSF
licence): ``_TestQueue`` (``test_task_done`` included) and
``TestSimpleQueue``, run under fork, spawn and forkserver.  The bodies are
CPython's; what changed, each marked "ringshm:" where it is:

- ``self.Queue``/``self.JoinableQueue``/``multiprocessing.SimpleQueue`` are
  ringshm's Queue, JoinableQueue and SimpleQueue; queues are closed (their
  rings unlinked) in tearDown.
- assertTimingAlmostEqual is a generous bound (CPython does not check
  timings unless CHECK_TIMINGS): a wait lasted about its timeout, a
  non-blocking call returned at once.
- test_queue_feeder_donot_stop_onexc: ringshm has no feeder thread, so
  ``put`` of an unpicklable object raises at once (multiprocessing
  reports it on stderr from its feeder thread); the rest of the test holds.

Not ported, CPython internals: test_queue_feeder_on_queue_feeder_error (the
feeder thread's ``_on_queue_feeder_error`` hook) and TestSimpleQueue's
test_closed (``_reader``/``_writer``).
"""

import multiprocessing
import os
import queue as pyqueue
import sys
import tempfile
import time
import unittest

import ringshm

DELTA = 0.1
TIMEOUT1, TIMEOUT2, TIMEOUT3 = 0.1, 0.1, 0.1
SHORT_TIMEOUT = 30.0
PROMPT = 1.0      # ringshm: "at once", generously
SLACK = 2.0       # ringshm: how late an expired timeout may return


class TimingWrapper(object):

    def __init__(self, func):
        self.func = func
        self.elapsed = None

    def __call__(self, *args, **kwds):
        t = time.monotonic()
        try:
            return self.func(*args, **kwds)
        finally:
            self.elapsed = time.monotonic() - t


def queue_empty(q):
    if hasattr(q, 'empty'):
        return q.empty()
    else:
        return q.qsize() == 0


def queue_full(q, maxsize):
    if hasattr(q, 'full'):
        return q.full()
    else:
        return q.qsize() == maxsize


def close_queue(queue):
    queue.close()
    queue.join_thread()


class RingshmMixin:
    """ringshm: the classes under test, the start method, cleanup."""

    START_METHOD = None

    def setUp(self):
        self.ctx = multiprocessing.get_context(self.START_METHOD)
        self.Process = self.ctx.Process
        self.Event = self.ctx.Event
        self._made = []

    def tearDown(self):
        for q in self._made:
            q.close()

    def _track(self, q):
        self._made.append(q)
        return q

    def Queue(self, maxsize=0):
        return self._track(ringshm.Queue(maxsize, ctx=self.ctx))

    def JoinableQueue(self, maxsize=0):
        return self._track(ringshm.JoinableQueue(maxsize, ctx=self.ctx))

    def SimpleQueue(self):
        return self._track(ringshm.SimpleQueue(ctx=self.ctx))

    def assertTimingAlmostEqual(self, a, b):
        # ringshm: a bound on the wait, never a speed assertion.
        if b == 0:
            self.assertLess(a, PROMPT)
        else:
            self.assertGreaterEqual(a, b - 0.02)
            self.assertLess(a, b + SLACK)


class _TestQueue(RingshmMixin):

    @classmethod
    def _test_put(cls, queue, child_can_start, parent_can_continue):
        child_can_start.wait()
        for i in range(6):
            queue.get()
        parent_can_continue.set()

    def test_put(self):
        MAXSIZE = 6
        queue = self.Queue(maxsize=MAXSIZE)
        child_can_start = self.Event()
        parent_can_continue = self.Event()

        proc = self.Process(
            target=self._test_put,
            args=(queue, child_can_start, parent_can_continue)
            )
        proc.daemon = True
        proc.start()

        self.assertEqual(queue_empty(queue), True)
        self.assertEqual(queue_full(queue, MAXSIZE), False)

        queue.put(1)
        queue.put(2, True)
        queue.put(3, True, None)
        queue.put(4, False)
        queue.put(5, False, None)
        queue.put_nowait(6)

        # the values may be in buffer but not yet in pipe so sleep a bit
        time.sleep(DELTA)

        self.assertEqual(queue_empty(queue), False)
        self.assertEqual(queue_full(queue, MAXSIZE), True)

        put = TimingWrapper(queue.put)
        put_nowait = TimingWrapper(queue.put_nowait)

        self.assertRaises(pyqueue.Full, put, 7, False)
        self.assertTimingAlmostEqual(put.elapsed, 0)

        self.assertRaises(pyqueue.Full, put, 7, False, None)
        self.assertTimingAlmostEqual(put.elapsed, 0)

        self.assertRaises(pyqueue.Full, put_nowait, 7)
        self.assertTimingAlmostEqual(put_nowait.elapsed, 0)

        self.assertRaises(pyqueue.Full, put, 7, True, TIMEOUT1)
        self.assertTimingAlmostEqual(put.elapsed, TIMEOUT1)

        self.assertRaises(pyqueue.Full, put, 7, False, TIMEOUT2)
        self.assertTimingAlmostEqual(put.elapsed, 0)

        self.assertRaises(pyqueue.Full, put, 7, True, timeout=TIMEOUT3)
        self.assertTimingAlmostEqual(put.elapsed, TIMEOUT3)

        child_can_start.set()
        parent_can_continue.wait()

        self.assertEqual(queue_empty(queue), True)
        self.assertEqual(queue_full(queue, MAXSIZE), False)

        proc.join()
        close_queue(queue)

    @classmethod
    def _test_get(cls, queue, child_can_start, parent_can_continue):
        child_can_start.wait()
        #queue.put(1)
        queue.put(2)
        queue.put(3)
        queue.put(4)
        queue.put(5)
        parent_can_continue.set()

    def test_get(self):
        queue = self.Queue()
        child_can_start = self.Event()
        parent_can_continue = self.Event()

        proc = self.Process(
            target=self._test_get,
            args=(queue, child_can_start, parent_can_continue)
            )
        proc.daemon = True
        proc.start()

        self.assertEqual(queue_empty(queue), True)

        child_can_start.set()
        parent_can_continue.wait()

        time.sleep(DELTA)
        self.assertEqual(queue_empty(queue), False)

        # Hangs unexpectedly, remove for now
        #self.assertEqual(queue.get(), 1)
        self.assertEqual(queue.get(True, None), 2)
        self.assertEqual(queue.get(True), 3)
        self.assertEqual(queue.get(timeout=1), 4)
        self.assertEqual(queue.get_nowait(), 5)

        self.assertEqual(queue_empty(queue), True)

        get = TimingWrapper(queue.get)
        get_nowait = TimingWrapper(queue.get_nowait)

        self.assertRaises(pyqueue.Empty, get, False)
        self.assertTimingAlmostEqual(get.elapsed, 0)

        self.assertRaises(pyqueue.Empty, get, False, None)
        self.assertTimingAlmostEqual(get.elapsed, 0)

        self.assertRaises(pyqueue.Empty, get_nowait)
        self.assertTimingAlmostEqual(get_nowait.elapsed, 0)

        self.assertRaises(pyqueue.Empty, get, True, TIMEOUT1)
        self.assertTimingAlmostEqual(get.elapsed, TIMEOUT1)

        self.assertRaises(pyqueue.Empty, get, False, TIMEOUT2)
        self.assertTimingAlmostEqual(get.elapsed, 0)

        self.assertRaises(pyqueue.Empty, get, timeout=TIMEOUT3)
        self.assertTimingAlmostEqual(get.elapsed, TIMEOUT3)

        proc.join()
        close_queue(queue)

    @classmethod
    def _test_fork(cls, queue):
        for i in range(10, 20):
            queue.put(i)
        # note that at this point the items may only be buffered, so the
        # process cannot shutdown until the feeder thread has finished
        # pushing items onto the pipe.

    def test_fork(self):
        # Old versions of Queue would fail to create a new feeder
        # thread for a forked process if the original process had its
        # own feeder thread.  This test checks that this no longer
        # happens.

        queue = self.Queue()

        # put items on queue so that main process starts a feeder thread
        for i in range(10):
            queue.put(i)

        # wait to make sure thread starts before we fork a new process
        time.sleep(DELTA)

        # fork process
        p = self.Process(target=self._test_fork, args=(queue,))
        p.daemon = True
        p.start()

        # check that all expected items are in the queue
        for i in range(20):
            self.assertEqual(queue.get(), i)
        self.assertRaises(pyqueue.Empty, queue.get, False)

        p.join()
        close_queue(queue)

    def test_qsize(self):
        q = self.Queue()
        try:
            self.assertEqual(q.qsize(), 0)
        except NotImplementedError:
            self.skipTest('qsize method not implemented')
        q.put(1)
        self.assertEqual(q.qsize(), 1)
        q.put(5)
        self.assertEqual(q.qsize(), 2)
        q.get()
        self.assertEqual(q.qsize(), 1)
        q.get()
        self.assertEqual(q.qsize(), 0)
        close_queue(q)

    @classmethod
    def _test_task_done(cls, q):
        for obj in iter(q.get, None):
            time.sleep(DELTA)
            q.task_done()

    def test_task_done(self):
        queue = self.JoinableQueue()

        workers = [self.Process(target=self._test_task_done, args=(queue,))
                   for i in range(4)]

        for p in workers:
            p.daemon = True
            p.start()

        for i in range(10):
            queue.put(i)

        queue.join()

        for p in workers:
            queue.put(None)

        for p in workers:
            p.join()
        close_queue(queue)

    def test_no_import_lock_contention(self):
        # ringshm: CPython's os_helper.temp_cwd and DirsOnSysPath, spelled out.
        old_cwd = os.getcwd()
        with tempfile.TemporaryDirectory() as cwd:
            os.chdir(cwd)
            sys.path.insert(0, cwd)
            try:
                module_name = 'imported_by_an_imported_module'
                with open(module_name + '.py', 'w', encoding="utf-8") as f:
                    f.write("""if 1:
                        import ringshm

                        q = ringshm.Queue()
                        q.put('knock knock')
                        q.get(timeout=3)
                        q.close()
                        del q
                    """)

                try:
                    __import__(module_name)
                except pyqueue.Empty:
                    self.fail("Probable regression on import lock contention;"
                              " see Issue #22853")
            finally:
                sys.path.remove(cwd)
                sys.modules.pop('imported_by_an_imported_module', None)
                os.chdir(old_cwd)

    def test_timeout(self):
        q = self.Queue()
        start = time.monotonic()
        self.assertRaises(pyqueue.Empty, q.get, True, 0.200)
        delta = time.monotonic() - start
        # bpo-30317: Tolerate a delta of 100 ms because of the bad clock
        # resolution on Windows (usually 15.6 ms). x86 Windows7 3.x once
        # failed because the delta was only 135.8 ms.
        self.assertGreaterEqual(delta, 0.100)
        close_queue(q)

    def test_queue_feeder_donot_stop_onexc(self):
        # bpo-30414: verify feeder handles exceptions correctly
        class NotSerializable(object):
            def __reduce__(self):
                raise AttributeError
        q = self.Queue()
        with self.assertRaises(AttributeError):   # ringshm: raised by put()
            q.put(NotSerializable())
        q.put(True)
        self.assertTrue(q.get(timeout=SHORT_TIMEOUT))
        close_queue(q)

        # bpo-33078: verify that the queue size is correctly handled
        # on errors.
        q = self.Queue(maxsize=1)
        with self.assertRaises(AttributeError):   # ringshm: raised by put()
            q.put(NotSerializable())
        q.put(True)
        try:
            self.assertEqual(q.qsize(), 1)
        except NotImplementedError:
            # qsize is not available on all platform as it
            # relies on sem_getvalue
            pass
        self.assertTrue(q.get(timeout=SHORT_TIMEOUT))
        # Check that the size of the queue is correct
        self.assertTrue(q.empty())
        close_queue(q)

    def test_closed_queue_put_get_exceptions(self):
        for q in self.Queue(), self.JoinableQueue():
            q.close()
            with self.assertRaisesRegex(ValueError, 'is closed'):
                q.put('foo')
            with self.assertRaisesRegex(ValueError, 'is closed'):
                q.get()


class _TestSimpleQueue(RingshmMixin):

    @classmethod
    def _test_empty(cls, queue, child_can_start, parent_can_continue):
        child_can_start.wait()
        # issue 30301, could fail under spawn and forkserver
        try:
            queue.put(queue.empty())
            queue.put(queue.empty())
        finally:
            parent_can_continue.set()

    def test_empty(self):
        queue = self.SimpleQueue()
        child_can_start = self.Event()
        parent_can_continue = self.Event()

        proc = self.Process(
            target=self._test_empty,
            args=(queue, child_can_start, parent_can_continue)
        )
        proc.daemon = True
        proc.start()

        self.assertTrue(queue.empty())

        child_can_start.set()
        parent_can_continue.wait()

        self.assertFalse(queue.empty())
        self.assertEqual(queue.get(), True)
        self.assertEqual(queue.get(), False)
        self.assertTrue(queue.empty())

        proc.join()

    def test_close(self):
        queue = self.SimpleQueue()
        queue.close()
        # closing a queue twice should not fail
        queue.close()


# ringshm: one concrete class per start method, at module level so that
# spawn and forkserver children can import the test classes' methods.
_METHODS = multiprocessing.get_all_start_methods()


def _for_method(base, method):
    cls = type(f"{base.__name__.lstrip('_')}_{method}", (base, unittest.TestCase),
               {"START_METHOD": method, "__module__": __name__})
    cls.__qualname__ = cls.__name__
    if method not in _METHODS:
        cls = unittest.skip(f"start method {method} not available")(cls)
    return cls


for _base in (_TestQueue, _TestSimpleQueue):
    for _method in ("fork", "spawn", "forkserver"):
        _cls = _for_method(_base, _method)
        globals()[_cls.__name__] = _cls
del _base, _method, _cls
