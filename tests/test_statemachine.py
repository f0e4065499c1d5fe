"""A hypothesis state machine: a small Ring against a collections.deque.

Every message is unique, so a get that returns anything but the model's
oldest message (lost, duplicated, reordered, torn by the wrap) fails. Exact
fullness depends on where the wrap falls, so a non-blocking put may raise
Full only when the model says it might not fit; see certainly_fits().

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


def record_size(n):
    """DESIGN: an 8-byte header, then the payload padded to 8 bytes."""
    return HEADER + (n + 7) // 8 * 8


# Small ones for many records per lap, middling ones so that records land on
# the wrap, and ones at max_message_size (and a little over: MessageTooLarge).
sizes = st.one_of(
    st.integers(0, 24), st.integers(0, 600), st.integers(900, MAX_SIZE),
    st.integers(MAX_SIZE - 24, MAX_SIZE + 8),
)
timeouts = st.sampled_from([{"block": False}, {"timeout": 0}, {"timeout": 0.001}])
handles = st.sampled_from([0, 1])   # the creator or the opener


class RingMachine(RuleBasedStateMachine):
    max_messages = 0

    def __init__(self):
        super().__init__()
        creator = Ring.create(unique_ring_name(), capacity=CAPACITY,
                              max_messages=self.max_messages)
        self.rings = (creator, Ring.open(creator.name))
        self.model = deque()
        self.counter = 0
        self.shut = False
        assert creator.max_message_size == MAX_SIZE

    def teardown(self):
        for ring in reversed(self.rings):
            ring.close()

    # ------------------------------------------------------------ the model

    def message(self, size):
        """A payload no other message of this run has (for size >= 4)."""
        self.counter += 1
        stamp = self.counter.to_bytes(4, "little")
        return (stamp * (size // 4 + 1))[:size]

    def model_bytes(self):
        return sum(record_size(len(m)) for m in self.model)

    def certainly_fits(self, payload_sizes):
        """True when messages of these sizes fit now wherever head stands.

        Between tail and head there is at most one PADDING record (the span
        crosses the end of the data area at most once), and it is shorter
        than the record that made it: the model's largest record if that one
        is still in the ring, or the largest new record if the new ones wrap.
        Only one of the two can exist, so the worst case adds the larger.
        """
        records = [record_size(n) for n in payload_sizes]
        if self.max_messages and len(self.model) + len(records) > self.max_messages:
            return False
        largest = max(records + [record_size(len(m)) for m in self.model], default=0)
        return self.model_bytes() + sum(records) + largest - HEADER <= CAPACITY

    def expect_nothing(self, error):
        """A get raised ``error``: right only when the model is empty, and
        it must say ShutDown rather than Empty once the ring is shut down."""
        assert not self.model, f"{error!r} while the model holds messages"
        assert isinstance(error, ShutDown if self.shut else Empty), repr(error)

    def expect_get(self, got):
        assert self.model, f"got {got[:16]!r}... from a ring the model says is empty"
        expected = self.model.popleft()
        assert got == expected, (
            f"got {len(got)} bytes {got[:16]!r}, expected {len(expected)} "
            f"bytes {expected[:16]!r}")

    # ---------------------------------------------------------------- puts

    def try_put(self, put, messages, sizes=None):
        """Run put(), which publishes ``messages`` (writing ``sizes``, their
        sizes unless given): it must succeed when they certainly fit, and a
        Full must leave the ring as it was (the invariants check that)."""
        if sizes is None:
            sizes = [len(m) for m in messages]
        if max(sizes, default=0) > MAX_SIZE:
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
        must_fit = self.certainly_fits(sizes)
        try:
            put()
        except Full:
            assert not must_fit, (
                f"Full for {sizes} with {self.model_bytes()} bytes in the ring")
            return
        self.model.extend(messages)

    @rule(handle=handles, size=sizes, how=timeouts)
    def put(self, handle, size, how):
        message = self.message(size)
        self.try_put(lambda: self.rings[handle].put(message, **how), [message])

    @rule(handle=handles, size=sizes)
    def put_nowait(self, handle, size):
        message = self.message(size)
        self.try_put(lambda: self.rings[handle].put_nowait(message), [message])

    @rule(handle=handles, batch=st.lists(sizes, max_size=6), how=timeouts)
    def put_many(self, handle, batch, how):
        ring = self.rings[handle]
        messages = [self.message(n) for n in batch]
        # Contract: a batch, like a message, takes at most half the ring.
        never_fits = sum(record_size(n) for n in batch) > CAPACITY // 2 or (
            self.max_messages and len(batch) > self.max_messages) or (
            max(batch, default=0) > MAX_SIZE)
        if never_fits:
            try:
                ring.put_many(messages, **how)
            except (MessageTooLarge, ShutDown) as error:
                assert self.shut or isinstance(error, MessageTooLarge)
                return
            raise AssertionError("a batch that can never fit was accepted")
        self.try_put(lambda: ring.put_many(messages, **how), messages)

    @rule(handle=handles, size=sizes, keep=st.booleans())
    def reserve(self, handle, size, keep):
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
        self.model.append(message)

    # ---------------------------------------------------------------- gets

    @precondition(lambda self: self.counter > 20 and not self.shut)
    @rule(handle=handles)
    def shutdown(self, handle):
        self.rings[handle].shutdown()
        self.shut = True

    @rule(handle=handles, how=timeouts)
    def get(self, handle, how):
        try:
            got = self.rings[handle].get(**how)
        except (Empty, ShutDown) as error:
            self.expect_nothing(error)
            return
        self.expect_get(got)

    @rule(handle=handles, slack=st.integers(-3, 40))
    def get_into(self, handle, slack):
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
        # the limits allow, and always at least one.
        expected, total = [], 0
        for message in self.model:
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
        for message in got:
            self.expect_get(message)

    # ---------------------------------------------------------- invariants

    @invariant()
    def counts_match(self):
        for ring in self.rings:
            assert len(ring) == ring.qsize() == len(self.model)
            assert ring.empty() == (not self.model)
            assert ring.is_shutdown == self.shut

    @invariant()
    def used_bytes_match(self):
        stats = self.rings[0].stats()
        assert stats["messages"] == len(self.model)
        # What the model holds, plus at most one PADDING record shorter than
        # the largest record in the ring.
        low = self.model_bytes()
        high = low + max((record_size(len(m)) - HEADER for m in self.model), default=0)
        assert low <= stats["used_bytes"] <= high, (stats["used_bytes"], low, high)


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
