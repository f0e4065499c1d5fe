"""Hostile segments (issue #3, part B).

open() rejects whatever is not a ring of this layout and size with
RingCorrupted, before it can touch a byte past the end of the file; and no
bytes a peer writes into a live ring make a call crash, read or write
outside the mapping, or wait past its timeout (SPEC.md, "Errors"; DESIGN.md,
"Checking the peer").

Every ring operation on a hostile segment runs in tests/hostile_child.py, a
separate process: a crash shows as a negative exit status, a hang as a reply
that does not come.  The child maps the ring under test with an inaccessible
page right after its data area, so a read or write past the end faults
instead of landing silently in a neighbouring mapping.
"""

import collections
import os
import struct
import time

import posix_ipc
import pytest
from conftest import remove_segment, remove_sysv, shm_path, unique_ring_name, unique_sysv_key
from faultkit import RawHeader
from hostile_child import (
    ALLOWED_OUTCOMES,
    BLOCKING,
    HEADER_FIELDS,
    HEADER_SIZE,
    KIND_DATA,
    KIND_PADDING,
    OPERATIONS,
    Child,
    ChildDied,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringshm import Ring
from ringshm._ring import LAYOUT_VERSION, SYSV_CREATE, sysv_get, sysv_remove, sysv_stat

CAPACITY = 4096
SIZE = HEADER_SIZE + CAPACITY
TIMEOUT = 0.01          # of each blocking call in the fuzz
# What a call may take beyond its timeout on a busy 2-core machine.  The
# fuzzed ring's recovery interval (the sleep slice) is 2 s, so a wait that
# overruns its timeout by a slice shows.
MARGIN = 0.5
BASES = 5               # live states the child records (hostile_child.Server.setup)


class Runner:
    """One hostile child with its fuzz ring set up, restarted after it
    died: request() raises ChildDied or TimeoutError for that request only."""

    def __init__(self):
        self.name = unique_ring_name()
        self.child = None
        self.cases = 0
        self.outcomes = collections.Counter()   # of the calls in the cases

    def request(self, message, timeout=30.0):
        if self.child is None:
            remove_segment(self.name)   # the dead child's hostile image
            self.child = Child()
            self.child.request({"cmd": "setup", "name": self.name, "capacity": CAPACITY})
        try:
            return self.child.request(message, timeout)
        except (ChildDied, TimeoutError):
            self.close()
            raise

    def case(self, base, mutations, ops):
        self.cases += 1
        reply = self.request({"cmd": "case", "base": base, "mutations": mutations,
                              "ops": ops, "timeout": TIMEOUT})
        if reply["open"] != "ok":
            self.outcomes["open: " + reply["open"]] += 1
        self.outcomes.update(outcome for _, outcome, _ in reply["ops"])
        return reply

    def report(self, test, capsys, since):
        """Print how many cases `test` ran and what the calls did."""
        cases, outcomes = since
        counts = self.outcomes - outcomes
        with capsys.disabled():
            print(f"\n{test}: {self.cases - cases} cases; calls: "
                  + ", ".join(f"{k} {v}" for k, v in counts.most_common()))

    def mark(self):
        return self.cases, self.outcomes.copy()

    def close(self):
        if self.child is not None:
            self.child.close()
            self.child = None


@pytest.fixture(scope="module")
def runner():
    r = Runner()
    try:
        yield r
    finally:
        r.close()
        remove_segment(r.name)


def check_reply(reply, case):
    """Each call returned, or raised one of the allowed errors, in time."""
    assert reply["open"] in ("ok", "RingCorrupted"), (reply, case)
    for name, outcome, seconds in reply["ops"]:
        assert outcome in ALLOWED_OUTCOMES, (name, outcome, case)
        limit = (TIMEOUT if name in BLOCKING else 0.0) + MARGIN
        assert seconds <= limit, f"{name} took {seconds:.3f} s (limit {limit}): {case}"


# ------------------------------------------------------------- open() validates


def patch_sysv(key, patch):
    """Apply patch(fd), written for a file, to the System V segment of
    `key`: through a memfd copy of its bytes, copied back.  A patch that
    resizes the copy gets a new segment of that size (at least one byte:
    shmget makes no empty segment) holding the patched bytes."""
    shmid = sysv_get(key, 0, 0)
    info = sysv_stat(shmid)
    with RawHeader({"sysv_key": key}) as raw:
        original = bytes(raw._map[:info["size"]])
    fd = os.memfd_create("patch")
    try:
        os.write(fd, original)
        patch(fd)
        size = os.fstat(fd).st_size
        patched = os.pread(fd, size, 0)
    finally:
        os.close(fd)
    if size != info["size"]:
        sysv_remove(shmid)
        sysv_get(key, max(size, 1), SYSV_CREATE | 0o600)
    with RawHeader({"sysv_key": key}) as raw:
        raw._map[:size] = patched


@pytest.fixture(params=["shm", "file", "sysv"])
def damaged(request, tmp_path):
    """damaged(patch) -> where: a ring (shm segment, file or System V
    segment) of CAPACITY, closed and then changed by patch(fd); the test's
    open request for it."""
    made = []

    def make(patch):
        if request.param == "sysv":
            key = unique_sysv_key()
            made.append(key)
            Ring.create(sysv_key=key, capacity=CAPACITY, persist=True).close()
            patch_sysv(key, patch)
            return {"sysv_key": key}
        if request.param == "shm":
            name = unique_ring_name()
            made.append(name)
            Ring.create(name, capacity=CAPACITY, persist=True).close()
            target, where = shm_path(name), {"name": name}
        else:
            target = str(tmp_path / f"ring{len(made)}")
            made.append(None)
            Ring.create(path=target, capacity=CAPACITY, persist=True).close()
            where = {"path": target}
        fd = os.open(target, os.O_RDWR)
        try:
            patch(fd)
        finally:
            os.close(fd)
        return where

    yield make
    for name in made:
        if isinstance(name, int):
            remove_sysv(name)
        elif name is not None:
            remove_segment(name)


def put_u32(offset, value):
    return lambda fd: os.pwrite(fd, struct.pack("<I", value), offset)


def put_u64(offset, value):
    return lambda fd: os.pwrite(fd, struct.pack("<Q", value), offset)


def capacity_and_size(capacity, size):
    def patch(fd):
        os.pwrite(fd, struct.pack("<Q", capacity), 16)
        os.ftruncate(fd, size)
    return patch


DAMAGE = {
    "bad magic": lambda fd: os.pwrite(fd, b"NOTARING", 0),
    "magic of another byte order": lambda fd: os.pwrite(fd, b"\0MHSGNIR", 0),
    # 0.1's layout: its processes name lock holders by pid, ours by slot.
    "version 1": put_u32(8, 1),
    "the next version": put_u32(8, LAYOUT_VERSION + 1),
    "version 0": put_u32(8, 0),
    "header_size 8192": put_u32(12, 8192),
    "header_size 0": put_u32(12, 0),
    # The lock file's identity (FORMAT.md, 1088): another file's, or, for a
    # segment that is its own lock file, any at all.
    "lock file identity of another file": put_u64(1096, 0xDEADBEEF),
    # Each capacity case sizes the file to match what the header claims,
    # so that only the check named is in the way.
    "capacity not a power of two": capacity_and_size(6144, HEADER_SIZE + 6144),
    "capacity below a page": capacity_and_size(2048, HEADER_SIZE + 2048),
    "capacity zero": capacity_and_size(0, HEADER_SIZE),
    "capacity 2**63": put_u64(16, 1 << 63),
    "capacity wrapping header + capacity to 0": put_u64(16, (1 << 64) - HEADER_SIZE),
    "capacity larger than the file": put_u64(16, 2 * CAPACITY),
    "capacity smaller than the file": lambda fd: os.ftruncate(fd, SIZE + CAPACITY),
    "truncated in the data area": lambda fd: os.ftruncate(fd, SIZE - 1),
    "truncated to half the data area": lambda fd: os.ftruncate(fd, HEADER_SIZE + CAPACITY // 2),
    "truncated to the header": lambda fd: os.ftruncate(fd, HEADER_SIZE),
}
# open() gives a creator that is still writing up to 1 s (ring.CREATOR_GRACE).
SLOW_DAMAGE = {
    "truncated inside the header": lambda fd: os.ftruncate(fd, 100),
    "zero length": lambda fd: os.ftruncate(fd, 0),
    "header never written (no magic)": lambda fd: os.pwrite(fd, bytes(8), 0),
}


# A System V segment may be larger than its ring (a C program chose its
# size; a segment never shrinks): that one case opens there.
LARGER_SEGMENT = "capacity smaller than the file"


@pytest.mark.parametrize("damage", sorted(DAMAGE) + sorted(SLOW_DAMAGE))
def test_open_rejects_damaged_segment(runner, damaged, damage):
    where = damaged(DAMAGE.get(damage) or SLOW_DAMAGE[damage])
    started = time.monotonic()
    reply = runner.request({"cmd": "open", **where})
    took = time.monotonic() - started
    if damage == LARGER_SEGMENT and "sysv_key" in where:
        assert reply["result"] == "opened", reply
        return
    assert reply["result"] == "RingCorrupted", reply
    assert took < (1.0 if damage in SLOW_DAMAGE else 0.0) + 2.0


def test_open_accepts_the_undamaged_ring(runner, damaged):
    """The control: the same path with nothing changed opens and works."""
    reply = runner.request({"cmd": "open", **damaged(lambda fd: None)})
    assert reply["result"] == "opened", reply
    outcomes = {name: outcome for name, outcome, _ in reply["ops"]}
    assert set(outcomes) == set(OPERATIONS)
    assert set(outcomes.values()) <= {"ok", "Empty"}, outcomes
    assert outcomes["put"] == outcomes["put_many"] == outcomes["reserve"] == "ok"


def test_zero_length_segment_made_without_ftruncate(runner):
    """A segment that shm_open made and nobody sized (a creator that died
    at once) is refused after the grace second, not mapped."""
    name = unique_ring_name()
    posix_ipc.SharedMemory("/ringshm." + name, posix_ipc.O_CREX, mode=0o600).close_fd()
    try:
        started = time.monotonic()
        reply = runner.request({"cmd": "open", "name": name})
        assert reply["result"] == "RingCorrupted", reply
        assert 0.9 < time.monotonic() - started < 3.0
    finally:
        remove_segment(name)


# ------------------------------------------------------------- the guard page


def test_guard_page_makes_a_read_past_the_data_area_fault(runner):
    """The machinery the fuzz relies on: in the child, the last byte of the
    data area reads fine and the next one kills it."""
    try:
        assert runner.request({"cmd": "probe_guard"}) == {"last_byte": "read"}
        with pytest.raises(ChildDied) as died:
            runner.child.reply("the byte past the end")
    finally:
        runner.close()
    assert died.value.status < 0


# ------------------------------------------------------------- the fuzz

U64_SPECIAL = [0, 1, 7, 8, CAPACITY - 8, CAPACITY, CAPACITY + 8, 2 * CAPACITY,
               1 << 32, (1 << 32) - 1, 1 << 63, (1 << 63) - 1, (1 << 64) - 8, (1 << 64) - 1]
u64 = st.one_of(st.integers(0, (1 << 64) - 1), st.sampled_from(U64_SPECIAL))
delta = st.one_of(st.integers(-3 * CAPACITY, 3 * CAPACITY),
                  st.integers(-CAPACITY // 2, CAPACITY // 2).map(lambda x: 8 * x))
fields = st.sampled_from(sorted(HEADER_FIELDS.values()))
hexbytes = st.binary(min_size=1, max_size=32).map(bytes.hex)


@st.composite
def record_header(draw):
    length = draw(st.one_of(
        st.integers(0, (1 << 32) - 1), st.integers(0, 2 * CAPACITY),
        st.sampled_from([0, 1, CAPACITY // 2 - 8, CAPACITY // 2, CAPACITY - 16, CAPACITY - 8,
                         CAPACITY, (1 << 32) - 8, (1 << 32) - 1])))
    kind = draw(st.one_of(st.sampled_from([KIND_DATA, KIND_PADDING]),
                          st.integers(0, (1 << 32) - 1)))
    return struct.pack("<II", length, kind).hex()


# (where, offset, how, value): see hostile_child.Server.case.  "tail" offsets
# count from the consumer's position, so they hit the records it reads next.
header_mutation = st.one_of(
    st.tuples(st.just("header"), fields, st.just("set"), u64),
    st.tuples(st.just("header"), fields, st.just("add"), delta),
    st.tuples(st.just("header"), fields, st.just("xor"), st.integers(0, 63).map(lambda b: 1 << b)),
    st.tuples(st.just("header"), st.sampled_from([384, 512]),
              st.sampled_from(["live_owner", "own_owner"]), st.just(0)),
    st.tuples(st.just("header"), st.integers(64, 1023), st.just("bytes"), hexbytes),
    # The slot table of lock-holder liveness (FORMAT.md, "Slots").
    st.tuples(st.just("header"), st.integers(2048, 4095), st.just("bytes"), hexbytes),
)
data_mutation = st.one_of(
    st.tuples(st.just("tail"), st.integers(0, 64).map(lambda i: 8 * i), st.just("bytes"),
              record_header()),
    st.tuples(st.just("data"), st.integers(0, CAPACITY // 8 - 1).map(lambda i: 8 * i),
              st.just("bytes"), record_header()),
    st.tuples(st.just("data"), st.integers(0, CAPACITY - 1), st.just("bytes"),
              st.binary(min_size=1, max_size=64).map(bytes.hex)),
)
# When: 0 before open(), 1 after it, 2 half-way through the operations.
phase = st.sampled_from([0, 0, 0, 1, 2])


def with_phase(mutation):
    return st.tuples(mutation, phase).map(lambda m: [*m[0], m[1]])


mutations = st.lists(with_phase(st.one_of(header_mutation, data_mutation)),
                     min_size=1, max_size=6)
operations = st.permutations(sorted(OPERATIONS))


def test_fuzz_live_ring(runner, capsys):
    """Random and mutated bytes in the header (flags, head, tail, counters,
    intents, lock words, wait queues, liveness slots) and in the records of a
    live ring, then
    every operation in a random order: each returns or raises an allowed
    error in time, and the child never dies."""
    since = runner.mark()

    @settings(max_examples=400, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(base=st.integers(0, BASES - 1), mutations=mutations, ops=operations)
    def fuzz(base, mutations, ops):
        case = {"base": base, "mutations": mutations, "ops": ops}
        check_reply(runner.case(**case), case)

    fuzz()
    runner.report("test_fuzz_live_ring", capsys, since)


def test_fuzz_identity_fields(runner, capsys):
    """The first 64 bytes (magic, version, sizes, creator, settings) changed
    in a live ring: open() refuses it, or every call behaves; changed after
    open(), they are not read again (capacity and settings are read once)."""
    since = runner.mark()
    identity = st.one_of(
        st.tuples(st.just("header"), st.sampled_from([0, 8, 16, 24, 32, 40, 48, 56]),
                  st.just("set"), u64),
        st.tuples(st.just("header"), st.sampled_from([0, 8, 16, 24, 32, 40, 48, 56]),
                  st.just("xor"), st.integers(0, 63).map(lambda b: 1 << b)),
        st.tuples(st.just("header"), st.integers(0, 63), st.just("bytes"), hexbytes),
    )

    @settings(max_examples=100, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(base=st.integers(0, BASES - 1),
           mutations=st.lists(with_phase(identity), min_size=1, max_size=3), ops=operations)
    def fuzz(base, mutations, ops):
        case = {"base": base, "mutations": mutations, "ops": ops}
        reply = runner.case(**case)
        # max_messages (offset 24) may now refuse the 3-message batch.
        reply["ops"] = [op for op in reply["ops"]
                        if not (op[0] == "put_many" and op[1] == "MessageTooLarge")]
        check_reply(reply, case)

    fuzz()
    runner.report("test_fuzz_identity_fields", capsys, since)


@pytest.mark.parametrize("lock", [384, 512], ids=["put_lock", "get_lock"])
def test_lock_held_by_a_live_process_makes_calls_time_out(runner, lock):
    """A lock word naming a live process is respected (it may be a slow
    peer): the calls that need that lock wait for their timeout, then give
    up with Full/Empty; the rest still work."""
    ops = ["put", "put_nowait", "put_many", "reserve", "get", "get_nowait", "get_many",
           "get_into", "view", "len", "stats", "empty", "full"]
    reply = runner.case(0, [["header", lock, "live_owner", 0]], ops)
    check_reply(reply, {"lock": lock})
    outcomes = {name: (outcome, seconds) for name, outcome, seconds in reply["ops"]}
    blocked = ({"put", "put_nowait", "put_many", "reserve"} if lock == 384 else
               {"get", "get_nowait", "get_many", "get_into", "view"})
    for name, (outcome, seconds) in outcomes.items():
        if name in blocked:
            assert outcome == ("Full" if lock == 384 else "Empty"), (name, outcome)
            assert seconds >= (TIMEOUT if name in BLOCKING else 0.0) * 0.9, (name, seconds)
        else:
            assert outcome in ("ok", "Empty"), (name, outcome)


@pytest.mark.parametrize("lock", [384, 512], ids=["put_lock", "get_lock"])
def test_lock_held_by_a_dead_process_is_taken_over(runner, lock):
    """A lock word naming a process that is gone does not block anybody
    past the timeout: the call takes the lock over."""
    dead = (0x7FFFFFF0 << 32) | 12345   # no such pid
    ops = ["put", "get", "get", "get", "get", "get", "len"]
    reply = runner.case(0, [["header", lock, "set", dead]], ops)
    check_reply(reply, {"lock": lock})
    assert [outcome for _, outcome, _ in reply["ops"]] == ["ok"] * 5 + ["Empty", "ok"]


# ------------------------------------------------- regressions of fixed core bugs
# Each test below once crashed the process; the reason strings say how.

UNALIGNED_END = [CAPACITY - 7, CAPACITY - 4, CAPACITY - 1]
BUG_READ = ("core bug: _next_record_fast reads rec.kind before checking that tail is "
            "8-byte aligned; a tail in the last 7 bytes of the data area reads past "
            "the end of the mapping (SIGSEGV)")
BUG_WRITE = ("core bug: the producer never checks that head is 8-byte aligned; a head "
             "in the last 7 bytes of the data area (where its own puts carry an "
             "unaligned head) makes _room/_place write an 8-byte PADDING header past "
             "the end of the mapping (SIGSEGV)")


# Regression, once: BUG_READ
@pytest.mark.parametrize("position", UNALIGNED_END)
def test_unaligned_tail_at_end_of_data(runner, position):
    """head = next lap's 8, tail = `position` (unaligned, 1 to 7 bytes
    before the end): get_nowait() must say RingCorrupted."""
    mutations = [["header", 128, "set", CAPACITY + 8], ["header", 256, "set", position]]
    reply = runner.case(0, mutations, ["get_nowait"])
    assert reply["ops"][0][1] == "RingCorrupted", reply


# Regression, once: BUG_WRITE
@pytest.mark.parametrize("position", UNALIGNED_END)
def test_unaligned_head_at_end_of_data(runner, position):
    """head = `position` (unaligned, 1 to 7 bytes before the end), tail 8
    bytes behind it: put_nowait() must not write past the data area."""
    mutations = [["header", 128, "set", position], ["header", 256, "set", position - 8]]
    reply = runner.case(0, mutations, ["put_nowait"])
    check_reply(reply, mutations)


# Regression, once: BUG_WRITE
def test_unaligned_head_carried_to_the_end_by_puts(runner):
    """The case the fuzz found: head 1801 bytes back (unaligned, mid-ring);
    the producer's own put_nowait(200) and reserve(24) then leave it at
    capacity - 1, and the wrap of the next put_many writes past the end."""
    mutations = [["header", 128, "add", -1801]]
    ops = ["get", "get_into", "put_nowait", "reserve", "put_many"]
    reply = runner.case(1, mutations, ops)
    check_reply(reply, mutations)


BUG_SEMAPHORE = ("core bug (fixed by sleeping on raw futex words): the wait queues were "
                 "glibc sem_t in the shared segment, and glibc aborts the process when a "
                 "peer wrote garbage into a sem_t's `private` field")
GARBAGE_PRIVATE = 0x12345678


# Regression, once: BUG_SEMAPHORE
@pytest.mark.parametrize("case", [
    # get() on an empty ring sleeps on data_waitq.
    (3, [["header", 664, "set", GARBAGE_PRIVATE]], ["get"]),
    # put() on a full ring sleeps on space_waitq.
    (2, [["header", 792, "set", GARBAGE_PRIVATE]], ["put"]),
    # get() with the get lock held by a live process sleeps on the lock's queue.
    (0, [["header", 512, "live_owner", 0], ["header", 552, "set", GARBAGE_PRIVATE]], ["get"]),
    # get_nowait() takes a message and wakes a producer said to sleep on
    # space_waitq (wanted = 1, one waiter counted in the sem_t): sem_post.
    (0, [["header", 768, "set", 1], ["header", 784, "set", 1 << 32],
         ["header", 792, "set", GARBAGE_PRIVATE]], ["get_nowait"]),
    # Garbage in the futex words themselves (offset 8 of each wait queue).
    (3, [["header", 648, "set", GARBAGE_PRIVATE]], ["get"]),
    (2, [["header", 776, "set", GARBAGE_PRIVATE]], ["put"]),
    (0, [["header", 512, "live_owner", 0], ["header", 536, "set", GARBAGE_PRIVATE]], ["get"]),
], ids=["data-sleeper", "space-sleeper", "lock-sleeper", "space-waker",
        "data-futex", "space-futex", "lock-futex"])
def test_damaged_semaphore(runner, case):
    """A damaged wait queue must cost at most a timeout, never the process."""
    base, mutations, ops = case
    reply = runner.case(base, mutations, ops)
    check_reply(reply, case)


BUG_LEN = ("core bug: __len__ returns the uint64 messages_put - messages_got as a "
           "Py_ssize_t; from 2**63 up it is negative and len(ring) raises "
           "SystemError('error return without exception set')")


# Regression, once: BUG_LEN
@pytest.mark.parametrize("messages_put", [(1 << 64) - 1, 1 << 63])
def test_len_of_an_absurd_message_count(runner, messages_put):
    """messages_put far beyond messages_got (a peer's garbage): len() must
    return a number or raise RingCorrupted, like the other calls."""
    mutations = [["header", HEADER_FIELDS["messages_put"], "set", messages_put]]
    reply = runner.case(0, mutations, ["len"])
    check_reply(reply, mutations)
