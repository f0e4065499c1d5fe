"""Early wraps (docs/DESIGN.md, "Early wraps"): a record or batch of 32 KiB
or more goes to the start of the next lap when the consumers have freed the
room there, so a stream of big records reuses the bytes in flight instead
of cycling through the whole capacity. The positions are read from stats()
(head and tail are byte counters that never go back)."""

import pytest

CAPACITY = 1 << 20
BIG = 100_000          # payload bytes; its record spans BIG + 8
SPAN = BIG + 8


def message(stamp, size=BIG):
    return bytes([stamp]) * size


@pytest.fixture
def ring(make_ring):
    return make_ring(capacity=CAPACITY)


def test_a_big_record_goes_to_the_lap_start_once_it_is_free(ring):
    ring.put(message(1))
    assert ring.get() == message(1)
    ring.put(message(2))   # the room at 0 is free: padding, then at 0
    assert ring.stats()["head"] == CAPACITY + SPAN
    assert ring.get() == message(2)
    assert ring.stats()["tail"] == CAPACITY + SPAN


def test_not_while_the_lap_start_is_still_in_flight(ring):
    ring.put(message(1))
    ring.put(message(2))   # message 1 still holds the start
    assert ring.stats()["head"] == 2 * SPAN
    assert ring.get() == message(1)
    ring.put(message(3))   # now it is free: two records in flight, as a pool of two
    assert ring.stats()["head"] == CAPACITY + SPAN
    assert [ring.get(), ring.get()] == [message(2), message(3)]


@pytest.mark.parametrize("how", ["reserve", "put_many"])
def test_reserve_and_batches_wrap_early_too(ring, how):
    ring.put(message(1))
    ring.get()
    if how == "reserve":
        with ring.reserve(BIG) as space:
            space[:] = message(2)
        expected = [message(2)]
    else:
        # Two records of 20 KB: 40 KB together, past the threshold.
        expected = [message(2, 20_000), message(3, 20_000)]
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
