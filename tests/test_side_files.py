"""Queue side files outlive nobody (issue 14, items 1 and 2; SPEC, "Behaviour
made exact in 0.3"): the side files of items larger than the ring go within
1 s of their ring's last user, however the creator dies (its watcher removes
them, ringshm/watcher.py); `ringshm ls` shows their bytes with their queue
and `ringshm gc` removes what a creator killed together with its watcher
left; a ring that later takes the same name never touches them, and a
Queue's close() keeps those another object of the same process still needs.

Every test looks only at the files of the rings it made (by their identity,
and by their name for the 0.2 layout of names), never at anything else in
/dev/shm; `gc` runs only in a private /dev/shm (privateshm)."""

import contextlib
import hashlib
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import time

import faultkit
import pytest
from conftest import child_env, shm_path
from privateshm import in_private_tmpfs, needs_unshare

import ringshm.queue
from ringshm import Queue, Ring

pytestmark = [pytest.mark.multiprocess]

SHM_DIR = "/dev/shm"
SIDE_PREFIX = "ringshm-item."
GONE_WITHIN = 1.0      # the promise
TIMEOUT = 30.0


def pattern(size, seed):
    block = hashlib.sha256(repr(seed).encode()).digest() * 2048   # 64 KiB
    return (block * (size // len(block) + 1))[:size]


def digest(data):
    return hashlib.sha256(data).hexdigest()


def files_of(name, identity):
    """The side files of the ring of `identity` (0.3 names them by it), or
    of `name` (0.2 named them by the ring's name)."""
    prefixes = tuple(f"{SIDE_PREFIX}{key}." for key in (identity, name) if key)
    try:
        return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefixes))
    except FileNotFoundError:
        return []


def nothing_left(name, identity):
    return not files_of(name, identity) and not os.path.exists(shm_path(name))


def left_after(name, identity, since, bound=GONE_WITHIN):
    """What is still there of the ring once `since` + `bound` has passed
    (returns as soon as nothing is)."""
    while True:
        if nothing_left(name, identity):
            return []
        if time.monotonic() > since + bound:
            left = files_of(name, identity)
            return left + ([shm_path(name)] if os.path.exists(shm_path(name)) else [])
        time.sleep(0.005)


@pytest.fixture
def ours():
    """ours(name, identity) notes a ring this test made; at teardown
    whatever is left of it (its side files, its name) is removed, so that
    a failing run leaves nothing behind (only ours: by its identity and
    its name)."""
    made = []
    yield lambda name, identity: made.append((name, identity))
    for name, identity in made:
        for left in files_of(name, identity):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(SHM_DIR, left))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(shm_path(name))


def ringshm_cli(*args):
    return subprocess.run([sys.executable, "-m", "ringshm", *args], capture_output=True,
                          text=True, timeout=120, env=child_env())


def the_watcher_of(creator_pid, timeout=10.0):
    """The pid of the watcher process of `creator_pid` once it runs."""
    give_up = time.monotonic() + timeout
    while True:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().rstrip(b"\0").split(b"\0")
                with open(f"/proc/{entry}/stat", "rb") as f:
                    parent = int(f.read().rpartition(b")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if (len(argv) >= 2 and argv[-2].endswith(b"watcher.py")
                    and argv[-1] == str(creator_pid).encode() and parent != creator_pid):
                return int(entry)
        assert time.monotonic() < give_up, f"no watcher for {creator_pid}"
        time.sleep(0.01)


# -- item 1: nothing outlives the creator ---------------------------------------------

CREATOR = textwrap.dedent("""
    import json, os, sys, time
    from ringshm import Queue
    before = set(os.listdir("/dev/shm"))
    q = Queue(capacity=1 << 16)
    for i in range(5):
        q.put(bytes([i]) * 100_000)
    # This ring's (named by its identity; by its name before 0.3), not
    # those of whoever else runs beside us.
    mine = tuple(f"ringshm-item.{key}." for key in (q._ring.identity, q.name))
    made = sorted(n for n in set(os.listdir("/dev/shm")) - before if n.startswith(mine))
    print(json.dumps({"name": q.name, "identity": q._ring.identity, "files": made}),
          flush=True)
    time.sleep(3600)
""")


@pytest.mark.fault
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_creators_side_files_go_within_a_second(signum, ours):
    """The issue's case: Queue(capacity=1 << 16), five 100 KB items, the
    creator killed: the ring went within 1 s, its five files stayed."""
    creator = subprocess.Popen([sys.executable, "-c", CREATOR], stdout=subprocess.PIPE,
                               text=True, env=child_env())
    try:
        made = json.loads(creator.stdout.readline())
        ours(made["name"], made["identity"])
        assert len(made["files"]) == 5
        creator.send_signal(signum)
        creator.wait(timeout=30)
        died = time.monotonic()
        assert left_after(made["name"], made["identity"], died) == []
    finally:
        if creator.poll() is None:
            creator.kill()
            creator.wait()
        creator.stdout.close()


def _create_put_and_wait(link, items):
    q = Queue(capacity=64 << 10)
    for item in items:
        q.put(item)
    link.ready(json.dumps({"name": q.name, "identity": q._ring.identity}))
    time.sleep(600)   # killed here


def _attach_and_read_on_go(link, name, count):
    """Another process of the queue, attached by name; reads `count` items
    when told, then waits to be killed (it never closes)."""
    q = ringshm.queue._rebuild(Queue, Ring.open(name), 0, pickle.dumps, pickle.loads)
    link.ready("attached")
    link.wait_go()
    for _ in range(count):
        link.ready(digest(q.get(timeout=TIMEOUT)))
    time.sleep(600)


@pytest.mark.fault
def test_side_files_wait_for_the_last_process_that_maps_the_ring(ours):
    """The creator is killed while another process maps its ring: the
    ring's name goes, the big items stay readable there; once that process
    is killed too (nobody closes anything), they go within 1 s."""
    items = [pattern(200_000, n) for n in range(3)]
    with faultkit.Child(_create_put_and_wait, items) as creator:
        facts = json.loads(creator.wait_ready())
        name, identity = facts["name"], facts["identity"]
        ours(name, identity)
        with faultkit.Child(_attach_and_read_on_go, name, 1) as reader:
            assert reader.wait_ready() == "attached"
            creator.kill()
            faultkit.wait_until(lambda: not os.path.exists(shm_path(name)),
                                timeout=GONE_WITHIN, what="the ring's name to go")
            assert len(files_of(name, identity)) == 3
            reader.go()               # the items are still there to read
            assert reader.wait_ready() == digest(items[0])
            faultkit.wait_until(lambda: len(files_of(name, identity)) == 2,
                                what="the consumed item's file to go")
            reader.kill()
            died = time.monotonic()
            assert left_after(name, identity, died) == []


def _drain_on_go(link, q, count):
    link.ready("attached")
    link.wait_go()
    for _ in range(count):
        link.ready(digest(q.get(timeout=TIMEOUT)))
    link.ready("read")
    time.sleep(600)   # killed here, without closing


def _create_close_and_linger(link, items):
    """A creator that closes its queue while a child still drains it, then
    lives on: its watcher has the queued items' files."""
    q = Queue(capacity=64 << 10)
    with faultkit.Child(_drain_on_go, q, len(items) - 1) as child:
        assert child.wait_ready() == "attached"
        for item in items:
            q.put(item)
        facts = {"name": q.name, "identity": q._ring.identity}
        q.close()
        link.ready(json.dumps(facts))
        link.wait_go()
        child.go()
        for item in items[:-1]:
            assert child.wait_ready() == digest(item)
        assert child.wait_ready() == "read"
        child.kill()                  # the last user dies, one item still queued
        link.ready("killed")
        time.sleep(600)


@pytest.mark.fault
def test_a_creator_that_closed_leaves_queued_items_to_its_watcher(ours):
    """close() while another process drains the queue keeps the queued
    items' files (that process reads them); when that process is killed
    without closing, they go within 1 s, the creator still running."""
    items = [pattern(200_000, ("closed", n)) for n in range(3)]
    with faultkit.Child(_create_close_and_linger, items) as creator:
        facts = json.loads(creator.wait_ready())
        name, identity = facts["name"], facts["identity"]
        ours(name, identity)
        assert not os.path.exists(shm_path(name))
        assert len(files_of(name, identity)) == 3
        creator.go()
        assert creator.wait_ready() == "killed"
        died = time.monotonic()
        assert left_after(name, identity, died) == []


# -- item 2: another ring of the same name, another object of this process --------------

def _read_after_go(link, q, count):
    link.ready("attached")
    link.wait_go()
    for _ in range(count):
        link.ready(digest(q.get(timeout=TIMEOUT)))
    q.close()
    link.ready("closed")


def test_a_new_ring_of_the_same_name_never_touches_the_old_rings_side_files(ring_name, ours):
    """The issue's case: a named Queue closed while a consumer elsewhere
    still drains it; the service restarts with the same name; the new
    ring's tail passes the old files' ends and its sweeps run: the old
    consumer still gets every item (0.2: RingCorrupted), and `ls` counts
    each ring's files with that ring."""
    old = Queue(name=ring_name, capacity=64 << 10)
    old_identity = old._ring.identity
    ours(ring_name, old_identity)
    items = [pattern(100_000, ("old", n)) for n in range(3)]
    with faultkit.Child(_read_after_go, old, len(items)) as consumer:
        assert consumer.wait_ready() == "attached"
        for item in items:
            old.put(item)
        old.close()                   # the name goes; the consumer maps the ring
        new = Queue(name=ring_name, capacity=64 << 10)
        ours(ring_name, new._ring.identity)
        try:
            assert new._ring.identity != old_identity
            for _ in range(300):      # the new tail passes the old files' ends
                new.put(b"x" * 100)
                assert new.get(timeout=TIMEOUT) == b"x" * 100
            for n in range(3):        # big puts and gets sweep the ring's files
                new.put(pattern(100_000, ("new", n)))
                assert new.get(timeout=TIMEOUT) == pattern(100_000, ("new", n))
            new.put(pattern(100_000, "queued in the new ring"))
            listing = json.loads(ringshm_cli("ls", "--json").stdout)
            consumer.go()
            for item in items:
                assert consumer.wait_ready() == digest(item)
            assert consumer.wait_ready() == "closed"
            assert consumer.join() == 0
            (row,) = [r for r in listing if r["name"] == ring_name]
            assert row["side_files"] == 1             # the new ring's own item only
            (old_row,) = [r for r in listing if r["name"] == old_identity]
            assert (old_row["side_files"], old_row["state"]) == (3, "in use")
        finally:
            new.close()
    assert files_of(ring_name, old_identity) == []


def test_close_keeps_the_side_files_another_queue_object_of_this_process_needs(ours):
    """0.2's close() counted no mapping of its own process: the creator's
    close() deleted the files of items that another Queue object of the
    same process (attached by name) still had to get."""
    q = Queue(capacity=64 << 10)
    name, identity = q.name, q._ring.identity
    ours(name, identity)
    other = pickle.loads(pickle.dumps(q))   # attached by name, in this process
    try:
        first, second = pattern(100_000, "first"), pattern(100_000, "second")
        q.put(first)
        q.put(second)
        q.close()                      # the creator: the name goes
        assert len(files_of(name, identity)) == 2
        assert other.get(timeout=TIMEOUT) == first
    finally:
        other.close()                  # the last one out: the second item's file goes
    assert files_of(name, identity) == []


# -- ls ----------------------------------------------------------------------------------

def test_ls_shows_side_file_bytes_with_their_queue(ring_name, ours):
    q = Queue(name=ring_name, capacity=64 << 10)
    ours(ring_name, q._ring.identity)
    try:
        q.put(pattern(100_000, 1))
        q.put(pattern(150_000, 2))
        done = ringshm_cli("ls", "--json")
        assert done.returncode == 0, done.stderr
        (row,) = [r for r in json.loads(done.stdout) if r["name"] == ring_name]
        assert row["side_files"] == 2
        assert 250_000 < row["side_bytes"] < 260_000
        from ringshm.census import human_size
        text = ringshm_cli("ls").stdout.splitlines()
        assert text[0].split()[:8] == ["NAME", "CAPACITY", "USED", "MESSAGES", "CREATOR",
                                       "ALIVE", "SIDE", "STATE"]
        (line,) = [line.split() for line in text if line.split()[:1] == [ring_name]]
        assert line[6] == human_size(row["side_bytes"])
    finally:
        q.close()


# -- gc ----------------------------------------------------------------------------------

GC_SCENE = """
import random, signal, subprocess, time
from ringshm import Queue, Ring
from ringshm.ring import shm_path

def cli(*args):
    done = subprocess.run([sys.executable, "-m", "ringshm", *args],
                          capture_output=True, text=True)
    return {"status": done.returncode, "out": done.stdout, "err": done.stderr}

def watcher_of(creator):
    while True:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().rstrip(b"\\0").split(b"\\0")
                with open(f"/proc/{entry}/stat", "rb") as f:
                    parent = int(f.read().rpartition(b")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if (len(argv) >= 2 and argv[-2].endswith(b"watcher.py")
                    and argv[-1] == str(creator).encode() and parent != creator):
                return int(entry)
        time.sleep(0.01)

def dead(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True

def creator_killed_with_its_watcher(count, size):
    # A creator that put `count` big items, then was SIGKILLed together
    # with its watcher: its ring and files stay, for `gc`.
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        q = Queue(capacity=1 << 16)
        for i in range(count):
            q.put(bytes([i]) * size)
        os.write(write_end, (q._ring.identity + " " + q.name).encode())
        time.sleep(3600)
    identity, name = os.read(read_end, 200).decode().split()
    watcher = watcher_of(pid)
    os.kill(watcher, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    while not dead(watcher):
        time.sleep(0.01)
    return identity, name

def dead_pid():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid

def sides():
    return sorted(n for n in os.listdir(MOUNT) if n.startswith("ringshm-item."))

def work(q, role):
    try:
        while True:
            if role == "put":
                q.put(b"w" * 100_000, timeout=30)
            else:
                q.get(timeout=30)
    finally:
        os._exit(0)

def killed_at_random_with_its_watcher(rng):
    # A creator, a producer and a consumer forked from it, all at work, and
    # the creator's watcher: the watcher SIGKILLed first, then the others in
    # a random order at random moments, big items in flight.
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        q = Queue(maxsize=6, capacity=1 << 16)
        kids = []
        for role in ("put", "get"):
            kid = os.fork()
            if kid == 0:
                work(q, role)
            kids.append(kid)
        os.write(write_end, json.dumps([q._ring.identity, q.name, kids]).encode())
        work(q, "put")
    identity, name, kids = json.loads(os.read(read_end, 4096))
    watcher = watcher_of(pid)
    time.sleep(rng.uniform(0.01, 0.05))
    os.kill(watcher, signal.SIGKILL)
    while not dead(watcher):
        time.sleep(0.001)
    victims = [pid] + kids
    rng.shuffle(victims)
    for victim in victims:
        os.kill(victim, signal.SIGKILL)
        time.sleep(rng.uniform(0, 0.01))
    os.waitpid(pid, 0)
    for victim in victims:
        while not dead(victim):
            time.sleep(0.001)
    return identity, name

rng = random.Random()
at_random = [killed_at_random_with_its_watcher(rng) for _ in range(10)]

killed_rings = [creator_killed_with_its_watcher(n, 100_000) for n in (5, 1, 3)]
killed = [identity for identity, _ in killed_rings]
# A live queue's files: never touched.
live = Queue(capacity=1 << 16)
live.put(b"L" * 100_000)
# A ring whose creator and watcher died but which a live process maps:
# its item may still be read there, so its file stays.
mapped, mapped_name = creator_killed_with_its_watcher(2, 100_000)
holder = Ring.open(mapped_name)
os.unlink(shm_path(mapped_name))   # its name gone, as the watcher would
# Not provably ours: another program's file under our prefix, a file of a
# dead producer that is not a side file (no magic), a link. And an empty
# one of a dead producer (it died before writing the header): garbage.
gone = dead_pid()
for junk in ("ringshm-item.notours", f"ringshm-item.{'ab' * 16}.{gone}.1.1"):
    with open(os.path.join(MOUNT, junk), "wb") as f:
        f.write(b"x" * 1000)
os.symlink("/etc/passwd", os.path.join(MOUNT, f"ringshm-item.{'cd' * 16}.{gone}.1.2"))
empty = f"ringshm-item.{'ef' * 16}.{gone}.1.3"
open(os.path.join(MOUNT, empty), "wb").close()
before = sides()
listing = json.loads(cli("ls", "--json")["out"])
dry = cli("gc", "--dry-run")
after_dry = sides()
gc = cli("gc")
after = sorted(os.listdir(MOUNT))
print(json.dumps({"killed": killed, "killed_names": [n for _, n in killed_rings],
                  "live": live._ring.identity, "mapped": mapped,
                  "before": before, "listing": listing, "dry": dry, "after_dry": after_dry,
                  "gc": gc, "after": after, "gone": gone, "empty": empty,
                  "at_random": at_random,
                  "live_ring": "ringshm." + live.name}))
"""


@needs_unshare
@pytest.mark.fault
def test_gc_removes_what_a_creator_killed_with_its_watcher_left():
    status, result = in_private_tmpfs(GC_SCENE, size="64M")
    assert status == 0
    killed, live, mapped = result["killed"], result["live"], result["mapped"]
    side = [n for n in result["before"] if n.startswith(tuple(
        f"{SIDE_PREFIX}{key}." for key in killed + result["killed_names"]))]
    assert len(side) == 5 + 1 + 3

    # ls: each stale ring shows its files' bytes (the count of the first
    # three killed: they finished their puts).
    rows = {row.get("identity"): row for row in result["listing"] if row["kind"] == "shm"}
    for identity, count in zip(killed, (5, 1, 3)):
        assert rows[identity]["state"] == "stale"
        assert rows[identity]["side_files"] == count
        assert count * (100_000 + 64) < rows[identity]["side_bytes"] < count * 100_200
    assert rows[live]["side_files"] == 1 and rows[live]["state"] == "ok"
    (held,) = [row for row in result["listing"] if row["name"] == mapped]
    assert (held["kind"], held["side_files"], held["state"]) == ("side files", 2, "in use")

    # gc --dry-run: says what goes, removes nothing.
    assert result["dry"]["status"] == 0
    said = [line.split()[6] for line in result["dry"]["out"].splitlines()
            if line.startswith("would remove side files of queue ")]
    assert set(killed + ["ef" * 16]) <= set(said)   # and the empty file
    for identity, count in zip(killed, (5, 1, 3)):
        assert f"would remove side files of queue {identity} ({count} files," \
            in result["dry"]["out"]
    assert result["after_dry"] == result["before"]

    # gc: the stale rings and their files; never the live queue's, the
    # mapped ring's, or what it cannot prove is ours.
    assert result["gc"]["status"] == 0, result["gc"]["err"]
    assert result["gc"]["out"].count("removed side files of queue ") == len(said)
    after = result["after"]
    assert not [n for n in after if n.startswith(tuple(
        f"{SIDE_PREFIX}{identity}." for identity in killed))]
    assert result["live_ring"] in after
    assert len([n for n in after if n.startswith(f"{SIDE_PREFIX}{live}.")]) == 1
    assert len([n for n in after if n.startswith(f"{SIDE_PREFIX}{mapped}.")]) == 2
    gone = result["gone"]
    for junk in ("ringshm-item.notours", f"ringshm-item.{'ab' * 16}.{gone}.1.1",
                 f"ringshm-item.{'cd' * 16}.{gone}.1.2"):
        assert junk in after
    assert result["empty"] not in after

    # Ten creators killed at random points together with their watchers and
    # their producers and consumers: gc leaves nothing of them.
    random_keys = [key for pair in result["at_random"] for key in pair]
    random_names = [name for _, name in result["at_random"]]
    assert [n for n in result["before"]
            if n.startswith(tuple(f"{SIDE_PREFIX}{key}." for key in random_keys))]
    assert not [n for n in after
                if n.startswith(tuple(f"{SIDE_PREFIX}{key}." for key in random_keys))]
    assert not [n for n in after if n in {f"ringshm.{name}" for name in random_names}]


# -- queues killed at random points ------------------------------------------------------

ITEM = 100_000
PRODUCERS, CONSUMERS = 2, 1
ROUNDS = 100              # 4 processes killed a round: 400 kills


def _work(q, role, seed):
    rng = random.Random(seed)
    n = 0
    while True:
        if role == "put":
            size = ITEM if rng.random() < 0.8 else 100   # mostly side files
            q.put(bytes([n % 256]) * size, timeout=TIMEOUT)
        else:
            q.get(timeout=TIMEOUT)
        n += 1


def _round(link, seed):
    """A creator with producers and a consumer forked from it (attached
    copies of its queue); it produces too. Everyone runs until killed."""
    q = Queue(maxsize=6, capacity=1 << 16)
    pids = []
    for i, role in enumerate(["put"] * PRODUCERS + ["get"] * CONSUMERS):
        pid = os.fork()
        if pid == 0:
            try:
                _work(q, role, f"{seed}-{i}")
            finally:
                os._exit(0)
        pids.append(pid)
    link.ready(json.dumps({"name": q.name, "identity": q._ring.identity, "pids": pids}))
    _work(q, "put", f"{seed}-creator")


def _dead(pid):
    return faultkit.process_state(pid) in ("Z", "X", None)


@pytest.mark.fault
@pytest.mark.slow
def test_queues_killed_at_random_points_leave_nothing():
    """Rounds of a creator, two producers and a consumer, every process
    killed (SIGKILL or SIGTERM) in a random order at random moments while
    big items are in flight: within 1 s of the last death nothing of the
    ring is left in /dev/shm (ring or side files)."""
    rng = random.Random(int(os.environ.get("RINGSHM_SEED", "0")) or time.time_ns())
    started = time.monotonic()
    kills = outstanding = 0
    slowest = 0.0
    failures = []
    for round_number in range(ROUNDS):
        with faultkit.Child(_round, rng.getrandbits(32)) as creator:
            facts = json.loads(creator.wait_ready())
            name, identity = facts["name"], facts["identity"]
            victims = [creator.pid] + facts["pids"]
            rng.shuffle(victims)
            try:
                time.sleep(rng.uniform(0.005, 0.06))   # let it run: files in flight
                outstanding += len(files_of(name, identity))
                for pid in victims:
                    # Each was working until now (a crash would end it early).
                    assert not _dead(pid), f"{pid} ended before it was killed"
                    signum = rng.choice((signal.SIGKILL, signal.SIGKILL, signal.SIGTERM))
                    if pid == creator.pid:
                        os.kill(pid, signum)
                        creator.reap()
                    else:
                        os.kill(pid, signum)
                    kills += 1
                    time.sleep(rng.uniform(0, 0.02))
                for pid in victims:
                    faultkit.wait_until(lambda pid=pid: _dead(pid), what=f"{pid} to die")
                died = time.monotonic()
                left = left_after(name, identity, died)
                slowest = max(slowest, time.monotonic() - died)
                if left:
                    failures.append((round_number, left))
            finally:
                for pid in victims:
                    if not _dead(pid):
                        os.kill(pid, signal.SIGKILL)
                for left_name in files_of(name, identity):   # only ours, if any
                    os.unlink(os.path.join(SHM_DIR, left_name))
                if os.path.exists(shm_path(name)):
                    os.unlink(shm_path(name))
    elapsed = time.monotonic() - started
    print(f"\n[side files under kills] {kills} kills in {ROUNDS} rounds, {outstanding} side "
          f"files outstanding at the first kills, slowest cleanup {slowest:.3f} s, "
          f"{elapsed:.1f} s")
    assert kills >= 200
    assert outstanding > ROUNDS            # big items really were in flight
    assert not failures, f"left after {GONE_WITHIN} s: {failures[:5]}"
    assert elapsed < 60
