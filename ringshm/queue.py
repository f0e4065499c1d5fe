"""Queue: Python objects over a Ring, a drop-in for multiprocessing.Queue.

Each object is serialised with ``dumps`` into one ring message before any
lock of the ring is taken, and deserialised with ``loads`` after the lock is
released, so a slow or failing (de)serialiser never blocks other processes
and an unpicklable object leaves the queue as it was. How an item becomes a
ring message (out-of-band buffers straight into the ring, items of any size
through a side file) is ringshm/_items.py.

There is no feeder thread: ``put`` writes straight into shared memory and
returns once the item is visible to every consumer. ``join_thread`` and
``cancel_join_thread`` exist only so that code written for
multiprocessing.Queue runs unchanged.
"""

import os
import pickle
import weakref
from pickle import dumps as _pickle_dumps
from time import monotonic as _monotonic

from . import _items, _sidefile
from .errors import Empty, MessageTooLarge, ShutDown
from .ring import Ring

__all__ = ["Queue", "DEFAULT_CAPACITY"]

#: Bytes of ring behind a Queue unless ``capacity`` says otherwise. The pages
#: of /dev/shm are only committed when written, so a large default costs
#: nothing until the queue actually holds that much.
DEFAULT_CAPACITY = 16 << 20


def _check_timeout(block, timeout):
    """Return the timeout the ring should get, as multiprocessing.Queue reads it.

    block=False ignores the timeout altogether; a negative one is a bad
    argument, as in queue.Queue.
    """
    if not block:
        return None
    if timeout is not None and timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")
    return timeout


class Queue:
    """A multiprocess FIFO of Python objects in a shared-memory ring.

    ``Queue(maxsize=0, *, capacity=DEFAULT_CAPACITY, name=None,
    dumps=pickle.dumps, loads=pickle.loads)``

    ``maxsize`` > 0 bounds the number of items, as in the standard library;
    ``maxsize`` <= 0 leaves only ``capacity`` (bytes of ring) as the bound, so
    unlike multiprocessing.Queue a put can block even when ``maxsize`` is 0.
    ``name`` names the ring (a fresh unique name when None). ``dumps`` turns an
    object into a bytes-like object and ``loads`` turns it back; both must be
    picklable (module-level functions) for the queue to pass to a child.

    The Queue that creates the ring owns it and removes its name on
    ``close()`` or when collected; copies that reach other processes (a
    ``Process`` or ``Pool`` argument, fork, spawn or forkserver, or an item of
    another queue) attach by name and never remove it. Processes already
    attached keep working after the owner has closed.

    Raises:
        ValueError: a bad ``capacity`` or ``name`` (from Ring.create).
        ringshm.RingExists: a ring of that ``name`` already exists.
    """

    # Class-level defaults so that close() and __del__ work after a failed
    # constructor.
    _ring = None
    _closed = True
    _side_files = None

    def __init__(self, maxsize=0, *, capacity=DEFAULT_CAPACITY, name=None,
                 dumps=pickle.dumps, loads=pickle.loads):
        if maxsize is None or maxsize < 0:
            maxsize = 0
        self._maxsize = int(maxsize)
        self._dumps = dumps
        self._loads = loads
        self._set_codec(dumps, loads)
        self._ring = Ring.create(name, capacity=capacity, max_messages=self._maxsize)
        self._closed = False
        # Items larger than the ring live in side files, which go with the
        # ring's name (ringshm/_sidefile.py).
        self._side_files = weakref.finalize(self, _sidefile.remove_all, self._ring.name,
                                            os.getpid())
        _sidefile.sweep_orphans()

    @classmethod
    def _attach(cls, name, maxsize, dumps, loads):
        """Rebuild a pickled Queue: attach to the ring by name; never owns it."""
        self = cls.__new__(cls)
        self._maxsize = maxsize
        self._dumps = dumps
        self._loads = loads
        self._set_codec(dumps, loads)
        self._ring = Ring.open(name)
        self._closed = False
        return self

    def _set_codec(self, dumps, loads):
        # The item I/O's callables, bound once (ringshm/_items.py).
        self._codec = codec = _items.Codec(dumps, loads)
        self._encode, self._decode, self._in_place = codec.encode, codec.decode, codec.in_place
        self._no_buffers = codec.no_buffers

    def __reduce__(self):
        self._check_closed()
        return (Queue._attach, (self._ring.name, self._maxsize, self._dumps, self._loads))

    def __repr__(self):
        state = "closed" if self._closed else f"qsize={self._ring.qsize()}"
        return f"<ringshm.Queue name={self.name!r} maxsize={self._maxsize} {state}>"

    def _check_closed(self):
        if self._closed:
            raise ValueError(f"Queue {self.name!r} is closed")

    @property
    def name(self):
        """The name of the ring behind this queue (pass it to Ring.open)."""
        return None if self._ring is None else self._ring.name

    @property
    def maxsize(self):
        """The bound on the number of items (0: bounded by capacity only)."""
        return self._maxsize

    # -- put ---------------------------------------------------------------

    def put(self, obj, block=True, timeout=None):
        """Put ``obj`` at the end of the queue.

        ``block=True, timeout=None`` waits as long as needed for room;
        a ``timeout`` in seconds waits at most that long; ``block=False``
        does not wait (and ignores ``timeout``).

        Raises:
            ringshm.Full: no room in time (a queue.Full).
            ringshm.ShutDown: the queue was shut down.
            OSError: ENOSPC, an item larger than the ring does not fit in
                /dev/shm (nothing was put).
            ValueError: the queue is closed, or ``timeout`` is negative.
            Exception: whatever ``dumps`` raises; the queue is left unchanged.
        """
        self._check_closed()
        self._put_item(obj, block, _check_timeout(block, timeout))

    def _put_item(self, obj, block, timeout):
        # Serialise and write one item: any size, one ring message. The
        # default pickle is inlined (_items.Codec.encode does the same): a
        # small object costs no call more than in 0.1.
        if obj.__class__ in self._no_buffers:
            record = _pickle_dumps(obj, 5)   # it cannot hold a buffer
        elif self._codec.custom or obj.__class__.__name__ in _items.SPECIAL_NAMES:
            record = self._encode(obj)
        else:
            buffers = []
            record = _pickle_dumps(obj, 5, buffer_callback=buffers.append)
            if buffers:
                record = _items.frame_buffers(obj, record, buffers)
        if record.__class__ is bytes:
            try:
                self._ring.put(record, block, timeout)   # it checks the size
                return
            except MessageTooLarge:
                pass
        _items.put_record(self._ring, record, block, timeout)

    def put_nowait(self, obj):
        """``put(obj, block=False)``.

        Raises:
            ringshm.Full: no room now. Otherwise as put().
        """
        self.put(obj, False)

    def put_many(self, objs, block=True, timeout=None):
        """Put every object of ``objs`` in order, all or nothing.

        The batch is serialised first, then published at once: consumers see
        all of it or none of it, and no other producer's item lands inside it.

        Raises:
            ringshm.Full: no room for the whole batch in time; nothing was put.
            ringshm.MessageTooLarge: the batch can never fit, or an item of
                it is larger than max_message_size (put() takes it).
            ringshm.ShutDown: the queue was shut down.
            ValueError: the queue is closed, or ``timeout`` is negative.
            Exception: whatever ``dumps`` raises; nothing was put.
        """
        self._check_closed()
        timeout = _check_timeout(block, timeout)
        batch = _items.put_many_records(self._ring, self._codec, objs)
        if batch:
            self._ring.put_many(batch, block=block, timeout=timeout)

    # -- get ---------------------------------------------------------------

    def get(self, block=True, timeout=None):
        """Remove and return the oldest item.

        Blocking and ``timeout`` as for put().

        Raises:
            ringshm.Empty: nothing in time (a queue.Empty).
            ringshm.ShutDown: the queue was shut down and is drained.
            ringshm.RingCorrupted: the next record fails validation (it
                stays in the queue).
            ValueError: the queue is closed, or ``timeout`` is negative.
            Exception: whatever ``loads`` raises; the item is consumed.
        """
        self._check_closed()
        return self._get_item(block, _check_timeout(block, timeout))

    def _get_item(self, block, timeout):
        # Read and rebuild one item. Inline: a message that is not read in
        # place (the small-object fast path).
        started = _monotonic() if timeout else 0.0
        data = self._ring._get_untagged(self._in_place, block, timeout)
        if data is not None:
            return self._decode(data)
        return _items.take_in_place(self._ring, self._codec,
                                    _items.remaining(block, timeout, started))

    def get_nowait(self):
        """``get(block=False)``.

        Raises:
            ringshm.Empty: nothing now. Otherwise as get().
        """
        return self.get(False)

    def get_many(self, max_messages=1024, block=True, timeout=None):
        """Wait for at least one item, then return up to ``max_messages`` ready ones.

        Returns a list of items, oldest first, never empty.

        Raises:
            ringshm.Empty: nothing in time.
            ringshm.ShutDown: the queue was shut down and is drained.
            ValueError: the queue is closed, ``max_messages`` < 1, or
                ``timeout`` is negative.
            Exception: whatever ``loads`` raises; the whole batch is consumed.
        """
        self._check_closed()
        timeout = _check_timeout(block, timeout)
        if max_messages < 1:
            raise ValueError("'max_messages' must be at least 1")
        return _items.get_many_items(self._ring, self._codec, max_messages, block, timeout)

    # -- state -------------------------------------------------------------

    def qsize(self):
        """Items in the queue now (a snapshot; others may change it at once).

        Raises:
            ValueError: the queue is closed.
        """
        self._check_closed()
        return self._ring.qsize()

    def empty(self):
        """True if the queue holds no item now (a snapshot).

        Raises:
            ValueError: the queue is closed.
        """
        self._check_closed()
        return self._ring.empty()

    def full(self):
        """True if a put would have to wait now: ``maxsize`` items, or no
        room left in the ring (a snapshot).

        Raises:
            ValueError: the queue is closed.
        """
        self._check_closed()
        return self._ring.full()   # the ring counts max_messages too

    # -- lifecycle ---------------------------------------------------------

    def shutdown(self, immediate=False):
        """Shut the queue down for every process, as queue.Queue.shutdown.

        Blocked callers everywhere wake at once; ``put`` raises ShutDown from
        then on; ``get`` returns what is left, then raises ShutDown. With
        ``immediate=True`` the items left are discarded first, so ``get``
        raises ShutDown at once (unless a consumer elsewhere races for them).

        Raises:
            ValueError: the queue is closed.
        """
        self._check_closed()
        self._ring.shutdown()
        if immediate:
            try:
                while True:
                    self._ring.get_many(1 << 16, block=False)
            except (Empty, ShutDown):
                pass

    def close(self):
        """Detach this process from the queue; idempotent.

        Afterwards every method but close, join_thread and cancel_join_thread
        raises ValueError. The creating Queue also removes the ring's name:
        processes already attached keep working, new ones cannot attach.
        """
        if self._ring is not None and not self._closed:
            _sidefile.sweep(self._ring)   # what a crash left of big items
        self._closed = True
        if self._side_files is not None:
            self._side_files()            # the creator: items still queued go
        if self._ring is not None:
            self._ring.close()

    def __del__(self):
        # Close quietly what a dropped copy attached (a Pool task's argument,
        # say); the creator's ring is unlinked by the Ring itself as well.
        if not self._closed:
            self.close()

    def join_thread(self):
        """Does nothing: kept for compatibility with multiprocessing.Queue.

        There is no feeder thread; every put() is in shared memory when it
        returns, so there is nothing to flush or wait for.
        """

    def cancel_join_thread(self):
        """Does nothing: kept for compatibility with multiprocessing.Queue.

        There is no feeder thread, and a process may exit at any time without
        losing an item that put() returned for.
        """

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
