"""Bad arguments raise TypeError or ValueError whose message names the
argument (SPEC, Errors), and leave the ring as it was."""

import math
import os

import pytest
from conftest import SHM_PREFIX, shm_path, unique_ring_name

from ringshm import MessageTooLarge, Ring

# The file /dev/shm/ringshm.<name> may be NAME_MAX (255) bytes long.
NAME_MAX = os.pathconf("/dev/shm", "PC_NAME_MAX")
LONGEST_NAME = NAME_MAX - len(SHM_PREFIX)


def check(call, error, argument):
    """call() raises ``error`` and its message mentions ``argument``."""
    with pytest.raises(error) as caught:
        call()
    assert argument in str(caught.value), (
        f"{type(caught.value).__name__}({caught.value!r}) does not name {argument!r}")


# ------------------------------------------------------- data and buffers

@pytest.mark.parametrize("method", ["put", "put_nowait"])
@pytest.mark.parametrize("data", ["text", None, 42, [b"a list"]])
def test_put_of_a_non_bytes_like_object(make_ring, method, data):
    ring = make_ring()
    check(lambda: getattr(ring, method)(data), TypeError, "data")
    assert len(ring) == 0


@pytest.mark.parametrize("messages", [None, 42, b"bytes is not a batch"])
def test_put_many_of_a_non_iterable_or_bytes(make_ring, messages):
    # b"..." iterates as ints: putting each int would surprise everybody.
    ring = make_ring()
    check(lambda: ring.put_many(messages), TypeError, "messages")
    assert len(ring) == 0


@pytest.mark.parametrize("bad", ["text", None])
def test_put_many_with_a_bad_item_puts_nothing(make_ring, bad):
    ring = make_ring()
    with pytest.raises(TypeError):
        ring.put_many([b"good", bad, b"good"])
    assert len(ring) == 0 and ring.stats()["messages_put"] == 0


@pytest.mark.parametrize("buffer", [b"read-only bytes..", "text", None])
def test_get_into_needs_a_writable_buffer(make_ring, buffer):
    ring = make_ring()
    ring.put(b"x")
    check(lambda: ring.get_into(buffer), (TypeError, ValueError), "buffer")
    assert len(ring) == 1


@pytest.mark.parametrize("size, error", [(-1, ValueError), ("3", TypeError), (None, TypeError)])
def test_reserve_size(make_ring, size, error):
    ring = make_ring()
    check(lambda: ring.reserve(size).__enter__(), error, "size")
    assert len(ring) == 0


def test_reserve_larger_than_the_ring(make_ring):
    ring = make_ring()
    with pytest.raises(MessageTooLarge):
        with ring.reserve(ring.max_message_size + 1):
            pass


# ------------------------------------------------------------------ timeouts

TIMED_CALLS = {
    "put": lambda ring, t: ring.put(b"x", timeout=t),
    "get": lambda ring, t: ring.get(timeout=t),
    "put_many": lambda ring, t: ring.put_many([b"x"], timeout=t),
    "get_many": lambda ring, t: ring.get_many(timeout=t),
    "get_into": lambda ring, t: ring.get_into(bytearray(8), timeout=t),
    "reserve": lambda ring, t: ring.reserve(1, timeout=t).__enter__(),
    "view": lambda ring, t: ring.view(timeout=t).__enter__(),
}


@pytest.mark.parametrize("call", TIMED_CALLS.values(), ids=TIMED_CALLS.keys())
@pytest.mark.parametrize("timeout, error", [
    (-1, ValueError), (-0.001, ValueError), (math.nan, ValueError), ("1", TypeError),
])
def test_bad_timeout(make_ring, call, timeout, error):
    ring = make_ring()
    ring.put(b"m")   # so that a get with a valid timeout would succeed at once
    check(lambda: call(ring, timeout), error, "timeout")
    assert len(ring) == 1


# ------------------------------------------------------------------ create

@pytest.mark.parametrize("capacity, error", [
    (0, ValueError), (-4096, ValueError), (4096.0, TypeError), ("4096", TypeError),
    (None, TypeError), (1 << 60, ValueError),
])
def test_bad_capacity(ring_name, capacity, error):
    check(lambda: Ring.create(ring_name, capacity=capacity), error, "capacity")
    check(lambda: Ring.anonymous(capacity=capacity), error, "capacity")
    assert not os.path.exists(shm_path(ring_name))


@pytest.mark.parametrize("name, error", [
    ("a/b", ValueError), ("/leading", ValueError), ("", ValueError),
    ("nul\0inside", ValueError), ("x" * (LONGEST_NAME + 1), ValueError),
    (42, TypeError), (b"bytes", TypeError),
])
def test_bad_name(name, error):
    check(lambda: Ring.create(name, capacity=4096), error, "name")
    check(lambda: Ring.open(name), error, "name")


def test_longest_name_that_the_system_allows_works():
    name = unique_ring_name()
    name += "x" * (LONGEST_NAME - len(name))
    with Ring.create(name, capacity=4096) as ring:
        assert os.path.exists(shm_path(name))
        with Ring.open(name) as opened:
            ring.put(b"long name")
            assert opened.get_nowait() == b"long name"
    assert not os.path.exists(shm_path(name))


def test_name_and_path_are_exclusive(ring_name, tmp_path):
    path = str(tmp_path / "r.ring")
    check(lambda: Ring.create(ring_name, path=path), (TypeError, ValueError), "path")
    check(lambda: Ring.open(ring_name, path=path), (TypeError, ValueError), "path")
    assert not os.path.exists(shm_path(ring_name)) and not os.path.exists(path)


def test_open_needs_a_name_or_a_path():
    check(Ring.open, (TypeError, ValueError), "name")
    check(Ring.open, (TypeError, ValueError), "path")


@pytest.mark.parametrize("path, error", [(42, TypeError), ("nul\0inside", ValueError)])
def test_bad_path(path, error):
    check(lambda: Ring.create(path=path, capacity=4096), error, "path")
    check(lambda: Ring.open(path=path), error, "path")


@pytest.mark.parametrize("mode, error", [
    ("600", TypeError), (0.5, TypeError), (-1, ValueError), (0o10000, ValueError),
])
def test_bad_mode(ring_name, mode, error):
    check(lambda: Ring.create(ring_name, capacity=4096, mode=mode), error, "mode")
    assert not os.path.exists(shm_path(ring_name))


@pytest.mark.parametrize("argument, value, error", [
    ("recovery_interval", 0, ValueError), ("recovery_interval", -1, ValueError),
    ("recovery_interval", math.nan, ValueError), ("recovery_interval", "1", TypeError),
    ("spin", -1, ValueError), ("spin", "20", TypeError),
    ("max_messages", -1, ValueError), ("max_messages", 1.5, TypeError),
])
def test_bad_create_options(ring_name, argument, value, error):
    options = {argument: value}
    check(lambda: Ring.create(ring_name, capacity=4096, **options), error, argument)
    check(lambda: Ring.anonymous(capacity=4096, **options), error, argument)
    assert not os.path.exists(shm_path(ring_name))


# ---------------------------------------------------------------- get_many

@pytest.mark.parametrize("argument, value, error", [
    ("max_messages", 0, ValueError), ("max_messages", -1, ValueError),
    ("max_messages", "3", TypeError), ("max_bytes", -1, ValueError),
    ("max_bytes", "3", TypeError),
])
def test_bad_get_many_limits(make_ring, argument, value, error):
    ring = make_ring()
    ring.put(b"m")
    check(lambda: ring.get_many(**{argument: value}), error, argument)
    assert len(ring) == 1
