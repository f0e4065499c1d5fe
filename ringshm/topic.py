"""Topics: publish/subscribe between processes through one shared log.

Every subscriber receives every message published after it subscribed, each
publisher's in its order (libringshm/src/topic.c; docs/DESIGN.md,
"Topics").  A Topic is made and attached exactly as a Ring (the Segment
machinery of ringshm/ring.py, any backing); its hot calls are the compiled
TopicCore's and SubscriptionCore's (ringshm/_topic.pxi).  ObjectTopic
carries Python objects with a Queue's codec (ringshm/_items.py).

A subscription belongs to the process that made it: it cannot be pickled
(pickle the Topic and subscribe in the other process), and a forked
child's copy raises RuntimeError.
"""

from __future__ import annotations

import pickle
import weakref
from typing import Any, Callable, Generic, Iterable, Iterator, Optional, TypeVar

from ringshm._items import Codec, Record
from ringshm._records import Frame, ViewSource
from ringshm._ring import (
    TOPIC_MAX_HISTORY,
    TOPIC_MAX_SUBSCRIBERS,
    SubscriberInfo,
    SubscriptionCore,
    TopicCore,
    topic_header_size,
)
from ringshm._typing import Buffer, Self
from ringshm.errors import MessageTooLarge
from ringshm.ring import (
    DEFAULT_RECOVERY_INTERVAL,
    DEFAULT_SPIN,
    Segment,
    _check_mode,
    _check_number,
    backing_for,
    check_settings,
    until_shut_down,
)

__all__ = ["Topic", "Subscription", "ObjectTopic", "ObjectSubscription", "SubscriberInfo",
           "MAX_SUBSCRIBERS", "MAX_HISTORY"]

DEFAULT_CAPACITY = 1 << 20
#: At most this many subscribers of one topic at once (RingError past it).
MAX_SUBSCRIBERS: int = TOPIC_MAX_SUBSCRIBERS
#: The largest ``history``.
MAX_HISTORY: int = TOPIC_MAX_HISTORY

T = TypeVar("T")


def _check_history(history: object) -> int:
    if isinstance(history, bool) or not isinstance(history, int):
        raise TypeError(f"history must be an int, not {type(history).__name__}")
    if not 0 <= history <= MAX_HISTORY:
        raise ValueError(f"history must be between 0 and {MAX_HISTORY}, not {history}")
    return history


class Subscription(SubscriptionCore):
    """One subscriber of a topic (Topic.subscribe()): get, get_nowait,
    get_many, get_into, view, iteration.  Any number of threads of the
    process that made it may share it."""

    def __init__(self) -> None:
        raise TypeError("use Topic.subscribe()")

    def __iter__(self) -> Iterator[bytes]:
        """get() until the topic is shut down and this subscriber has taken
        everything.  A Lagged (untethered) ends the loop with the exception;
        a new loop goes on from the oldest message held."""
        return until_shut_down(self.get)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return "<Subscription closed>"
        kind = "tethered" if self.tethered else "untethered"
        return f"<Subscription {kind} lag={self.lag}>"


class Topic(Segment, TopicCore):
    """Bytes messages from any number of publishers to every subscriber,
    through a shared-memory log.

    Make one with Topic.create(), Topic.open() or Topic.anonymous(); then
    publish() and subscribe().
    """

    _KIND = "topic"
    _OTHER_KIND = ("ring", "Ring.open()")
    _subscriptions: Optional[weakref.WeakSet[Subscription]] = None

    def __init__(self) -> None:
        raise TypeError("use Topic.create(), Topic.open() or Topic.anonymous()")

    # -- making and attaching ------------------------------------------------

    @classmethod
    def create(cls, name: Optional[str] = None, capacity: int = DEFAULT_CAPACITY, *,
               history: int = 0, path: Optional[str] = None, sysv_key: Optional[int] = None,
               mode: int = 0o600, exist_ok: bool = False, persist: bool = False,
               recovery_interval: float = DEFAULT_RECOVERY_INTERVAL,
               spin: float = DEFAULT_SPIN, reserve: bool = True,
               any_owner: bool = False) -> Self:
        """Create and initialise a new topic.

        The options name, path, sysv_key, mode, exist_ok, persist,
        recovery_interval, spin, reserve and any_owner are Ring.create()'s.

        Args:
            capacity: bytes of the log, rounded up to a power of two (at
                least 4096).  A message takes 16 bytes and its payload,
                rounded up to 16; a single message or batch at most half.
            history: a new subscriber first receives up to this many of the
                most recent messages still held (0: only what is published
                after it subscribed).

        Raises:
            RingExists, RingNoSpace, RingPermissionError, RingCorrupted: as
                Ring.create().
            RingWrongKind: (exist_ok) what exists is a ring.
            TypeError, ValueError: a bad argument.
        """
        cap, recovery_interval, spin = check_settings(capacity, recovery_interval, spin)
        history = _check_history(history)
        mode = _check_mode(mode)
        backing = backing_for(name, path, sysv_key)
        return cls._make(backing, topic_header_size(history) + cap,
                         (cap, recovery_interval, spin, history), mode=mode, exist_ok=exist_ok,
                         persist=persist, reserve=reserve, any_owner=any_owner)

    @classmethod
    def open(cls, name: Optional[str] = None, *, path: Optional[str] = None,
             sysv_key: Optional[int] = None, any_owner: bool = False) -> Self:
        """Attach to an existing topic by name, path or System V key (the
        rules of Ring.open()).

        Raises:
            RingNotFound: no such segment.
            RingWrongKind: a ring, not a topic (use Ring.open()); nothing is
                changed.
            RingCorrupted, RingPermissionError: as Ring.open().
        """
        return cls._open(name, path, sysv_key, any_owner)

    @classmethod
    def anonymous(cls, capacity: int = DEFAULT_CAPACITY, *, history: int = 0,
                  recovery_interval: float = DEFAULT_RECOVERY_INTERVAL,
                  spin: float = DEFAULT_SPIN) -> Self:
        """A topic with no name, shared with the children forked after it
        (each subscribes in its own process).  It cannot be pickled."""
        cap, recovery_interval, spin = check_settings(capacity, recovery_interval, spin)
        history = _check_history(history)
        return cls._anonymous(topic_header_size(history) + cap,
                              (cap, recovery_interval, spin, history))

    # -- subscribing ---------------------------------------------------------

    def subscribe(self, *, tethered: bool = True, stall_timeout: Optional[float] = None,
                  timeout: Optional[float] = None) -> Subscription:
        """A new subscriber: it receives every message published from now on
        (and first up to ``history`` recent ones).

        Args:
            tethered: True (the default): lossless, publishers wait for it
                when the log is full.  False: it never slows publishers; once
                overrun, its next get raises Lagged.
            stall_timeout: (tethered) seconds: a subscriber that takes
                nothing for that long while a publisher waits on it is
                untethered (it then sees Lagged once overrun).  None: never.
            timeout: how long to wait for the publishers' lock.

        Raises:
            RingError: 128 subscribers already.
            ShutDown: the topic was shut down (nothing more will come).
            ValueError: stall_timeout with tethered=False, or out of range;
                the topic is closed.
        """
        stall = 0.0
        if stall_timeout is not None:
            if not tethered:
                raise ValueError("stall_timeout is for tethered subscribers")
            stall = _check_number(stall_timeout, "stall_timeout", 0.001, 86400.0)
        sub: Subscription = self._subscribe(Subscription, tethered, stall, timeout)
        if self._subscriptions is None:
            self._subscriptions = weakref.WeakSet()
        self._subscriptions.add(sub)
        return sub

    # -- attributes and lifecycle --------------------------------------------

    def __repr__(self) -> str:
        where = self._backing.describe()
        if self.closed:
            return f"<Topic {where} closed>"
        return f"<Topic {where} capacity={self.capacity}>"

    def close(self) -> None:
        """Close the subscriptions made through this object, then detach
        (idempotent); the creating object also removes the name unless it
        was created with persist=True."""
        if self._subscriptions is not None:
            for sub in list(self._subscriptions):
                sub.close()
        super().close()


# -- Python objects -----------------------------------------------------------

Dumps = Callable[[Any], Buffer]
Loads = Callable[[bytes], Any]


def _too_large(size: int, limit: int) -> MessageTooLarge:
    return MessageTooLarge(
        f"an object of {size} bytes serialised exceeds the topic's max_message_size "
        f"({limit}): a topic has no side files for big items (a Queue has); make the "
        "topic's capacity at least twice the largest object")


class ObjectSubscription(Generic[T]):
    """A subscription of an ObjectTopic (ObjectTopic.subscribe()): get()
    returns objects; ``subscription`` is the Subscription underneath."""

    subscription: Subscription
    _codec: Codec

    def __init__(self) -> None:
        raise TypeError("use ObjectTopic.subscribe()")

    @classmethod
    def _of(cls, subscription: Subscription, codec: Codec) -> ObjectSubscription[T]:
        self: ObjectSubscription[T] = cls.__new__(cls)
        self.subscription = subscription
        self._codec = codec
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError("a Subscription cannot be pickled: it belongs to the process that "
                        "made it; pass the ObjectTopic and subscribe in the other process")

    def _decode(self, data: bytes) -> T:
        taken = self._codec.take(ViewSource(memoryview(data), None), allow_big=False)
        obj: T = taken.load()
        return obj

    def get(self, block: bool = True, timeout: Optional[float] = None) -> T:
        """The next object.

        Raises:
            Empty, ShutDown, Lagged: as Subscription.get().
            RingCorrupted: a message that is no record of this codec.
            Exception: whatever ``loads`` raises (the message is taken).
        """
        with self.subscription.view(timeout=timeout if block else 0) as view:
            taken = self._codec.take(ViewSource(view, None), allow_big=False)
        obj: T = taken.load()
        return obj

    def get_nowait(self) -> T:
        """get(block=False)."""
        return self.get(False)

    def get_many(self, max_messages: int = 1024, block: bool = True,
                 timeout: Optional[float] = None) -> list[T]:
        """Wait for one object, then take up to ``max_messages`` ready ones."""
        batch = self.subscription.get_many(max_messages, None, block, timeout)
        return [self._decode(data) for data in batch]

    def __iter__(self) -> Iterator[T]:
        """get() until the topic is shut down and drained."""
        return until_shut_down(self.get)

    @property
    def tethered(self) -> bool:
        return self.subscription.tethered

    @property
    def lag(self) -> int:
        return self.subscription.lag

    @property
    def closed(self) -> bool:
        return self.subscription.closed

    def close(self) -> None:
        """Leave the topic (idempotent)."""
        self.subscription.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _rebuild_object_topic(topic: Topic, dumps: Dumps, loads: Loads) -> ObjectTopic[Any]:
    self: ObjectTopic[Any] = ObjectTopic.__new__(ObjectTopic)
    self.topic = topic
    self._codec = Codec(dumps, loads)
    self._dumps, self._loads = dumps, loads
    return self


class ObjectTopic(Generic[T]):
    """A Topic of Python objects, serialised as a Queue's items (pickle
    protocol 5, NumPy arrays and other buffers out of band, or a custom
    ``dumps``/``loads``).  An object must fit in one message
    (max_message_size): unlike a Queue, a topic has no side files.

    ``ObjectTopic.create(...)``/``open(...)`` take Topic's arguments and
    ``dumps``, ``loads``; ``topic`` is the Topic underneath.
    """

    topic: Topic
    _codec: Codec
    _dumps: Dumps
    _loads: Loads

    def __init__(self) -> None:
        raise TypeError("use ObjectTopic.create(), ObjectTopic.open() or "
                        "ObjectTopic.anonymous()")

    @classmethod
    def _around(cls, topic: Topic, dumps: Dumps, loads: Loads) -> ObjectTopic[Any]:
        return _rebuild_object_topic(topic, dumps, loads)

    @classmethod
    def create(cls, name: Optional[str] = None, capacity: int = DEFAULT_CAPACITY, *,
               dumps: Dumps = pickle.dumps, loads: Loads = pickle.loads,
               **options: Any) -> ObjectTopic[Any]:
        """``Topic.create(name, capacity, **options)`` carrying objects."""
        return cls._around(Topic.create(name, capacity, **options), dumps, loads)

    @classmethod
    def open(cls, name: Optional[str] = None, *, dumps: Dumps = pickle.dumps,
             loads: Loads = pickle.loads, **options: Any) -> ObjectTopic[Any]:
        """``Topic.open(name, **options)`` carrying objects."""
        return cls._around(Topic.open(name, **options), dumps, loads)

    @classmethod
    def anonymous(cls, capacity: int = DEFAULT_CAPACITY, *, dumps: Dumps = pickle.dumps,
                  loads: Loads = pickle.loads, **options: Any) -> ObjectTopic[Any]:
        """``Topic.anonymous(capacity, **options)`` carrying objects."""
        return cls._around(Topic.anonymous(capacity, **options), dumps, loads)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_object_topic, (self.topic, self._dumps, self._loads))

    def __repr__(self) -> str:
        return f"<ObjectTopic of {self.topic!r}>"

    @property
    def name(self) -> Optional[str]:
        return self.topic.name

    @property
    def max_message_size(self) -> int:
        return self.topic.max_message_size

    def _record(self, obj: Any) -> Record:
        record = self._codec.encode(obj)
        size = record.size if isinstance(record, Frame) else memoryview(record).nbytes
        if size > self.topic.max_message_size:
            raise _too_large(size, self.topic.max_message_size)
        return record

    def publish(self, obj: T, block: bool = True, timeout: Optional[float] = None) -> None:
        """Publish one object (serialised before any lock is taken; an
        array's bytes copied once, straight into the log).

        Raises:
            MessageTooLarge: larger than max_message_size serialised.
            Full, ShutDown: as Topic.publish().
            Exception: whatever ``dumps`` raises (nothing published).
        """
        record = self._record(obj)
        if isinstance(record, Frame):
            with self.topic.reserve(record.size, timeout=timeout if block else 0) as space:
                record.write_to(space)
        else:
            self.topic.publish(record, block, timeout)

    def publish_nowait(self, obj: T) -> None:
        """publish(obj, block=False)."""
        self.publish(obj, False)

    def publish_many(self, objs: Iterable[T], block: bool = True,
                     timeout: Optional[float] = None) -> None:
        """Publish a batch of objects, all or nothing, contiguous."""
        batch: list[Buffer] = []
        for obj in objs:
            record = self._record(obj)
            if isinstance(record, Frame):
                space = bytearray(record.size)
                record.write_to(space)
                batch.append(space)
            else:
                batch.append(record)
        self.topic.publish_many(batch, block, timeout)

    def subscribe(self, *, tethered: bool = True, stall_timeout: Optional[float] = None,
                  timeout: Optional[float] = None) -> ObjectSubscription[T]:
        """As Topic.subscribe(); get() of it returns objects."""
        return ObjectSubscription._of(self.topic.subscribe(
            tethered=tethered, stall_timeout=stall_timeout, timeout=timeout), self._codec)

    def shutdown(self) -> None:
        self.topic.shutdown()

    def stats(self) -> dict[str, Any]:
        return self.topic.stats()

    def subscribers(self) -> list[SubscriberInfo]:
        return self.topic.subscribers()

    def close(self) -> None:
        self.topic.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
