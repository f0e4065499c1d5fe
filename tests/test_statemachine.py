"""A hypothesis state machine: a small Ring against a model of its bytes.

The model lays records out as the ring must (docs/FORMAT.md: a PADDING
record where a record would cross the end; docs/DESIGN.md "Early wraps": a
batch of 32 KiB or more goes to the next lap's start when the room there
for it and two more is free), so it knows the head, the tail and every
counter exactly. Every message is unique, so a get that returns anything but the model's oldest
message (lost, duplicated, reordered, torn by the wrap) fails, and a put
must raise Full exactly when the model says it does not fit.

Each step goes through one of two objects on the same segment, the creator
and an opener: each keeps its own cache of the other side's counter, and a
stale cache must never lose or invent a message. Late in a run the ring may
be shut down: puts then raise ShutDown, gets drain, then raise ShutDown.
"""

from collections import deque

import hypothesis.strategies as st
from conftest import unique_ring_name
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ringshm import Empty, Full, MessageTooLarge, Ring, ShutDown

CAPACITY = 4096
HEADER = 8
# Contract: half the ring, so that an empty ring takes any single message.
MAX_SIZE = CAPACITY // 2 - HEADER
EARLY_WRAP_MIN_BYTES = 32 * 1024   # ringshm/_ring.pyx
EARLY_WRAP_ROOM = 3                # the batch and two more fit at the lap start


def record_size(n):
    """DESIGN: an 8-byte header, then the payload padded to 8 bytes."""
    return HEADER + (n + 7) // 8 * 8


# Small ones for many records per lap, middling ones so that records land on
# the wrap, and ones at max_message_size (and a little over: MessageTooLarge).
sizes = st.one_of(
    st.integers(0, 24), st.integers(0, 600), st.integers(900, MAX_SIZE),
    st.integers(MAX_SIZE - 24, MAX_SIZE + 8),
)
# A 256 KiB ring: records from a few bytes to max_message_size (128 KiB), so
# that batches of 32 KiB and more meet a lap start that is free or not.
BIG_CAPACITY = 256 << 10
BIG_MAX_SIZE = BIG_CAPACITY // 2 - HEADER
big_sizes = st.one_of(
    st.integers(0, 600), st.integers(20_000, 40_000), st.integers(30_000, BIG_MAX_SIZE),
    st.integers(BIG_MAX_SIZE - 24, BIG_MAX_SIZE + 8),
)
timeouts = st.sampled_from([{"block": False}, {"timeout": 0}, {"timeout": 0.001}])
handles = st.sampled_from([0, 1])   # the creator or the opener


class RingMachine(RuleBasedStateMachine):
    max_messages = 0
    capacity = CAPACITY
    max_size = MAX_SIZE
    sizes = sizes

    def __init__(self):
        super().__init__()
        creator = Ring.create(unique_ring_name(), capacity=self.capacity,
                              max_messages=self.max_messages)
        self.rings = (creator, Ring.open(creator.name))
        # The records between tail and head, oldest first: (message, span),
        # message None for a PADDING record.
        self.records = deque()
        self.head = self.tail = 0
        self.put_count = self.put_bytes = self.got_count = self.got_bytes = 0
        self.counter = 0
        self.shut = False
        assert creator.max_message_size == self.max_size

    def teardown(self):
        for ring in reversed(self.rings):
            ring.close()

    # ------------------------------------------------------------ the model

    def message(self, size):
        """A payload no other message of this run has (for size >= 4)."""
        self.counter += 1
        stamp = self.counter.to_bytes(4, "little")
        return (stamp * (size // 4 + 1))[:size]

    @property
    def model(self):
        """The messages in the ring, oldest first."""
        return [m for m, _ in self.records if m is not None]

    def layout(self, payload_sizes):
        """Where the ring puts a batch of these sizes now: (index of the
        record the padding goes before, padding bytes, bytes the head
        moves), or None when it does not fit (Full)."""
        cap = self.capacity
        spans = [record_size(n) for n in payload_sizes]
        total = sum(spans)
        if self.max_messages and len(self.model) + len(spans) > self.max_messages:
            return None
        pos = self.head % cap
        pad = cap - pos
        if (total >= EARLY_WRAP_MIN_BYTES
                and self.head + pad + EARLY_WRAP_ROOM * total - self.tail <= cap):
            return 0, pad, pad + total   # the early wrap
        wrap, need, at = (None, 0), 0, pos
        for index, span in enumerate(spans):
            if wrap[0] is None and at + span > cap:
                wrap = (index, cap - at)   # an ordinary wrap
                need += cap - at
                at = 0
            at += span
            need += span
        if self.head - self.tail + need > cap:
            return None
        return wrap[0], wrap[1], need

    def apply(self, messages, plan):
        """The batch went in as `plan` (layout()) said."""
        wrap_index, pad, need = plan
        for index, message in enumerate(messages):
            if index == wrap_index:
                self.records.append((None, pad))
            self.records.append((message, record_size(len(message))))
        self.head += need
        self.put_count += len(messages)
        self.put_bytes += sum(len(m) for m in messages)

    def skip_padding(self):
        # A consumer that looks for a record skips (and hands back) padding.
        while self.records and self.records[0][0] is None:
            self.tail += self.records.popleft()[1]

    def take(self):
        """The oldest message, consumed in the model."""
        message, span = self.records.popleft()
        self.tail += span
        self.got_count += 1
        self.got_bytes += len(message)
        return message

    def expect_nothing(self, error):
        """A get raised ``error``: right only when the model is empty, and
        it must say ShutDown rather than Empty once the ring is shut down."""
        assert not self.model, f"{error!r} while the model holds messages"
        assert isinstance(error, ShutDown if self.shut else Empty), repr(error)

    def expect_get(self, got):
        self.skip_padding()
        assert self.records, f"got {got[:16]!r}... from a ring the model says is empty"
        expected = self.take()
        assert got == expected, (
            f"got {len(got)} bytes {got[:16]!r}, expected {len(expected)} "
            f"bytes {expected[:16]!r}")

    # ---------------------------------------------------------------- puts

    def try_put(self, put, messages, sizes=None):
        """Run put(), which publishes ``messages`` (writing ``sizes``, their
        sizes unless given): it must succeed exactly when the model lays
        them out, and a Full must leave the ring as it was (the invariants
        check that)."""
        if sizes is None:
            sizes = [len(m) for m in messages]
        if max(sizes, default=0) > self.max_size:
            try:
                put()
            except (MessageTooLarge, ShutDown) as error:
                assert self.shut or isinstance(error, MessageTooLarge)
                return
            raise AssertionError(f"a message of {max(sizes)} bytes was accepted")
        if self.shut:
            try:
                put()
            except ShutDown:
                return
            # An empty batch puts nothing: no need to refuse it.
            assert not sizes, "a put after shutdown() went in"
            return
        plan = self.layout(sizes)
        try:
            put()
        except Full:
            assert plan is None, (
                f"Full for {sizes} with head {self.head}, tail {self.tail}")
            return
        assert plan is not None, f"{sizes} went in with head {self.head}, tail {self.tail}"
        if messages:
            self.apply(messages, plan)

    @rule(handle=handles, data=st.data(), how=timeouts)
    def put(self, handle, data, how):
        message = self.message(data.draw(self.sizes))
        self.try_put(lambda: self.rings[handle].put(message, **how), [message])

    @rule(handle=handles, data=st.data())
    def put_nowait(self, handle, data):
        message = self.message(data.draw(self.sizes))
        self.try_put(lambda: self.rings[handle].put_nowait(message), [message])

    @rule(handle=handles, data=st.data(), how=timeouts)
    def put_many(self, handle, data, how):
        ring = self.rings[handle]
        batch = data.draw(st.lists(self.sizes, max_size=6))
        messages = [self.message(n) for n in batch]
        # Contract: a batch, like a message, takes at most half the ring.
        never_fits = sum(record_size(n) for n in batch) > self.capacity // 2 or (
            self.max_messages and len(batch) > self.max_messages) or (
            max(batch, default=0) > self.max_size)
        if never_fits:
            try:
                ring.put_many(messages, **how)
            except (MessageTooLarge, ShutDown) as error:
                assert self.shut or isinstance(error, MessageTooLarge)
                return
            raise AssertionError("a batch that can never fit was accepted")
        self.try_put(lambda: ring.put_many(messages, **how), messages)

    @rule(handle=handles, data=st.data(), keep=st.booleans())
    def reserve(self, handle, data, keep):
        size = data.draw(self.sizes)
        message = self.message(size)

        def write():
            try:
                with self.rings[handle].reserve(size, timeout=0) as buffer:
                    assert len(buffer) == size
                    buffer[:] = message
                    if not keep:
                        raise LookupError   # discards the reservation
            except LookupError:
                pass

        self.try_put(write, [message] if keep else [], [size])

    @precondition(lambda self: not self.shut)
    @rule(handle=handles)
    def full_agrees_with_a_one_byte_put(self, handle):
        # Single-threaded, full() is exact: "a 1-byte put would not fit now".
        ring = self.rings[handle]
        full = ring.full()
        message = self.message(1)
        try:
            ring.put_nowait(message)
        except Full:
            assert full, "full() was False but a 1-byte put raised Full"
            return
        assert not full, "full() was True but a 1-byte put went in"
        self.apply([message], self.layout([1]))

    # ---------------------------------------------------------------- gets

    @precondition(lambda self: self.counter > 20 and not self.shut)
    @rule(handle=handles)
    def shutdown(self, handle):
        self.rings[handle].shutdown()
        self.shut = True

    @rule(handle=handles, how=timeouts)
    def get(self, handle, how):
        self.skip_padding()   # whether a message follows or not
        try:
            got = self.rings[handle].get(**how)
        except (Empty, ShutDown) as error:
            self.expect_nothing(error)
            return
        self.expect_get(got)

    @rule(handle=handles, slack=st.integers(-3, 40))
    def get_into(self, handle, slack):
        self.skip_padding()
        buffer = bytearray(max(0, len(self.model[0]) + slack) if self.model else 8)
        try:
            length = self.rings[handle].get_into(buffer, block=False)
        except (Empty, ShutDown) as error:
            self.expect_nothing(error)
            return
        except ValueError:
            # Only a too-small buffer, and the message stays.
            assert self.model and len(buffer) < len(self.model[0])
            return
        assert len(buffer) >= length
        self.expect_get(bytes(buffer[:length]))

    @rule(handle=handles, keep=st.booleans())
    def view(self, handle, keep):
        self.skip_padding()
        try:
            with self.rings[handle].view(timeout=0) as view:
                got = bytes(view)
                if not keep:
                    raise LookupError   # leaves the message in the ring
        except (Empty, ShutDown) as error:
            self.expect_nothing(error)
            return
        except LookupError:
            assert self.model and got == self.model[0]
            return
        self.expect_get(got)

    @rule(handle=handles, max_messages=st.integers(1, 8),
          max_bytes=st.none() | st.integers(1, 5000), how=timeouts)
    def get_many(self, handle, max_messages, max_bytes, how):
        # Single-threaded every message is ready: get_many takes as many as
        # the limits allow, and always at least one; it skips padding after
        # a message unless it has all it may take: max_messages of them, or
        # more bytes than max_bytes (a first message over the limit).
        self.skip_padding()
        expected, total = [], 0
        records = list(self.records)
        for message, _ in records:
            if message is None:
                continue
            if len(expected) == max_messages:
                break
            if expected and max_bytes is not None and total + len(message) > max_bytes:
                break
            expected.append(message)
            total += len(message)
        try:
            got = self.rings[handle].get_many(max_messages=max_messages, max_bytes=max_bytes,
                                              **how)
        except (Empty, ShutDown) as error:
            self.expect_nothing(error)
            return
        assert [len(m) for m in got] == [len(m) for m in expected]
        taken = 0
        for index, message in enumerate(got):
            self.expect_get(message)
            taken += len(message)
            if index + 1 < max_messages and (max_bytes is None or taken <= max_bytes):
                self.skip_padding()

    # ---------------------------------------------------------- invariants

    @invariant()
    def counts_match(self):
        for ring in self.rings:
            assert len(ring) == ring.qsize() == len(self.model)
            assert ring.empty() == (not self.model)
            assert ring.is_shutdown == self.shut

    @invariant()
    def positions_and_counters_match(self):
        stats = self.rings[0].stats()
        assert (stats["head"], stats["tail"]) == (self.head, self.tail)
        assert stats["used_bytes"] == self.head - self.tail
        assert stats["messages"] == len(self.model)
        assert (stats["messages_put"], stats["bytes_put"]) == (self.put_count, self.put_bytes)
        assert (stats["messages_got"], stats["bytes_got"]) == (self.got_count, self.got_bytes)


class BigRecordRingMachine(RingMachine):
    """The same in a 256 KiB ring with records up to 128 KiB: batches of 32
    KiB and more wrap early."""

    capacity = BIG_CAPACITY
    max_size = BIG_MAX_SIZE
    sizes = big_sizes


class BoundedRingMachine(RingMachine):
    """The same with max_messages, as Queue(maxsize=3) uses it."""

    max_messages = 3

    @precondition(lambda self: len(self.model) == self.max_messages and not self.shut)
    @rule(handle=handles)
    def put_beyond_max_messages_is_full(self, handle):
        try:
            self.rings[handle].put_nowait(b"")
        except Full:
            return
        raise AssertionError("put beyond max_messages went in")


CI_SETTINGS = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestRing = RingMachine.TestCase
TestRing.settings = CI_SETTINGS
TestBoundedRing = BoundedRingMachine.TestCase
TestBoundedRing.settings = CI_SETTINGS
TestBigRecordRing = BigRecordRingMachine.TestCase
TestBigRecordRing.settings = CI_SETTINGS
