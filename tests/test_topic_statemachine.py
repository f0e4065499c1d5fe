"""A hypothesis state machine: a small topic, two publishers, tethered and
untethered subscribers, against a model of the log's bytes.

The model lays records out as the topic must (libringshm/src/topic.c): a
16-byte header and the payload, 16-aligned; a PADDING record where a record
would cross the end of the lap; a publisher that needs room frees the
oldest records, as far as the lowest live tethered subscriber allows (its
position: the end of the last record it took), else Full.  So it knows,
for every subscriber, exactly what its next get must return, and, for an
untethered one that was overrun, exactly how many messages its Lagged must
report (the sequence number of the oldest record held minus the one it
expected), after which it continues from there.  Every message is unique.

Two Topic objects on one segment publish (the creator and an opener);
subscribers are made through either.  Late in a run the topic may be shut
down: publishing raises ShutDown, every subscriber drains, then ShutDown.
"""

from collections import deque

import hypothesis.strategies as st
from conftest import unique_ring_name
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ringshm import Empty, Full, Lagged, MessageTooLarge, ShutDown, Topic

CAPACITY = 4096
HEADER = 16
MAX_SIZE = CAPACITY // 2 - HEADER
MAX_SUBSCRIBERS = 6


def record_span(n):
    return (HEADER + n + 15) // 16 * 16


sizes = st.one_of(st.integers(8, 64), st.integers(8, 600), st.integers(1200, MAX_SIZE),
                  st.integers(MAX_SIZE - 8, MAX_SIZE + 8), st.integers(0, 7))
handles = st.sampled_from([0, 1])
waits = st.sampled_from([{"block": False}, {"timeout": 0}])


def raise_(error):
    raise error


class Record:
    __slots__ = ("start", "span", "seq", "message")

    def __init__(self, start, span, seq, message):
        self.start, self.span, self.seq, self.message = start, span, seq, message


class Sub:
    """A subscription and the model's view of it."""

    def __init__(self, handle, tethered, position, expected):
        self.handle = handle
        self.tethered = tethered
        self.position = position   # the entry's: the end of the last record taken
        self.expected = expected   # the sequence number it expects next


class TopicMachine(RuleBasedStateMachine):
    history = 0

    def __init__(self):
        super().__init__()
        creator = Topic.create(unique_ring_name(), CAPACITY, history=self.history)
        self.topics = (creator, Topic.open(creator.name))
        self.records = deque()   # Record, oldest first; seq None: PADDING
        self.head = self.tail = 0
        self.next_seq = 0
        self.counter = 0
        self.subs = []
        self.steps = 0
        self.shut = False
        assert creator.max_message_size == MAX_SIZE

    def teardown(self):
        for sub in self.subs:
            sub.handle.close()
        for topic in reversed(self.topics):
            topic.close()

    # ------------------------------------------------------------ the model

    def message(self, publisher, size):
        self.counter += 1
        stamp = bytes([publisher]) + self.counter.to_bytes(7, "little")
        return (stamp * (size // 8 + 1))[:size]

    def limit(self):
        """The lowest position of a tethered subscriber (None: none)."""
        positions = [s.position for s in self.subs if s.tethered]
        return min(positions, default=None)

    def lay_out(self, payload_sizes):
        """(records to append as (start, span, is_padding), the new tail)
        for a batch published now, or None when it must wait (Full)."""
        cap = CAPACITY
        at = self.head
        placed = []
        for n in payload_sizes:
            span = record_span(n)
            if at % cap + span > cap:
                pad = cap - at % cap
                placed.append((at, pad, True))
                at += pad
            placed.append((at, span, False))
            at += span
        need = at - self.head
        tail = self.tail
        if need > cap - (self.head - tail):
            want = self.head + need - cap
            for record in self.records:
                if tail >= want:
                    break
                tail += record.span
            limit = self.limit()
            if limit is not None and tail > limit:
                return None
        return placed, tail

    def apply(self, messages, plan):
        placed, tail = plan
        while self.records and self.records[0].start < tail:
            self.records.popleft()
        assert not self.records or self.records[0].start == tail
        self.tail = tail
        index = 0
        for start, span, padding in placed:
            if padding:
                self.records.append(Record(start, span, None, None))
            else:
                self.records.append(Record(start, span, self.next_seq, messages[index]))
                self.next_seq += 1
                index += 1
        self.head = placed[-1][0] + placed[-1][1]

    def try_publish(self, publish, messages):
        self.steps += 1
        sizes_ = [len(m) for m in messages]
        too_large = max(sizes_, default=0) > MAX_SIZE or \
            sum(record_span(n) for n in sizes_) > CAPACITY // 2
        if too_large:
            try:
                publish()
            except (MessageTooLarge, ShutDown) as error:
                assert self.shut or isinstance(error, MessageTooLarge)
                return
            raise AssertionError(f"a batch of {sizes_} was accepted")
        if self.shut:
            try:
                publish()
            except ShutDown:
                return
            assert not messages, "a publish after shutdown() went in"
            return
        plan = self.lay_out(sizes_) if messages else None
        try:
            publish()
        except Full:
            assert plan is None, (f"Full for {sizes_}: head {self.head}, tail {self.tail}, "
                                  f"limit {self.limit()}")
            return
        if messages:
            assert plan is not None, (f"{sizes_} went in: head {self.head}, tail {self.tail}, "
                                      f"limit {self.limit()}")
            self.apply(messages, plan)

    def next_for(self, sub):
        """What sub's next get gives: ("message", Record), ("lagged", missed,
        Record) or ("none",)."""
        position = sub.position
        if position < self.tail:
            assert not sub.tethered, "a tethered subscriber was overrun"
            position = self.tail
        for record in self.records:
            if record.start < position or record.seq is None:
                continue
            if record.seq != sub.expected:
                assert record.seq > sub.expected
                return ("lagged", record.seq - sub.expected, record)
            return ("message", record)
        return ("none",)

    def expect_receive(self, sub, receive):
        """Run receive() (one message as bytes) and check it against the model."""
        self.steps += 1
        outcome = self.next_for(sub)
        try:
            got = receive()
        except Lagged as error:
            assert outcome[0] == "lagged", f"Lagged({error.missed}) where the model has {outcome}"
            assert error.missed == outcome[1], (error.missed, outcome[1])
            sub.expected = outcome[2].seq
            sub.position = outcome[2].start
            return
        except (Empty, ShutDown) as error:
            assert outcome[0] == "none", f"{error!r} where the model has {outcome[0]}"
            assert isinstance(error, ShutDown if self.shut else Empty), repr(error)
            return
        assert outcome[0] == "message", f"got {got[:16]!r} where the model has {outcome}"
        record = outcome[1]
        assert got == record.message, (got[:16], record.message[:16])
        sub.expected += 1
        sub.position = record.start + record.span

    # ---------------------------------------------------------------- rules

    @rule(publisher=handles, data=st.data(), how=waits)
    def publish(self, publisher, data, how):
        message = self.message(publisher, data.draw(sizes))
        self.try_publish(lambda: self.topics[publisher].publish(message, **how), [message])

    @rule(publisher=handles, data=st.data())
    def publish_nowait(self, publisher, data):
        message = self.message(publisher, data.draw(sizes))
        self.try_publish(lambda: self.topics[publisher].publish_nowait(message), [message])

    @rule(publisher=handles, data=st.data())
    def publish_many(self, publisher, data):
        batch = [self.message(publisher, n)
                 for n in data.draw(st.lists(st.integers(0, 700), max_size=4))]
        self.try_publish(lambda: self.topics[publisher].publish_many(batch, timeout=0), batch)

    @rule(publisher=handles, data=st.data())
    def reserve(self, publisher, data):
        message = self.message(publisher, data.draw(sizes))

        def publish():
            with self.topics[publisher].reserve(len(message), timeout=0) as space:
                space[:] = message

        self.try_publish(publish, [message])

    @precondition(lambda self: len(self.subs) < MAX_SUBSCRIBERS)
    @rule(via=handles, tethered=st.booleans())
    def subscribe(self, via, tethered):
        if self.shut:
            try:
                self.topics[via].subscribe(tethered=tethered, timeout=5)
            except ShutDown:
                return
            raise AssertionError("subscribe() after shutdown()")
        handle = self.topics[via].subscribe(tethered=tethered, timeout=5)
        k = min(self.history, self.next_seq - self.oldest())
        if k == 0:
            position, expected = self.head, self.next_seq
        else:
            record = next(r for r in self.records if r.seq == self.next_seq - k)
            position, expected = record.start, record.seq
        self.subs.append(Sub(handle, tethered, position, expected))

    def oldest(self):
        return next((r.seq for r in self.records if r.seq is not None), self.next_seq)

    @precondition(lambda self: self.subs)
    @rule(data=st.data())
    def unsubscribe(self, data):
        sub = self.subs.pop(data.draw(st.integers(0, len(self.subs) - 1)))
        sub.handle.close()

    @precondition(lambda self: self.subs)
    @rule(data=st.data())
    def get(self, data):
        sub = data.draw(st.sampled_from(self.subs))
        self.expect_receive(sub, lambda: sub.handle.get(timeout=0))

    @precondition(lambda self: self.subs)
    @rule(data=st.data())
    def get_nowait(self, data):
        sub = data.draw(st.sampled_from(self.subs))
        self.expect_receive(sub, sub.handle.get_nowait)

    @precondition(lambda self: self.subs)
    @rule(data=st.data())
    def view(self, data):
        sub = data.draw(st.sampled_from(self.subs))

        def receive():
            with sub.handle.view(timeout=0) as view:
                return bytes(view)

        self.expect_receive(sub, receive)

    @precondition(lambda self: self.subs)
    @rule(data=st.data())
    def get_into(self, data):
        sub = data.draw(st.sampled_from(self.subs))
        buffer = bytearray(MAX_SIZE)

        def receive():
            return bytes(buffer[:sub.handle.get_into(buffer, timeout=0)])

        self.expect_receive(sub, receive)

    @precondition(lambda self: self.subs)
    @rule(data=st.data(), most=st.integers(1, 50))
    def get_many(self, data, most):
        sub = data.draw(st.sampled_from(self.subs))
        try:
            batch = sub.handle.get_many(max_messages=most, max_bytes=None, block=False)
        except (Lagged, Empty, ShutDown) as error:
            self.expect_receive(sub, lambda error=error: raise_(error))
            return
        assert 1 <= len(batch) <= most
        for message in batch:
            self.expect_receive(sub, lambda message=message: message)
        # Nothing ready was left behind (unless the limit stopped it).
        if len(batch) < most:
            assert self.next_for(sub)[0] == "none"

    @precondition(lambda self: self.steps > 30 and not self.shut)
    @rule(via=handles)
    def shutdown(self, via):
        self.topics[via].shutdown()
        self.shut = True

    # ----------------------------------------------------------- invariants

    @invariant()
    def counters_match(self):
        stats = self.topics[0].stats()
        assert (stats["head"], stats["tail"]) == (self.head, self.tail)
        assert stats["published"] == self.next_seq
        assert stats["subscribers"] == len(self.subs)
        assert stats["tethered"] == sum(s.tethered for s in self.subs)

    @invariant()
    def lags_match(self):
        for sub in self.subs:
            assert sub.handle.lag == self.next_seq - sub.expected


class TopicWithHistoryMachine(TopicMachine):
    history = 5


TestTopicMachine = TopicMachine.TestCase
TestTopicMachine.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
TestTopicWithHistoryMachine = TopicWithHistoryMachine.TestCase
TestTopicWithHistoryMachine.settings = settings(max_examples=60, stateful_step_count=60,
                                                deadline=None)
