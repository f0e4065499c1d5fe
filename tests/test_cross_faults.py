"""C and Python on one ring, with SIGKILLs: libringshm's C producers killed
at random moments (inside the put lock too) while Python consumers count
every message, and the reverse, C consumers killed while Python producers
put.  Every message that was certainly published arrives; a duplicate is
allowed only where the kill explains it, to the message; each producer's
order is kept; the ring's counters are exact at the end.

The C side is tests/c/xfault_peer.c, built here against a private build of
libringshm (``make -C libringshm BUILD=<tmp>``), so parallel runs do not
share objects.  What a SIGKILL must not erase, the C peer keeps in files
that this process reads after the kill: a ledger of 64-byte slots (one per
C process started, its number is the incarnation), and for a consumer a
log of the messages it got.  The layouts are described in the C file.

Default: at least KILLS (250) kills per test, one every KILL_EVERY on
average: a few seconds each.  RINGSHM_SOAK_SECONDS=N keeps killing for N
seconds (``make soak-cross``).  docs/RELIABILITY.md, "C and Python
together", has the figures.
"""

import array
import collections
import mmap
import multiprocessing
import os
import random
import select
import shutil
import signal
import struct
import subprocess
import time
import zlib

import faultkit
import pytest
from conftest import join_or_kill
from faultkit import Child, handle, open_where

from ringshm import Ring, ShutDown

np = pytest.importorskip("numpy", reason="the accounting of a soak run counts with NumPy")

pytestmark = [pytest.mark.fault, pytest.mark.multiprocess, pytest.mark.slow]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER_SOURCE = os.path.join(ROOT, "tests", "c", "xfault_peer.c")

KILLS = 250
KILL_EVERY = 0.005                 # mean time between two kills, seconds
SOAK = float(os.environ.get("RINGSHM_SOAK_SECONDS", "0") or 0)
# 4 KiB: a wrap every 30 messages or so, full nearly always; 32 KiB: the
# producers' puts fit in bursts.
CAPACITIES = pytest.mark.parametrize("capacity", [4096, 32 << 10], ids=["4K", "32K"])
PRODUCERS = 3                      # C producers killed (beside one Python producer), or Python ones
CONSUMERS = 2                      # Python consumers, or C consumers killed (beside a Python one)
PYTHON_INCARNATION = 0xFFFFFF      # the Python producer's (never killed) in test 1
DEADLINE = 60                      # seconds for one wait; only to turn a hang into a failure
LOG_CAP = 1 << 22                  # entries of a C consumer's log (sparse file)

# The message (xfault_peer.c): magic, producer, flags, incarnation, payload
# length, sequence, crc32 of the payload, zero; then the payload.
HEAD = struct.Struct("<IHHIIQII")
MAGIC = 0x544C4658
BAD_ENTRY = (1 << 64) - 1

# Ledger slots: 8 u64 words each (xfault_peer.c).
SLOT_BYTES = 64
P_START, P_PENDING, P_COMMITTED, P_STOP, P_STATE, P_EXIT = range(6)
C_LOGGED, C_PHASE, C_STOP, C_STATE, C_BAD, C_EXIT, C_VIEWING = range(7)
IN_GET, IN_VIEW, VIEW_LOGGED = 1, 2, 3     # consumer phases


def key(producer, incarnation, seq):
    return producer << 56 | incarnation << 32 | seq


def unkey(k):
    return k >> 56, (k >> 32) & 0xFFFFFF, k & 0xFFFFFFFF


def message(producer, incarnation, seq, payload):
    return HEAD.pack(MAGIC, producer, 0, incarnation, len(payload), seq,
                     zlib.crc32(payload), 0) + payload


def parse(m):
    """The key of message `m`, or None when it is not a whole, intact message."""
    if len(m) < HEAD.size:
        return None
    magic, producer, _, incarnation, length, seq, crc, _ = HEAD.unpack_from(m)
    if magic != MAGIC or length != len(m) - HEAD.size or zlib.crc32(m[HEAD.size:]) != crc:
        return None
    return key(producer, incarnation, seq)


# ---------------------------------------------------------------- the C side

@pytest.fixture(scope="module")
def peer(tmp_path_factory):
    """The C peer, built against a private build of libringshm."""
    if not (shutil.which("cc") and shutil.which("make")):
        pytest.skip("needs cc and make")
    if not os.path.isdir(os.path.join(ROOT, "libringshm")):
        pytest.skip("needs the source checkout's libringshm (testing an installed package)")
    where = tmp_path_factory.mktemp("xfaults-build")
    build = str(where / "libringshm")
    subprocess.run(["make", "-s", "-C", os.path.join(ROOT, "libringshm"), f"BUILD={build}",
                    f"{build}/libringshm.a"], check=True, timeout=300)
    program = str(where / "xfault_peer")
    subprocess.run(["cc", "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror",
                    "-I" + os.path.join(ROOT, "libringshm", "include"), PEER_SOURCE,
                    f"{build}/libringshm.a", "-lpthread", "-o", program],
                   check=True, timeout=300)
    return program


class Ledger:
    """The slots file that the C peers write through MAP_SHARED: a slot per
    C process started; read here after the process is dead."""

    def __init__(self, path, slots):
        self.path = str(path)
        with open(self.path, "wb") as f:
            f.truncate(slots * SLOT_BYTES)
        with open(self.path, "r+b") as f:
            self._map = mmap.mmap(f.fileno(), slots * SLOT_BYTES)
        self._slots = slots
        self._next = 0

    def new_slot(self):
        slot = self._next
        assert slot < min(self._slots, PYTHON_INCARNATION), "the ledger is full"
        self._next += 1
        return slot

    def set(self, slot, word, value):
        struct.pack_into("<Q", self._map, slot * SLOT_BYTES + 8 * word, value)

    def get(self, slot, word):
        return struct.unpack_from("<Q", self._map, slot * SLOT_BYTES + 8 * word)[0]

    def close(self):
        self._map.close()


class CPeers:
    """The C processes of one test, each in a session (process group) of its
    own; every one still alive is SIGKILLed and reaped by close()."""

    def __init__(self, program, tmp_path):
        self.program = program
        self.tmp_path = tmp_path
        self.running = {}          # slot -> Popen

    def start(self, slot, *args):
        with open(self.tmp_path / f"peer-{slot}.err", "wb") as err:
            self.running[slot] = subprocess.Popen(
                [self.program, *map(str, args)], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)

    def errors(self, slot):
        return (self.tmp_path / f"peer-{slot}.err").read_text(errors="replace")[-2000:]

    def kill(self, slot):
        """SIGKILL the process of `slot` and reap it; fails if it had ended
        by itself."""
        process = self.running.pop(slot)
        ended = process.poll()
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
        assert ended is None, (f"C peer of slot {slot} exited by itself ({ended}): "
                               f"{self.errors(slot)}")

    def wait(self, slot, timeout=DEADLINE):
        """Wait for the process of `slot` to exit; its exit code."""
        process = self.running[slot]
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        if code is None:
            self.kill(slot)
            raise AssertionError(f"C peer of slot {slot} did not finish in {timeout} s")
        del self.running[slot]
        assert code == 0, f"C peer of slot {slot} exited {code}: {self.errors(slot)}"
        return code

    def close(self):
        for process in self.running.values():
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
        self.running.clear()


def kill_loop(victims, replace, rng):
    """SIGKILL a random one of `victims` (a list of slots, one per role), at
    random moments KILL_EVERY apart on average, and put replace(role, slot)
    in its place; at least KILLS kills and SOAK seconds.  Returns the kills
    made and the time taken."""
    started = time.monotonic()
    give_up = started + SOAK + 120 + KILLS * KILL_EVERY * 20
    kills = 0
    while kills < KILLS or time.monotonic() - started < SOAK:
        assert time.monotonic() < give_up, f"only {kills} kills in {give_up - started:.0f} s"
        time.sleep(rng.uniform(0, 2 * KILL_EVERY))
        role = rng.randrange(len(victims))
        victims[role] = replace(role, victims[role])
        kills += 1
    return kills, time.monotonic() - started


def lock_recoveries(ring):
    """(put lock, get lock) takeovers from dead holders, from the header."""
    with faultkit.RawHeader(ring.name) as raw:
        return raw.recoveries(faultkit.PUT_LOCK), raw.recoveries(faultkit.GET_LOCK)


# ---------------------------------------------------- one takeover, each way

RECOVERY = 0.1
BOUND = RECOVERY + 1.5     # as test_faults.py: the margin is for a busy machine


def python_holder(link, where, side):
    """reserve() (writing b"held by Python") or view() and stay inside,
    holding the lock, until killed."""
    ring = open_where(where)
    if side == "put":
        with ring.reserve(16) as buf:
            buf[:] = b"held by Python\0\0"
            link.ready()
            link.wait_go()
    else:
        with ring.view() as mv:
            link.ready(bytes(mv).decode())
            link.wait_go()


def read_line(process, timeout=30):
    """A line of a C peer's stdout, within `timeout` (b"" if it ended)."""
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    return process.stdout.readline() if ready else b"(nothing in time)"


@pytest.mark.parametrize("side", ["put", "get"])
@pytest.mark.parametrize("dead", ["C", "Python"])
def test_a_dead_holders_lock_is_taken_over_by_the_other_language(peer, make_ring, dead, side):
    """A C process SIGKILLed inside rs_reserve/rs_view: Python's put()/get()
    takes its lock over; a Python process killed inside reserve()/view(): C's
    rs_put/rs_get does.  Within recovery_interval (+ a margin); the
    reservation vanishes, the viewed message is delivered again; counters
    exact."""
    ring = make_ring(capacity=4096, recovery_interval=RECOVERY)
    ring.put(b"m0")
    ring.put(b"m1")
    if dead == "C":
        holder = subprocess.Popen([peer, "hold", side, ring.name], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, start_new_session=True)
        try:
            assert read_line(holder).split() == [b"held"] + ([b"m0"] if side == "get" else [])
            os.killpg(holder.pid, signal.SIGKILL)
        finally:
            if holder.poll() is None:
                os.killpg(holder.pid, signal.SIGKILL)
            holder.wait()
            holder.stdout.close()
        killed_at = time.monotonic()
        if side == "put":
            ring.put(b"put by Python", timeout=BOUND)
        else:
            assert ring.get(timeout=BOUND) == b"m0"
        took = time.monotonic() - killed_at
    else:
        with Child(python_holder, handle(ring), side) as holder:
            assert holder.wait_ready() == ("" if side == "put" else "m0")
            holder.kill()
        killed_at = time.monotonic()
        survivor = subprocess.run([peer, "once", side, ring.name, str(int(BOUND * 1000))],
                                  stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        took = time.monotonic() - killed_at
        assert survivor.returncode == 0, survivor.stderr
        assert survivor.stdout == (b"\n" if side == "put" else b"m0\n")
    put_recoveries, get_recoveries = lock_recoveries(ring)
    assert (put_recoveries, get_recoveries) == ((1, 0) if side == "put" else (0, 1))
    assert took < BOUND
    survivor_put = b"put by " + (b"Python" if dead == "C" else b"C")
    rest = [b"m0", b"m1", survivor_put] if side == "put" else [b"m1"]
    stats = ring.stats()
    assert len(ring) == stats["messages"] == len(rest)
    assert [ring.get_nowait() for _ in rest] == rest
    stats = ring.stats()
    assert stats["messages_put"] == stats["messages_got"] == (3 if side == "put" else 2)
    assert stats["bytes_put"] == stats["bytes_got"] == 4 + len(survivor_put) * (side == "put")
    assert ring._lock_owners() == (0, 0)


# ---------------------------------------------------- the Python side

def python_producer(name, producer, stop, sent, how, incarnation=0):
    """Put messages 0, 1, 2, ... (by put, put_many of 1..8, or put, put_many
    and reserve at random) until `stop` is set; `sent` says how many were
    put."""
    ring = Ring.open(name)
    rng = random.Random(producer)
    seq = 0
    while not stop.is_set():
        for _ in range(16):
            way = how if how != "mixed" else rng.choice(["put", "put_many", "reserve"])
            if way == "put_many":
                n = rng.randint(1, 8)
                ring.put_many([message(producer, incarnation, seq + i,
                                       rng.randbytes(rng.randint(0, 200))) for i in range(n)])
            elif way == "reserve":
                n = 1
                m = message(producer, incarnation, seq, rng.randbytes(rng.randint(0, 200)))
                with ring.reserve(len(m)) as buf:
                    buf[:] = m
            else:
                n = 1
                ring.put(message(producer, incarnation, seq, rng.randbytes(rng.randint(0, 200))))
            seq += n
            sent.value = seq
    ring.close()


# ---------------------------------------------------- C producers, Python consumers

def python_consumer(name, index, out_path):
    """get() (and get_many()) until the ring is shut down and drained; write
    the keys of the messages got, in order, after a count of bad messages
    and of order violations (a producer's (incarnation, sequence) not
    increasing)."""
    ring = Ring.open(name)
    keys = array.array("Q")
    last = {}
    bad = disorder = 0
    turn = index
    try:
        while True:
            turn += 1
            for m in [ring.get()] if turn % 2 else ring.get_many(max_messages=32):
                k = parse(m)
                if k is None:
                    bad += 1
                    continue
                producer, order = k >> 56, k & ((1 << 56) - 1)
                disorder += order <= last.get(producer, -1)
                last[producer] = order
                keys.append(k)
    except ShutDown:
        pass
    ring.close()
    with open(out_path, "wb") as f:
        f.write(struct.pack("<QQ", bad, disorder))
        keys.tofile(f)


def read_consumer_output(path):
    with open(path, "rb") as f:
        bad, disorder = struct.unpack("<QQ", f.read(16))
        keys = np.fromfile(f, dtype="<u8")
    return bad, disorder, keys


@CAPACITIES
def test_c_producers_killed_python_consumers_count(peer, make_ring, tmp_path, capacity):
    """PRODUCERS C producers (rs_reserve + write + a pause now and then +
    rs_commit, rs_put, rs_put_many of 1..8), one SIGKILLed every few ms and
    started again from the sequence number it recorded as committed, under a
    new incarnation; a Python producer beside them (never killed: it takes
    over the put lock from dead C producers too); CONSUMERS Python consumers
    take everything."""
    began = time.monotonic()
    ring = make_ring(capacity=capacity)
    rng = random.Random(os.getpid())
    ledger = Ledger(tmp_path / "ledger", int((KILLS + SOAK / KILL_EVERY) * 2) + 100)
    c_peers = CPeers(peer, tmp_path)
    ctx = multiprocessing.get_context("fork")
    outputs = [tmp_path / f"consumer-{c}.bin" for c in range(CONSUMERS)]
    consumers = [ctx.Process(target=python_consumer, args=(ring.name, c, str(outputs[c])))
                 for c in range(CONSUMERS)]
    stop = ctx.Event()
    python_sent = ctx.Value("Q", 0, lock=False)
    python_producer_process = ctx.Process(
        target=python_producer,
        args=(ring.name, PRODUCERS, stop, python_sent, "mixed", PYTHON_INCARNATION))
    incarnations = {}        # slot -> [producer, start, committed, pending, killed]

    def start(producer, seq):
        slot = ledger.new_slot()
        for word in (P_START, P_PENDING, P_COMMITTED):
            ledger.set(slot, word, seq)   # what a process killed before it stored anything said
        incarnations[slot] = [producer, seq, None, None, False]
        c_peers.start(slot, "produce", ring.name, ledger.path, slot, producer, seq,
                      rng.getrandbits(32))
        return slot

    def settle(slot, killed):
        info = incarnations[slot]
        info[2] = ledger.get(slot, P_COMMITTED)
        info[3] = ledger.get(slot, P_PENDING)
        info[4] = killed
        return info

    def replace(producer, slot):
        c_peers.kill(slot)
        return start(producer, settle(slot, True)[2])

    try:
        for process in consumers + [python_producer_process]:
            process.start()
        producers = [start(p, 0) for p in range(PRODUCERS)]
        kills, kill_time = kill_loop(producers, replace, rng)
        stop.set()
        python_producer_process.join(DEADLINE)
        assert python_producer_process.exitcode == 0
        incarnations[PYTHON_INCARNATION] = [PRODUCERS, 0, python_sent.value,
                                            python_sent.value, False]
        for slot in producers:
            ledger.set(slot, P_STOP, 1)
        for slot in producers:
            c_peers.wait(slot)
            settle(slot, False)
        ring.shutdown()    # the consumers drain what is left, then see ShutDown
        for process in consumers:
            process.join(DEADLINE)
            assert process.exitcode == 0, f"Python consumer exit code {process.exitcode}"
    finally:
        stop.set()
        c_peers.close()
        for process in consumers + [python_producer_process]:
            join_or_kill(process, timeout=1)
        ledger.close()

    # What the consumers got (NumPy: a soak run gets tens of millions).
    parts, bad, disorder = [], 0, 0
    for path in outputs:
        b, d, keys = read_consumer_output(path)
        bad += b
        disorder += d
        parts.append(keys)
    assert bad == 0, "messages that were not whole and intact"
    assert disorder == 0, "a producer's order was not kept within a consumer"
    everything = np.concatenate(parts)
    total = len(everything)
    got = np.unique(everything)          # sorted
    del everything, parts
    twice_from_one = total - len(got)
    assert twice_from_one == 0, "a message of one incarnation arrived twice"

    def arrived(producer, slot, first, end):
        """How many of numbers first..end-1 of incarnation `slot` arrived."""
        # np.uint64: a Python int would be compared as a float64 (53 bits).
        return int(np.searchsorted(got, np.uint64(key(producer, slot, end)))
                   - np.searchsorted(got, np.uint64(key(producer, slot, first))))

    # Each incarnation: everything it committed arrived, from it, once; only
    # numbers it was putting when killed may have arrived beyond that;
    # nothing at or past `pending` (a phantom).
    published_as_killed = lost = committed_total = in_ranges = 0
    for slot, (producer, first, committed, pending, killed) in incarnations.items():
        assert first <= committed <= pending, (slot, first, committed, pending)
        assert pending - committed <= (8 if killed else 0), (slot, committed, pending)
        committed_total += committed - first
        lost += committed - first - arrived(producer, slot, first, committed)
        published_as_killed += arrived(producer, slot, committed, pending)
        in_ranges += arrived(producer, slot, first, pending)
    assert lost == 0, f"{lost} committed messages never arrived"
    phantoms = len(got) - in_ranges
    assert phantoms == 0, f"{phantoms} messages that no producer was putting"

    # The same number from two incarnations: the earlier one was killed after
    # the ring published it and before it recorded the commit, and the next
    # one (which starts at what was recorded) sent it again.  Every copy but
    # one must be such an unrecorded copy.
    numbers = (got >> np.uint64(56) << np.uint64(32)) | (got & np.uint64(0xFFFFFFFF))
    values, counts = np.unique(numbers, return_counts=True)
    by_number = collections.defaultdict(list)
    for k in got[np.isin(numbers, values[counts > 1])].tolist():
        producer, slot, seq = unkey(k)
        by_number[producer, seq].append(slot)
    del numbers, values, counts
    duplicates = explained = 0
    for (producer, seq), slots in by_number.items():
        unrecorded = sum(seq >= incarnations[s][2] for s in slots)
        duplicates += len(slots) - 1
        explained += min(len(slots) - 1, unrecorded)
        assert len(slots) - 1 <= unrecorded, (producer, seq, slots)
    assert explained == duplicates

    stats = ring.stats()
    put_recoveries, get_recoveries = lock_recoveries(ring)
    assert total == committed_total + published_as_killed
    assert stats["messages_put"] == stats["messages_got"] == total
    assert stats["messages"] == 0 and len(ring) == 0
    assert stats["lock_recoveries"] == put_recoveries > 0
    assert get_recoveries == 0     # no consumer died
    killed_incarnations = sum(info[4] for info in incarnations.values())
    assert killed_incarnations == kills
    print(f"\n{capacity >> 10} KiB ring, C producers killed: {kills} kills in "
          f"{kill_time:.1f} s ({put_recoveries} inside the put lock: taken over), {total} "
          f"messages got by {CONSUMERS} Python consumers ({python_sent.value} from the Python "
          f"producer; {committed_total} recorded committed, {published_as_killed} published by "
          f"producers killed before they recorded it), {duplicates} duplicates, all explained "
          f"(sent again by the next incarnation), 0 lost, 0 phantoms; "
          f"{time.monotonic() - began:.1f} s in all")


# ---------------------------------------------------- C consumers, Python producers

def read_log(path, count):
    """The first `count` entries of a C consumer's log."""
    if count == 0:
        return np.zeros(0, dtype=np.uint64)
    entries = np.fromfile(path, dtype="<u8", count=count).astype(np.uint64)
    assert len(entries) == count
    return entries


@CAPACITIES
def test_c_consumers_killed_python_producers_count(peer, make_ring, tmp_path, capacity):
    """CONSUMERS C consumers (rs_get, and rs_view + log + a pause now and then
    + rs_release) SIGKILLed every few ms and started again, and a Python
    consumer beside them (never killed: it takes over the get lock from dead
    C consumers too); Python producers put numbered messages (put, put_many,
    and put, put_many, reserve mixed).  A C consumer logs what it got (after
    rs_get returned, before rs_release)."""
    began = time.monotonic()
    ring = make_ring(capacity=capacity)
    rng = random.Random(os.getpid() + 1)
    ledger = Ledger(tmp_path / "ledger", int((KILLS + SOAK / KILL_EVERY) * 2) + 100)
    c_peers = CPeers(peer, tmp_path)
    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    hows = ["put", "put_many", "mixed"]
    sent = [ctx.Value("Q", 0, lock=False) for _ in hows]
    producers = [ctx.Process(target=python_producer, args=(ring.name, p, stop, sent[p], how))
                 for p, how in enumerate(hows)]
    python_output = tmp_path / "python-consumer.bin"
    python_consumer_process = ctx.Process(target=python_consumer,
                                          args=(ring.name, 0, str(python_output)))
    logs = []                             # what each incarnation logged
    tally = collections.Counter()         # bad, disorder, killed, logged
    maybe_again = collections.Counter()   # logged inside view(), then killed before release
    in_flight_allowed = 0                 # killed inside rs_get(): one message may be unlogged

    def start(role):
        slot = ledger.new_slot()
        c_peers.start(slot, "consume", ring.name, ledger.path, slot,
                      tmp_path / f"log-{slot}", LOG_CAP, rng.getrandbits(32))
        return slot

    def settle(slot, killed):
        nonlocal in_flight_allowed
        path = tmp_path / f"log-{slot}"
        logged = ledger.get(slot, C_LOGGED)
        phase = ledger.get(slot, C_PHASE)
        viewing = ledger.get(slot, C_VIEWING)
        entries = read_log(path, max(logged, viewing))
        if killed and viewing:
            # Killed between logging what rs_view showed and the end of
            # rs_release: that message may still be in the ring.
            maybe_again[int(entries[viewing - 1])] += 1
        entries = entries[:logged]
        if os.path.exists(path):
            os.unlink(path)
        logs.append(entries)
        tally["bad"] += ledger.get(slot, C_BAD) + int((entries == BAD_ENTRY).sum())
        for producer in range(len(hows)):
            mine = entries[entries >> np.uint64(56) == producer].astype(np.int64)
            tally["disorder"] += int((np.diff(mine) <= 0).sum())
        tally["killed"] += killed
        if killed and phase == IN_GET:
            in_flight_allowed += 1

    def replace(role, slot):
        c_peers.kill(slot)
        settle(slot, True)
        return start(role)

    try:
        for process in producers + [python_consumer_process]:
            process.start()
        consumers = [start(c) for c in range(CONSUMERS)]
        kills, kill_time = kill_loop(consumers, replace, rng)
        stop.set()
        for process in producers:
            process.join(DEADLINE)
            assert process.exitcode == 0, f"Python producer exit code {process.exitcode}"
        ring.shutdown()    # the consumers drain what is left, then exit on RS_SHUTDOWN
        for slot in consumers:
            c_peers.wait(slot)
            settle(slot, False)
        python_consumer_process.join(DEADLINE)
        assert python_consumer_process.exitcode == 0
    finally:
        stop.set()
        c_peers.close()
        for process in producers + [python_consumer_process]:
            join_or_kill(process, timeout=1)
        ledger.close()
    sent = [s.value for s in sent]
    bad, disorder, python_got = read_consumer_output(python_output)
    tally["bad"] += bad
    tally["disorder"] += disorder
    logs.append(python_got)

    assert tally["bad"] == 0, "messages that were not whole and intact"
    assert tally["disorder"] == 0, "a producer's order was not kept within a consumer"
    everything = np.concatenate(logs)
    logged = len(everything)
    got, copies = np.unique(everything, return_counts=True)
    del everything
    producer_of = got >> np.uint64(56)
    limit = np.array(sent + [0], dtype=np.uint64)[np.minimum(producer_of, len(sent))]
    phantoms = int(((got & np.uint64(0xFFFFFFFF)) >= limit).sum())
    assert phantoms == 0, f"{phantoms} messages that no producer put"

    # A message logged twice (or more): every copy but one must be the last
    # message of a consumer killed between logging it in view() and the end
    # of its rs_release (the tail not yet published: delivered again).
    duplicates = unexplained = 0
    for k, n in zip(got[copies > 1].tolist(), copies[copies > 1].tolist()):
        duplicates += n - 1
        unexplained += max(0, n - 1 - maybe_again[k])
    assert unexplained == 0, f"{unexplained} of {duplicates} duplicates are not explained"

    # Never logged: consumed by a consumer killed inside rs_get() after the
    # ring published its tail, before it could log: at most one per such kill.
    put_total = sum(sent)
    missing = put_total - len(got)
    assert 0 <= missing <= in_flight_allowed, \
        f"{missing} messages never arrived ({in_flight_allowed} consumers killed inside rs_get)"

    stats = ring.stats()
    put_recoveries, get_recoveries = lock_recoveries(ring)
    # The ring consumed each message put exactly once (the dying consumers'
    # half-done publishes repaired): its counters say so, exactly.
    assert stats["messages_put"] == stats["messages_got"] == put_total
    assert stats["messages"] == 0 and len(ring) == 0
    assert stats["lock_recoveries"] == get_recoveries > 0
    assert put_recoveries == 0     # no producer died
    assert tally["killed"] == kills
    print(f"\n{capacity >> 10} KiB ring, C consumers killed: {kills} kills in "
          f"{kill_time:.1f} s ({get_recoveries} inside the get lock: taken over), {put_total} "
          f"messages put by {len(hows)} Python producers (put, put_many, mixed), {logged} got "
          f"({len(python_got)} by the Python consumer): {duplicates} duplicates, each the "
          f"message a consumer killed between logging it in view() and the end of its "
          f"rs_release had logged ({sum(maybe_again.values())} such kills), {missing} consumed "
          f"unlogged ({in_flight_allowed} kills inside rs_get), 0 lost; "
          f"{time.monotonic() - began:.1f} s in all")
