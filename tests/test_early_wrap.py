"""Early wraps (docs/DESIGN.md, "Early wraps"): a record or batch of 32 KiB
or more goes to the start of the next lap when the consumers have freed room
there for it and two more of its size, so a stream of big records reuses
about the bytes in flight instead of cycling through the whole capacity.
The positions are read from stats() (head and tail are byte counters that
never go back)."""

import pytest

CAPACITY = 1 << 20
BIG = 100_000          # payload bytes; its record spans BIG + 8
SPAN = BIG + 8


def message(stamp, size=BIG):
    return bytes([stamp]) * size


@pytest.fixture
def ring(make_ring):
    return make_ring(capacity=CAPACITY)


def through(ring, count):
    """Put and take `count` big records (the lap start is then free)."""
    for stamp in range(count):
        ring.put(message(stamp))
        assert ring.get() == message(stamp)


def test_a_big_record_goes_to_the_lap_start_once_room_for_three_is_free(ring):
    through(ring, 2)
    ring.put(message(7))   # room for two at the start: not yet
    assert ring.stats()["head"] == 3 * SPAN
    assert ring.get() == message(7)
    ring.put(message(8))   # room for three: padding, then at 0
    assert ring.stats()["head"] == CAPACITY + SPAN
    assert ring.get() == message(8)
    assert ring.stats()["tail"] == CAPACITY + SPAN


def test_not_while_the_lap_start_is_still_in_flight(ring):
    for stamp in range(4):
        ring.put(message(stamp))
    assert [ring.get() for _ in range(2)] == [message(0), message(1)]
    ring.put(message(4))   # only two records' room freed at the start
    assert ring.stats()["head"] == 5 * SPAN
    assert ring.get() == message(2)
    ring.put(message(5))   # three: it wraps while 3 and 4 are still queued
    assert ring.stats()["head"] == CAPACITY + SPAN
    assert [ring.get() for _ in range(3)] == [message(3), message(4), message(5)]


@pytest.mark.parametrize("how", ["reserve", "put_many"])
def test_reserve_and_batches_wrap_early_too(ring, how):
    through(ring, 3)
    if how == "reserve":
        with ring.reserve(BIG) as space:
            space[:] = message(8)
        expected = [message(8)]
    else:
        # Two records of 20 KB: 40 KB together, past the threshold.
        expected = [message(8, 20_000), message(9, 20_000)]
        ring.put_many(expected)
    head = ring.stats()["head"]
    assert CAPACITY < head <= CAPACITY + SPAN
    assert [ring.get() for _ in expected] == expected


def test_small_records_never_wrap_early(ring):
    # 1 KiB records: a look at the consumers' tail on every put would cost
    # more than a warm lap start could win.
    for stamp in range(300):
        ring.put(message(stamp % 256, 1024))
        assert ring.get() == message(stamp % 256, 1024)
    assert ring.stats()["head"] == 300 * (1024 + 8)
