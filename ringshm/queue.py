"""The queue family over a Ring: Queue (a drop-in for multiprocessing.Queue),
JoinableQueue and SimpleQueue.

Each object is serialised with ``dumps`` into one ring message before any
lock of the ring is taken, and deserialised with ``loads`` after the lock is
released, so a slow or failing (de)serialiser never blocks other processes
and an unpicklable object leaves the queue as it was.  How an item becomes
a record (out-of-band buffers, NumPy arrays, items larger than the ring in
side files) is ringshm/_items.py and ringshm/_sidefile.py.

There is no feeder thread: ``put`` writes straight into shared memory and
returns once the item is visible to every consumer. ``join_thread`` and
``cancel_join_thread`` exist only so that code written for
multiprocessing.Queue runs unchanged.
"""

from __future__ import annotations

import os
import pickle
import weakref
from pickle import dumps as _pickle_dumps
from time import monotonic as _monotonic
from typing import Any, Callable, Generic, Iterable, Optional, TypeVar

from ringshm import _items, _sidefile
from ringshm._items import read_array as _read_array
from ringshm._ring import holds_no_buffer as _holds_no_buffer
from ringshm._typing import Buffer, Self
from ringshm.errors import Empty, MessageTooLarge, ShutDown
from ringshm.ring import Ring

__all__ = ["Queue", "JoinableQueue", "SimpleQueue", "DEFAULT_CAPACITY"]

#: Bytes of ring behind a Queue unless ``capacity`` says otherwise. The
#: segment is reserved in /dev/shm when the queue is made (reserve=True), so
#: the default stays small: a dozen queues fit in a container's default
#: 64 MB /dev/shm (README, "Sizing a ring").
DEFAULT_CAPACITY = 4 << 20

#: shutdown(immediate=True) gives up discarding after waiting this many
#: seconds for the get lock (a consumer elsewhere stopped while holding it).
DRAIN_PATIENCE = 1.0

T = TypeVar("T")
Dumps = Callable[[Any], Buffer]
Loads = Callable[[bytes], Any]

# What _QueueBase itself keeps in an instance; a subclass's own attributes
# travel with a pickled queue, these are rebuilt.
_OWN_ATTRIBUTES = frozenset({"_ring", "_closed", "_maxsize", "_dumps", "_loads", "_codec",
                             "_encode", "_decode", "_in_place", "_actions", "_custom",
                             "_side_files"})


def _check_timeout(block: bool, timeout: Optional[float]) -> Optional[float]:
    """Return the timeout the ring should get, as multiprocessing.Queue reads it.

    block=False ignores the timeout altogether; a negative one is a bad
    argument, as in queue.Queue.
    """
    if not block:
        return None
    if timeout is not None and timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")
    return timeout


def _rebuild(cls: type[_QueueBase[Any]], ring: Ring, maxsize: int, dumps: Dumps,
             loads: Loads) -> _QueueBase[Any]:
    """Unpickle a queue of class ``cls`` (a subclass stays that subclass)
    around a ring that was unpickled first: it never owns the ring."""
    self = cls.__new__(cls)
    self._maxsize = maxsize
    self._dumps = dumps
    self._loads = loads
    self._set_codec(dumps, loads)
    self._ring = ring
    self._closed = False
    self._release_side_files_at_the_end()
    return self


class _QueueBase(Generic[T]):
    """What every queue of the family shares: the ring, the serialisers, one
    item's I/O, pickling and closing."""

    # Class-level defaults so that close() and __del__ work after a failed
    # constructor.
    _ring: Optional[Ring] = None
    _closed = True
    _maxsize = 0
    _side_files: Optional[weakref.finalize[Any, Any]] = None

    def __init__(self, maxsize: int = 0, *, capacity: int = DEFAULT_CAPACITY,
                 name: Optional[str] = None, dumps: Dumps = pickle.dumps,
                 loads: Loads = pickle.loads, ctx: object = None) -> None:
        # ctx: multiprocessing's queues take a context; a ring needs none.
        if maxsize is None or maxsize < 0:
            maxsize = 0
        self._maxsize = int(maxsize)
        self._dumps = dumps
        self._loads = loads
        self._set_codec(dumps, loads)
        self._ring = Ring.create(name, capacity=capacity, max_messages=self._maxsize)
        self._closed = False
        self._release_side_files_at_the_end()
        _sidefile.sweep_orphans()

    def _release_side_files_at_the_end(self) -> None:
        # Items larger than the ring live in side files, which go with the
        # ring itself: whichever Queue of it closes (or is collected) last
        # removes them (ringshm/_sidefile.py).
        assert self._ring is not None
        self._side_files = weakref.finalize(self, _sidefile.release, self._ring.name,
                                            self._ring.identity, *self._ring._inode)

    def _set_codec(self, dumps: Dumps, loads: Loads) -> None:
        # The item I/O's callables, bound once (ringshm/_items.py).
        self._codec = codec = _items.Codec(dumps, loads)
        self._encode, self._decode, self._in_place = codec.encode, codec.decode, codec.in_place
        self._actions = codec.actions
        self._custom = codec.custom

    def __reduce__(self) -> tuple[Any, ...]:
        ring = self._open_ring()
        extra = {k: v for k, v in self.__dict__.items() if k not in _OWN_ATTRIBUTES}
        return (_rebuild, (type(self), ring, self._maxsize, self._dumps, self._loads),
                extra or None)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"qsize={self._open_ring().qsize()}"
        return (f"<ringshm.{type(self).__name__} name={self.name!r} "
                f"maxsize={self._maxsize} {state}>")

    def _open_ring(self) -> Ring:
        if self._closed or self._ring is None:
            raise ValueError(f"{type(self).__name__} {self.name!r} is closed")
        return self._ring

    @property
    def name(self) -> Optional[str]:
        """The name of the ring behind this queue (pass it to Ring.open)."""
        return None if self._ring is None else self._ring.name

    # -- one item's I/O: the only places that serialise or touch the ring ---

    def _put_item(self, obj: T, block: bool, timeout: Optional[float]) -> None:
        # Serialise and write one item: any size, one ring message.  The
        # default pickle is inlined (_items.Codec.encode does the same): a
        # small object costs no call more than it must.
        ring = self._ring
        if self._closed or ring is None:
            ring = self._open_ring()   # raises
        record: Any
        if self._custom:
            record = self._encode(obj)
        elif _holds_no_buffer(obj):
            record = _pickle_dumps(obj, 5)   # scalars, or containers of them
        elif obj.__class__.__name__ in _items.SPECIAL_NAMES:
            record = _items.encode_special(obj)
        else:
            buffers: list[pickle.PickleBuffer] = []
            record = _pickle_dumps(obj, 5, buffer_callback=buffers.append)
            if buffers:
                record = _items.frame_buffers(obj, record, buffers)
        if record.__class__ is bytes:
            try:
                ring.put(record, block, timeout)   # it checks the size
                return
            except MessageTooLarge:
                pass
        _items.put_record(ring, record, block, timeout)

    def _put_items(self, objs: Iterable[T], block: bool, timeout: Optional[float]) -> None:
        ring = self._open_ring()
        batch = _items.put_many_records(ring, self._codec, objs)
        if batch:
            ring.put_many(batch, block=block, timeout=timeout)

    def _get_item(self, block: bool, timeout: Optional[float]) -> T:
        # Read and rebuild one item; inline for a message that is not read
        # in place (the small-object fast path).
        ring = self._ring
        if self._closed or ring is None:
            ring = self._open_ring()   # raises
        started = _monotonic() if timeout else 0.0
        data = ring._get_direct(self._actions, _read_array, block, timeout)
        obj: T
        if data.__class__ is bytes:
            obj = self._decode(data)
            return obj
        if data is not None:
            obj = data   # an array, read by read_array in the same lock round
            return obj
        obj = _items.take_in_place(ring, self._codec, _items.remaining(block, timeout, started))
        return obj

    def _get_items(self, max_messages: int, block: bool, timeout: Optional[float]) -> list[T]:
        ring = self._ring   # get_many() checked that the queue is open
        assert ring is not None
        items: list[T] = _items.get_many_items(ring, self._codec, max_messages, block, timeout)
        return items

    # -- state and lifecycle -----------------------------------------------

    def empty(self) -> bool:
        """True if the queue holds no item now (a snapshot).

        Raises:
            ValueError: the queue is closed.
        """
        return self._open_ring().empty()

    def close(self) -> None:
        """Detach this process from the queue; idempotent.

        Afterwards every method but close, join_thread and cancel_join_thread
        raises ValueError. The creating queue also removes the ring's name:
        processes already attached keep working, new ones cannot attach
        (a child being spawned already holds the segment: see DESIGN.md).
        """
        held = None
        if self._ring is not None and not self._closed:
            _sidefile.sweep(self._ring)   # what a crash left of big items
            # Items still queued in side files that others may read: a
            # descriptor of the ring for the watcher, taken while the name
            # still finds it (ringshm/_sidefile.py, release).
            held = _sidefile.hold(self._ring)
        self._closed = True
        try:
            if self._ring is not None:
                self._ring.close()        # the creator's also removes the name
            release = self._side_files.detach() if self._side_files is not None else None
            if release is not None:       # the last one out: items still queued go
                _, function, args, _ = release
                function(*args, held=held)
        finally:
            if held is not None:
                os.close(held)

    def __del__(self) -> None:
        # Close quietly what a dropped copy attached (a Pool task's argument,
        # say); the creator's ring is unlinked by the Ring itself as well.
        if not self._closed:
            self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Queue(_QueueBase[T]):
    """A multiprocess FIFO of Python objects in a shared-memory ring.

    ``Queue(maxsize=0, *, capacity=DEFAULT_CAPACITY, name=None,
    dumps=pickle.dumps, loads=pickle.loads, ctx=None)``

    ``maxsize`` > 0 bounds the number of items, as in the standard library;
    ``maxsize`` <= 0 leaves only ``capacity`` (bytes of ring) as the bound, so
    unlike multiprocessing.Queue a put can block even when ``maxsize`` is 0.
    ``name`` names the ring (a fresh unique name when None). ``dumps`` turns an
    object into a bytes-like object and ``loads`` turns it back; both must be
    picklable (module-level functions) for the queue to pass to a child.
    ``ctx`` (a multiprocessing context) is accepted and ignored: a ring works
    the same under every start method. ``Queue[int]`` types the items.

    The Queue that creates the ring owns it and removes its name on
    ``close()`` or when collected; copies that reach other processes (a
    ``Process`` or ``Pool`` argument, fork, spawn or forkserver, or an item of
    another queue) attach and never remove it, and keep their class (a
    subclass stays that subclass). Processes already attached keep working
    after the owner has closed.

    Raises:
        ValueError: a bad ``capacity`` or ``name`` (from Ring.create).
        ringshm.RingExists: a ring of that ``name`` already exists.
    """

    @property
    def maxsize(self) -> int:
        """The bound on the number of items (0: bounded by capacity only)."""
        return self._maxsize

    @property
    def is_shutdown(self) -> bool:
        """True once shutdown() was called, in any process.

        Raises:
            ValueError: the queue is closed.
        """
        return self._open_ring().is_shutdown

    # -- put ---------------------------------------------------------------

    def put(self, obj: T, block: bool = True, timeout: Optional[float] = None) -> None:
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
        # The item I/O checks that the queue is open; the timeout is checked
        # only when there is one (the common call pays for no second call).
        self._put_item(obj, block, timeout if timeout is None else _check_timeout(block, timeout))

    def put_nowait(self, obj: T) -> None:
        """``put(obj, block=False)``.

        Raises:
            ringshm.Full: no room now. Otherwise as put().
        """
        self.put(obj, False)

    def put_many(self, objs: Iterable[T], block: bool = True,
                 timeout: Optional[float] = None) -> None:
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
        self._put_items(objs, block, _check_timeout(block, timeout))

    # -- get ---------------------------------------------------------------

    def get(self, block: bool = True, timeout: Optional[float] = None) -> T:
        """Remove and return the oldest item.

        Blocking and ``timeout`` as for put().

        Raises:
            ringshm.Empty: nothing in time (a queue.Empty).
            ringshm.ShutDown: the queue was shut down and is drained.
            ValueError: the queue is closed, or ``timeout`` is negative.
            Exception: whatever ``loads`` raises; the item is consumed.
        """
        return self._get_item(block,
                              timeout if timeout is None else _check_timeout(block, timeout))

    def get_nowait(self) -> T:
        """``get(block=False)``.

        Raises:
            ringshm.Empty: nothing now. Otherwise as get().
        """
        return self.get(False)

    def get_many(self, max_messages: int = 1024, block: bool = True,
                 timeout: Optional[float] = None) -> list[T]:
        """Wait for at least one item, then return up to ``max_messages`` ready ones.

        Returns a list of items, oldest first, never empty.

        Raises:
            ringshm.Empty: nothing in time.
            ringshm.ShutDown: the queue was shut down and is drained.
            ValueError: the queue is closed, ``max_messages`` < 1, or
                ``timeout`` is negative.
            Exception: whatever ``loads`` raises; the whole batch is consumed.
        """
        self._open_ring()
        timeout = _check_timeout(block, timeout)
        if max_messages < 1:
            raise ValueError("'max_messages' must be at least 1")
        return self._get_items(max_messages, block, timeout)

    # -- state -------------------------------------------------------------

    def qsize(self) -> int:
        """Items in the queue now (a snapshot; others may change it at once).

        Raises:
            ValueError: the queue is closed.
        """
        return self._open_ring().qsize()

    def full(self) -> bool:
        """True if a put would have to wait now: ``maxsize`` items, or no
        room left in the ring (a snapshot).

        Raises:
            ValueError: the queue is closed.
        """
        return self._open_ring().full()   # the ring counts max_messages too

    # -- lifecycle ---------------------------------------------------------

    def shutdown(self, immediate: bool = False) -> None:
        """Shut the queue down for every process, as queue.Queue.shutdown.

        Blocked callers everywhere wake at once; ``put`` raises ShutDown from
        then on; ``get`` returns what is left, then raises ShutDown. With
        ``immediate=True`` the items left are discarded first, so ``get``
        raises ShutDown at once (unless a consumer elsewhere races for them).

        Raises:
            ValueError: the queue is closed.
        """
        ring = self._open_ring()
        ring.shutdown()
        if immediate:
            # A blocking get of a shut-down ring never waits for data (it
            # raises ShutDown once drained), only for the get lock, which a
            # consumer thread may hold while it waits for the GIL: longer
            # than a non-blocking call's patience.
            # An item in a side file goes with its reference, now: not at
            # close(), which a long-lived process may never call.
            discarded = 0
            try:
                while True:
                    batch = ring.get_many(1 << 16, timeout=DRAIN_PATIENCE)
                    discarded += len(batch)
                    for message in batch:
                        _sidefile.discard(ring, message)
            except (Empty, ShutDown):
                pass
            self._discarded(discarded)

    def _discarded(self, count: int) -> None:
        """Hook: ``count`` items were thrown away by shutdown(immediate=True)."""

    def join_thread(self) -> None:
        """Does nothing: kept for compatibility with multiprocessing.Queue.

        There is no feeder thread; every put() is in shared memory when it
        returns, so there is nothing to flush or wait for.
        """

    def cancel_join_thread(self) -> None:
        """Does nothing: kept for compatibility with multiprocessing.Queue.

        There is no feeder thread, and a process may exit at any time without
        losing an item that put() returned for.
        """


class JoinableQueue(Queue[T]):
    """A Queue whose consumers say when each item is processed, as
    multiprocessing.JoinableQueue: ``task_done()`` and ``join()``.

    The count of unfinished tasks lives in the segment (messages put minus
    tasks done), shared by every process; it stays exact when a producer is
    killed, even in the middle of a put. A consumer killed between get() and
    task_done() leaves its task unfinished for ever: join() then returns only
    at its timeout (multiprocessing behaves the same), so give it one where
    consumers may die.

    Raises:
        As Queue.
    """

    def task_done(self) -> None:
        """Say that an item got from the queue was processed.

        Raises:
            ValueError: called more times than items were put (nothing is
                counted), or the queue is closed.
        """
        self._open_ring()._task_done(1)

    def join(self, timeout: Optional[float] = None) -> bool:
        """Wait until every item ever put was marked done with task_done().

        Returns True when none is unfinished, False when ``timeout`` (seconds)
        expired first. Shutting the queue down does not end the wait (as
        queue.Queue), but shutdown(immediate=True) counts the items it
        discards as done.

        Raises:
            ValueError: the queue is closed, or ``timeout`` is negative.
        """
        ring = self._open_ring()
        return ring._wait_joined(_check_timeout(True, timeout))

    @property
    def unfinished_tasks(self) -> int:
        """Items put and not yet marked done (a snapshot).

        Raises:
            ValueError: the queue is closed.
        """
        return self._open_ring()._unfinished_tasks()

    def _discarded(self, count: int) -> None:
        if count:
            self._open_ring()._task_done(count)


class SimpleQueue(_QueueBase[T]):
    """A FIFO with only ``put``, ``get``, ``empty`` and ``close``, as
    multiprocessing.SimpleQueue: ``put`` and ``get`` always block.

    ``SimpleQueue(*, capacity=DEFAULT_CAPACITY, name=None, dumps=pickle.dumps,
    loads=pickle.loads, ctx=None)``; it passes to children as a Queue does.

    Raises:
        As Queue.
    """

    def __init__(self, *, capacity: int = DEFAULT_CAPACITY, name: Optional[str] = None,
                 dumps: Dumps = pickle.dumps, loads: Loads = pickle.loads,
                 ctx: object = None) -> None:
        super().__init__(0, capacity=capacity, name=name, dumps=dumps, loads=loads)

    def put(self, obj: T) -> None:
        """Put ``obj`` at the end of the queue, waiting for room if need be.

        Raises:
            ringshm.ShutDown: the ring was shut down (by a Ring on it).
            OSError: ENOSPC, an item larger than the ring does not fit in
                /dev/shm (nothing was put).
            ValueError: the queue is closed.
            Exception: whatever ``dumps`` raises; the queue is left unchanged.
        """
        self._put_item(obj, True, None)

    def get(self) -> T:
        """Remove and return the oldest item, waiting for one if need be.

        Raises:
            ringshm.ShutDown: the ring was shut down and is drained.
            ValueError: the queue is closed.
            Exception: whatever ``loads`` raises; the item is consumed.
        """
        return self._get_item(True, None)
