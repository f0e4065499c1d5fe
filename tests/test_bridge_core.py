"""The core's additions for the bridges (issue 11): the window look
(_peek_many) and its consumption (_consume), the tag stored atomically with
a put (put_many(tag=), _last_tag), the ring's identity and the bridges'
counters.  The kill tests step a child through the call with ptrace and
SIGKILL it after every instruction of its locked stretch (test_counters.py's
machinery), then check that the counters and the tag tell exactly what was
published."""

import pytest
from faultkit import RawHeader
from test_counters import (
    LATE,
    MESSAGES,
    MINE,
    check_counters,
    drain,
    kill_at,
    kill_points,
    survey,
)

from ringshm import Ring, RingError

TAG_POSITION = 128 + 64   # the producer side's tag block (docs/FORMAT.md)
TAG_LAST = TAG_POSITION + 16
A_TAG = 7


def consume_child(name):
    # Nothing is consumed yet: the oldest message is number 0.
    Ring.open(name)._consume(1, 0, timeout=30)


def tagged_producer_child(name):
    Ring.open(name).put_many([LATE], timeout=30, tag=A_TAG)


# -- the window --------------------------------------------------------------

def test_peek_many_numbers_and_copies_without_consuming(make_ring):
    ring = make_ring(capacity=1 << 16)
    for i in range(10):
        ring.put(b"m%d" % i)
    assert ring._peek_many(0, 3) == (0, [b"m0", b"m1", b"m2"])
    assert ring._peek_many(8, 100) == (8, [b"m8", b"m9"])
    assert ring._peek_many(10, 5) == (10, [])
    # The byte limit stops before the message that would pass it, never
    # before the first.
    assert ring._peek_many(3, 100, max_bytes=5) == (3, [b"m3", b"m4"])
    assert ring._peek_many(0, 100, max_bytes=1) == (0, [b"m0"])
    assert len(ring) == 10 and ring.stats()["messages_got"] == 0


def test_peek_many_across_the_end_of_the_data_area(make_ring):
    ring = make_ring(capacity=4096)
    for _ in range(2):
        ring.put(b"x" * 1500)
        ring.get()
    ring.put_many([b"a" * 600, b"b" * 600, b"c" * 600])   # padding before the second
    assert ring._peek_many(0, 10) == (2, [b"a" * 600, b"b" * 600, b"c" * 600])
    assert ring._peek_many(1, 10) == (3, [b"b" * 600, b"c" * 600])
    ring._consume(2, 2)
    assert ring.get() == b"c" * 600
    stats = ring.stats()
    assert stats["messages_got"] == 5 and stats["bytes_got"] == 3000 + 1800


def test_consume_refuses_a_moved_count_and_a_short_ring(make_ring):
    ring = make_ring(capacity=1 << 16)
    for i in range(4):
        ring.put(b"%d" % i)
    ring._consume(2, 0)
    with pytest.raises(RingError, match="another consumer"):
        ring._consume(1, 0)
    with pytest.raises(RingError, match="only 2 of the 3"):
        ring._consume(3, 2)
    assert ring.get_many() == [b"2", b"3"]   # nothing consumed by the refusals


@pytest.mark.fault
@pytest.mark.multiprocess
@pytest.mark.slow
def test_consume_killed_at_every_instruction_leaves_counters_exact(make_ring):
    points = kill_points(*survey(make_ring, "get", consume_child))
    for k in points:
        ring = kill_at(make_ring, "get", k, consume_child)
        got = drain(ring)
        assert got in (MESSAGES, MESSAGES[1:]), f"kill after step {k}: {got}"
        check_counters(ring, MESSAGES)
        ring.close()


# -- the tag -----------------------------------------------------------------

def test_tag_goes_with_the_put_and_untagged_puts_keep_it(make_ring):
    ring = make_ring(capacity=1 << 16)
    assert ring._last_tag() == 0
    ring.put_many([b"a", b"b"], tag=41)
    assert ring._last_tag() == 41
    ring.put(b"c")
    ring.put_many([b"d"])
    assert ring._last_tag() == 41
    for bad, error in ((0, ValueError), (-1, ValueError), ("1", TypeError), (True, TypeError)):
        with pytest.raises(error):
            ring.put_many([b"e"], tag=bad)
    assert len(ring) == 4   # a refused tag puts nothing


@pytest.mark.fault
@pytest.mark.multiprocess
@pytest.mark.slow
def test_tag_atomic_with_the_put_killed_at_every_instruction(make_ring):
    points = kill_points(*survey(make_ring, "put", tagged_producer_child,
                                 intent_at=TAG_POSITION))
    for k in points:
        ring = kill_at(make_ring, "put", k, tagged_producer_child)
        # _last_tag takes the dead producer's lock over: settled first.
        tag = ring._last_tag(timeout=10)
        ring.put(MINE, timeout=10)   # an untagged put cannot revive a void intent
        got = drain(ring)
        published = LATE in got
        assert got == MESSAGES + ([LATE] if published else []) + [MINE], \
            f"kill after step {k}: {[m[:1] for m in got]}"
        assert tag == (A_TAG if published else 0), f"kill after step {k}: tag {tag}"
        assert ring._last_tag() == tag
        check_counters(ring, got)
        ring.close()


def test_a_void_tag_intent_never_comes_back(make_ring):
    # A tagged put that died before publishing leaves an intent for a head
    # that a later put may reach exactly; repair clears it (FORMAT.md).
    ring = make_ring(capacity=4096, spin=0)
    raw = RawHeader(ring.name)
    try:
        head = raw.u64(128)
        raw.set_u64(TAG_POSITION, head + 16)   # what a put of one 8-byte message ends at
        raw.set_u64(TAG_POSITION + 8, 99)
        # A dead holder of the put lock: a token of a slot nobody holds.
        raw.set_u64(384, (5 << 32) | 200)
        assert ring._last_tag(timeout=10) == 0
        ring.put(b"12345678")
        assert raw.u64(128) == head + 16
        raw.set_u64(384, (6 << 32) | 201)
        assert ring._last_tag(timeout=10) == 0
    finally:
        raw.close()


# -- identity and counters -----------------------------------------------------

def test_identity_is_random_fixed_and_shared(make_ring):
    one, two = make_ring(), make_ring()
    assert len(one.identity) == 32 and int(one.identity, 16) != 0
    assert one.identity != two.identity
    again = Ring.open(one.name)
    try:
        assert again.identity == one.identity
    finally:
        again.close()


def test_bridge_counters_in_stats(make_ring):
    ring = make_ring()
    ring._bridge_count("sent", 3)
    ring._bridge_count("redelivered", 2)
    stats = ring.stats()
    assert (stats["bridge_sent"], stats["bridge_redelivered"], stats["bridge_acked"]) == (3, 2, 0)
    with pytest.raises(KeyError):
        ring._bridge_count("lost", 1)
