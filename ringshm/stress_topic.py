"""``ringshm stress --topic``: publishers and subscribers of one topic under
random SIGKILLs (and, optionally, SIGSTOP/SIGCONT), with an account of what
every subscriber received.

P publisher and T + U subscriber processes (T tethered, U untethered) share
one topic for S seconds; every MS milliseconds the supervisor SIGKILLs a
random worker and starts another in its place.  Then it stops the
publishers, shuts the topic down, lets each subscriber take what it still
has to take and judges (docs/RELIABILITY.md, "`ringshm stress --topic`"):

* A publisher is a *lineage*: a killed publisher's replacement continues its
  sequence numbers.  Before a publish it writes `pending` (the number after
  the batch) into a shared ledger, after the publish returned `committed`.
  A replacement starts at the dead one's `pending` and logs the numbers
  [`committed`, `pending`) as *uncertain*: published or not, both are fine.
* A subscriber is accounted from its subscription: it reads every
  lineage's `committed` before subscribe() and `pending` after it; numbers
  below the first were published before it (receiving one is an error),
  from the second on it is owed every message.  It checks each lineage's
  numbers as they come: a number again or backwards is a duplicate or an
  order violation; a jump is a gap, of which the uncertain numbers may be
  unpublished.  At ShutDown it counts the gap to each lineage's last
  `committed`.  A killed subscriber's replacement subscribes anew, in a
  slot of its own.
* Tethered: no gap but uncertain numbers, and never Lagged.  Untethered (or
  a tethered one untethered by --stall-timeout): the sum of its Lagged
  counts equals its gaps, less any uncertain number in them that was never
  published (exact when no gap holds an uncertain number, bounded by the
  two otherwise; a Lagged before a lineage's first message likewise leaves
  the numbers between `committed` and `pending` at subscription open).
* Each publish call is timed: the longest must stay under --stall-limit
  (killed subscribers are freed within about a recovery interval; SIGSTOP
  only stops untethered subscribers, and tethered ones if --stall-timeout).

Run ``ringshm stress --topic --help`` for the options.
"""

from __future__ import annotations

import argparse
import bisect
import json
import mmap
import os
import random
import signal
import sys
import time
import zlib
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ._stress_common import (
    DRAIN_TIMEOUT,
    EXIT_OK,
    HEADER,
    POLL,
    TICK,
    OutOfSlots,
    _interrupt,
    _nonnegative,
    _page_round,
    _positive,
    _size,
    _sizes,
    fork_worker,
    kill_all,
    kill_note,
    kill_worker,
    messages_of,
    next_batch,
    print_table,
)
from .errors import Empty, Full, Lagged, ShutDown
from .topic import Topic

__all__ = ["main"]

MAX_BATCH = 8
# Uncertain ranges one lineage may log (a replacement adds at most one, of
# at most MAX_BATCH numbers).
MAX_RANGES = 1 << 14
# Gaps holding uncertain numbers one untethered subscriber may log.
MAX_GAPS = 256
SUBSCRIBE_TRIES = 50
# The fate of an uncertain number, as subscribers learn it: received by
# someone, or passed over by a tethered subscriber that was owed it.
UNKNOWN, PUBLISHED, NOT_PUBLISHED = 0, 1, 2

# Control words.
STOP = 0
# A lineage's words.
COMMITTED, PENDING, MAX_STALL_NS, RANGES, INCARNATIONS = range(5)
LINEAGE_WORDS = 8
# A subscriber's words.
(SUBSCRIBED, RECEIVED, MISSED, LAGS, LOST, LOWER, UPPER, VIOLATIONS, CORRUPT, PHANTOM,
 OLD, UNTETHERED, TETHERED_LAGGED, DONE, OPEN, GAPS, CONFLICTS) = range(17)
# Its last settled account (every lineage heard from since its last Lagged,
# so every gap that Lagged counted is known): a killed subscriber's Lagged
# counts are checked there.  CHECKPOINT is odd while the copy is written.
CHECKPOINT = 17
SETTLED = (LOWER, UPPER, OPEN, MISSED, GAPS)   # copied to CHECKPOINT + 1...
# The topic's number of its first message (-1: not known): its account at
# ShutDown is then exact whatever the lineages' uncertain numbers.
START = CHECKPOINT + 1 + len(SETTLED)
START_TRIES = 100
SUB_WORDS = 24


class Ledger:
    """Shared words that outlive any worker (an anonymous shared mapping
    made before the first fork): a page of control words, each lineage's
    words, its log of uncertain ranges [lo, hi) and their numbers' fates,
    each subscriber's words and log of gaps (lineage, a, b)."""

    def __init__(self, lineages: int, subscriber_slots: int) -> None:
        self.lineages = lineages
        self.subscriber_slots = subscriber_slots
        control = mmap.PAGESIZE
        words = _page_round(lineages * LINEAGE_WORDS * 8)
        ranges = _page_round(lineages * MAX_RANGES * 2 * 8)
        fates = _page_round(lineages * MAX_RANGES * MAX_BATCH)
        subs = _page_round(subscriber_slots * SUB_WORDS * 8)
        gaps = _page_round(subscriber_slots * MAX_GAPS * 3 * 8)
        self._map = mmap.mmap(-1, control + words + ranges + fates + subs + gaps)
        view = memoryview(self._map)
        at = 0

        def part(size: int) -> memoryview:
            nonlocal at
            at += size
            return view[at - size:at]
        self.control = part(control).cast("q")
        self.words = part(words).cast("q")
        self.ranges = part(ranges).cast("q")
        self.fates = part(fates)
        self.subs = part(subs).cast("q")
        self.gaps = part(gaps).cast("q")

    def lineage(self, n: int, word: int) -> int:
        return self.words[n * LINEAGE_WORDS + word]

    def sub(self, slot: int, word: int) -> int:
        return self.subs[slot * SUB_WORDS + word]

    def log_uncertain(self, n: int, lo: int, hi: int) -> bool:
        """Log [lo, hi) as lineage n's uncertain numbers (the part past the
        last range: the log stays sorted and disjoint); False if full."""
        base = n * LINEAGE_WORDS
        count = self.words[base + RANGES]
        at = n * MAX_RANGES * 2
        if count:
            lo = max(lo, self.ranges[at + 2 * count - 1])
        if lo >= hi:
            return True
        if count >= MAX_RANGES:
            return False
        self.ranges[at + 2 * count] = lo
        self.ranges[at + 2 * count + 1] = hi
        self.words[base + RANGES] = count + 1   # after the range: readers see it whole
        return True


class Uncertain:
    """A subscriber's reader of the lineages' uncertain ranges."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.los: list[list[int]] = [[] for _ in range(ledger.lineages)]
        self.his: list[list[int]] = [[] for _ in range(ledger.lineages)]

    def fates(self, n: int, a: int, b: int) -> Iterator[int]:
        """Where in ledger.fates the fate of each of lineage n's uncertain
        numbers in [a, b) is."""
        ledger, los, his = self.ledger, self.los[n], self.his[n]
        known = ledger.lineage(n, RANGES)
        at = n * MAX_RANGES * 2
        for i in range(len(los), known):
            los.append(ledger.ranges[at + 2 * i])
            his.append(ledger.ranges[at + 2 * i + 1])
        i = bisect.bisect_right(his, a)
        while i < len(los) and los[i] < b:
            base = (n * MAX_RANGES + i) * MAX_BATCH - los[i]
            yield from range(base + max(a, los[i]), base + min(b, his[i]))
            i += 1

    def mark(self, n: int, a: int, b: int, fate: int) -> int:
        """Note the fate of lineage n's uncertain numbers in [a, b);
        returns how many there are, less one per number another
        subscriber found the other fate of (tethered: a loss)."""
        count = 0
        fates = self.ledger.fates
        for at in self.fates(n, a, b):
            if fates[at] == UNKNOWN or fates[at] == fate:
                fates[at] = fate
                count += 1
        return count


# ---------------------------------------------------------------- workers

def _publish(topic: Topic, ledger: Ledger, n: int, sizes: tuple[int, int], seed: int,
             supervisor: int) -> int:
    """Publish lineage n's messages until told to stop; returns the exit code."""
    rng = random.Random(seed)
    message = messages_of(rng, n, sizes)
    # A message takes 16 bytes and its payload rounded up to 16; a batch at
    # most half the log.
    span = 16 + (HEADER.size + sizes[1] + 15) // 16 * 16
    max_batch = min(MAX_BATCH, topic.capacity // 2 // span)
    words, control, base = ledger.words, ledger.control, n * LINEAGE_WORDS
    seq = words[base + PENDING]
    # The dead one's publish that did not return: in the topic or not.
    if not ledger.log_uncertain(n, words[base + COMMITTED], seq):
        raise RuntimeError(f"lineage {n}: more than {MAX_RANGES} uncertain ranges")
    words[base + INCARNATIONS] += 1
    while not control[STOP]:
        how, batch = next_batch(rng, max_batch, message, seq)
        count = len(batch)
        words[base + PENDING] = seq + count
        began = time.monotonic_ns()
        while True:
            try:
                if count > 1:
                    topic.publish_many(batch, timeout=POLL)
                elif how < 0.4:   # zero-copy: kills land inside the lock
                    with topic.reserve(len(batch[0]), timeout=POLL) as buf:
                        buf[:] = batch[0]
                else:
                    topic.publish(batch[0], timeout=POLL)
                break
            except Full:
                if control[STOP] or os.getppid() != supervisor:
                    words[base + PENDING] = seq   # not published (all or nothing)
                    return EXIT_OK
            except ShutDown:
                words[base + PENDING] = seq
                return EXIT_OK
        stall = time.monotonic_ns() - began
        if stall > words[base + MAX_STALL_NS]:
            words[base + MAX_STALL_NS] = stall
        words[base + COMMITTED] = seq + count
        seq += count
        if seq & 1023 < count and os.getppid() != supervisor:
            break
    return EXIT_OK


class Account:
    """One subscriber's checks, kept in its ledger words as they happen."""

    def __init__(self, ledger: Ledger, slot: int, tethered: bool) -> None:
        self.ledger = ledger
        self.w = ledger.subs
        self.base = slot * SUB_WORDS
        self.tethered = tethered
        self.uncertain = Uncertain(ledger)
        self.expected: dict[int, int] = {}
        self.lagged = False
        self.unsettled: set[int] = set()   # lineages not heard from since a Lagged
        self.changed = False               # the account, since its last checkpoint
        self.before: list[int] = []
        self.after: list[int] = []

    def _add(self, word: int, n: int) -> None:
        self.w[self.base + word] += n

    def gap(self, n: int, a: int, b: int, open_upper: int = 0) -> None:
        """Lineage n's numbers [a, b) did not come; `open_upper` more may
        have been owed (a Lagged before the lineage's first message)."""
        missing = max(0, b - a)
        if not missing and not open_upper:
            return
        self.changed = True
        if self.tethered:   # owed them all: the uncertain ones were not published
            self._add(LOST, missing - self.uncertain.mark(n, a, b, NOT_PUBLISHED))
            return
        uncertain = sum(1 for _ in self.uncertain.fates(n, a, b))
        self._add(LOWER, missing - uncertain)
        self._add(UPPER, missing)
        self._add(OPEN, open_upper)
        if uncertain:   # the supervisor learns their fates at the end
            logged = self.w[self.base + GAPS]
            if logged < MAX_GAPS:
                at = (self.base // SUB_WORDS * MAX_GAPS + logged) * 3
                self.ledger.gaps[at:at + 3] = array("q", (n, a, b))
            self.w[self.base + GAPS] = logged + 1

    def first(self, n: int, seq: int) -> None:
        """Lineage n's first number here (or its end, at ShutDown)."""
        before, after = self.before[n], self.after[n]
        open_upper = max(0, min(seq, after) - before) if self.lagged else 0
        self.gap(n, after, seq, open_upper)

    def check(self, message: bytes | memoryview) -> tuple[int, int, int]:
        """(word, lineage, number) of a message: word RECEIVED if it is
        whole, else the ledger word that counts what is wrong with it.  A
        view is checked inside its block and counted by take() after it
        (one written over while open raises Lagged as the block ends)."""
        if len(message) < HEADER.size:
            return CORRUPT, 0, 0
        n, seq, size, crc = HEADER.unpack_from(message)
        if (n >= self.ledger.lineages or size != len(message) - HEADER.size
                or zlib.crc32(message[HEADER.size:]) != crc):
            return CORRUPT, 0, 0
        if seq >= self.ledger.lineage(n, PENDING):
            return PHANTOM, 0, 0   # no publish was started for it
        return RECEIVED, n, seq

    def take(self, checked: tuple[int, int, int]) -> None:
        word, n, seq = checked
        if word != RECEIVED:
            self._add(word, 1)
            return
        expected = self.expected.get(n)
        if expected is None:
            if seq < self.before[n]:
                self._add(OLD, 1)   # published before we subscribed
            self.first(n, seq)
        elif seq < expected:
            self._add(VIOLATIONS, 1)
        elif seq > expected:
            self.gap(n, expected, seq)
        for at in self.uncertain.fates(n, seq, seq + 1):
            if self.ledger.fates[at] == NOT_PUBLISHED:
                self._add(CONFLICTS, 1)   # a tethered subscriber was owed it, did not get it
            self.ledger.fates[at] = PUBLISHED
        self.expected[n] = max(seq + 1, expected or 0)
        self._add(RECEIVED, 1)
        if self.unsettled:
            self.unsettled.discard(n)
        if self.changed and not self.unsettled:
            self.checkpoint()

    def checkpoint(self) -> None:
        w, base = self.w, self.base
        w[base + CHECKPOINT] += 1
        for i, word in enumerate(SETTLED):
            w[base + CHECKPOINT + 1 + i] = w[base + word]
        w[base + CHECKPOINT] += 1
        self.changed = False

    def untether(self) -> None:
        """Untethered by its stall_timeout: judged as untethered from now."""
        if self.tethered:
            self.w[self.base + UNTETHERED] = 1
            self.tethered = False

    def lag(self, missed: int, still_tethered: bool) -> None:
        self.lagged = True
        self.changed = True
        self.unsettled = set(range(self.ledger.lineages))
        self._add(MISSED, missed)
        self._add(LAGS, 1)
        if self.tethered:
            if still_tethered:
                self._add(TETHERED_LAGGED, 1)
            else:
                self.untether()

    def end(self) -> None:
        """ShutDown: what each lineage committed and we did not take."""
        for n in range(self.ledger.lineages):
            final = self.ledger.lineage(n, COMMITTED)
            expected = self.expected.get(n)
            if expected is None:
                self.first(n, final)
            else:
                self.gap(n, expected, final)
        self.w[self.base + DONE] = 1


def _subscribe(topic: Topic, ledger: Ledger, slot: int, tethered: bool,
               stall_timeout: float | None, seed: int, supervisor: int) -> int:
    """Take messages until the topic is shut down; returns the exit code."""
    rng = random.Random(seed)
    account = Account(ledger, slot, tethered)
    lineages = range(ledger.lineages)
    # One that may be overrun subscribes again while a publish was under way
    # (a few times): an overrun before a lineage's first message then leaves
    # no number open (published before the subscription, or after?).
    tries = SUBSCRIBE_TRIES if not tethered or stall_timeout else 1
    for attempt in range(tries):
        account.before = [ledger.lineage(n, COMMITTED) for n in lineages]
        try:
            sub = topic.subscribe(tethered=tethered,
                                  stall_timeout=stall_timeout if tethered else None)
        except ShutDown:
            return EXIT_OK
        account.after = [ledger.lineage(n, PENDING) for n in lineages]
        if account.before == account.after or attempt == tries - 1:
            break
        sub.close()
        time.sleep(rng.random() * 0.002)
    # The topic's number of our first message: what was published (the
    # topic's own count) less what we have still to take, read when no
    # publish came in between.
    ledger.subs[slot * SUB_WORDS + START] = -1
    for _ in range(START_TRIES):
        lag = sub.lag
        published = topic.stats()["published"]
        if sub.lag == lag:
            ledger.subs[slot * SUB_WORDS + START] = published - lag
            break
    ledger.subs[slot * SUB_WORDS + SUBSCRIBED] = 1
    while True:
        try:
            if rng.random() < 0.5:
                with sub.view(timeout=POLL) as mv:
                    checked = account.check(mv)
                account.take(checked)
            else:
                account.take(account.check(sub.get(timeout=POLL)))
        except Empty:
            if os.getppid() != supervisor:
                return EXIT_OK
        except Lagged as exc:
            account.lag(exc.missed, sub.tethered)
        except ShutDown:
            if not sub.tethered:
                account.untether()
            account.end()
            return EXIT_OK


# ---------------------------------------------------------------- the supervisor

@dataclass
class Worker:
    kind: str        # "publisher", "tethered" or "untethered"
    slot: int        # the lineage of a publisher, the ledger slot of a subscriber


@dataclass
class Settings:
    publishers: int
    tethered: int
    untethered: int
    seconds: float
    kill_every: float          # seconds; 0: never
    stop_every: float          # seconds; 0: never
    stop_for: float
    stall_timeout: float | None
    stall_limit: float
    sizes: tuple[int, int]
    capacity: int
    recovery_interval: float
    seed: int
    name: str | None
    quiet: bool
    json: bool


@dataclass
class Run:
    workers: dict[int, Worker] = field(default_factory=dict)
    next_sub: int = 0
    kills: dict[str, int] = field(default_factory=lambda: {
        "publisher": 0, "tethered": 0, "untethered": 0})
    stops: int = 0
    killed_subs: set[int] = field(default_factory=set)
    sub_kinds: dict[int, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    ended_early: str | None = None
    elapsed: float = 0.0


class Supervisor:
    def __init__(self, settings: Settings, topic: Topic, ledger: Ledger) -> None:
        self.s = settings
        self.topic = topic
        self.ledger = ledger
        self.run = Run()
        self.rng = random.Random(settings.seed)
        self.pid = os.getpid()
        self.stopped: dict[int, float] = {}   # pid: when to SIGCONT it

    def spawn(self, kind: str, slot: int = -1) -> None:
        run = self.run
        if kind != "publisher":
            if run.next_sub >= self.ledger.subscriber_slots:
                raise OutOfSlots("subscriber")
            slot, run.next_sub = run.next_sub, run.next_sub + 1
            run.sub_kinds[slot] = kind
        seed = self.rng.getrandbits(64)
        fork_worker(lambda: self._worker(kind, slot, seed), run.workers, Worker(kind, slot))

    def _worker(self, kind: str, slot: int, seed: int) -> int:
        topic = Topic.open(self.topic.name)
        if kind == "publisher":
            return _publish(topic, self.ledger, slot, self.s.sizes, seed, self.pid)
        return _subscribe(topic, self.ledger, slot, kind == "tethered", self.s.stall_timeout,
                          seed, self.pid)

    def kill_random(self) -> None:
        pid = self.rng.choice(sorted(self.run.workers))
        worker = kill_worker(pid, self.run.workers)
        self.stopped.pop(pid, None)
        self.run.kills[worker.kind] += 1
        if worker.kind != "publisher":
            self.run.killed_subs.add(worker.slot)
        self.spawn(worker.kind, worker.slot)

    def stop_random(self, now: float) -> None:
        """SIGSTOP a subscriber that should not hold publishers back for
        long: an untethered one, or a tethered one with a stall_timeout."""
        can = [pid for pid, w in self.run.workers.items() if pid not in self.stopped
               and (w.kind == "untethered" or (w.kind == "tethered" and self.s.stall_timeout))]
        if can:
            pid = self.rng.choice(sorted(can))
            self._signal(pid, signal.SIGSTOP)
            self.stopped[pid] = now + self.s.stop_for
            self.run.stops += 1

    def _signal(self, pid: int, signum: int) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:   # reaped: the books are wrong
            self.run.errors.append(f"signal {signum} to worker {pid}: no such process "
                                   f"(on the books: {pid in self.run.workers})")

    def resume(self, now: float) -> None:
        for pid, when in list(self.stopped.items()):
            if when <= now:
                self._signal(pid, signal.SIGCONT)
                del self.stopped[pid]

    def reap(self, respawn: bool) -> None:
        while self.run.workers:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            worker = self.run.workers.pop(pid, None)
            self.stopped.pop(pid, None)
            if worker is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            if code != EXIT_OK:
                self.run.errors.append(f"{worker.kind} {worker.slot} (pid {pid}) exited "
                                       f"with status {code}")
            if respawn:   # during the run: nothing ends by itself
                if code == EXIT_OK:
                    self.run.errors.append(f"{worker.kind} {worker.slot} (pid {pid}) ended "
                                           "by itself")
                if worker.kind != "publisher":
                    self.run.killed_subs.add(worker.slot)   # its account ended early
                self.spawn(worker.kind, worker.slot)

    def main_phase(self) -> None:
        s = self.s
        start = time.monotonic()
        for n in range(s.publishers):
            self.spawn("publisher", n)
        for _ in range(s.tethered):
            self.spawn("tethered")
        for _ in range(s.untethered):
            self.spawn("untethered")
        end = start + s.seconds
        next_kill = start + s.kill_every if s.kill_every else float("inf")
        next_stop = start + s.stop_every if s.stop_every else float("inf")
        shown = 0.0
        try:
            while (now := time.monotonic()) < end:
                self.reap(respawn=True)
                self.resume(now)
                if now >= next_kill:
                    self.kill_random()
                    next_kill = max(next_kill + s.kill_every, now)
                if now >= next_stop:
                    self.stop_random(now)
                    next_stop = max(next_stop + s.stop_every, now)
                if not s.quiet and now - shown >= 2.0:
                    shown = now
                    stats = self.topic.stats()
                    print(f"{now - start:6.1f} s  published {stats['published']:>10}  "
                          f"kills {sum(self.run.kills.values()):>5}  stops {self.run.stops:>4}"
                          f"  recoveries {stats['lock_recoveries']:>4}", file=sys.stderr)
                time.sleep(TICK)
        except OutOfSlots as exc:
            self.run.ended_early = (f"out of {exc} slots in the ledger after "
                                    f"{time.monotonic() - start:.1f} s")
        self.run.elapsed = time.monotonic() - start

    def finish(self) -> None:
        """SIGCONT the stopped, stop the publishers, shut the topic down,
        let the subscribers take the rest."""
        self.resume(float("inf"))
        self.ledger.control[STOP] = 1
        give_up = time.monotonic() + DRAIN_TIMEOUT
        while any(w.kind == "publisher" for w in self.run.workers.values()):
            self.reap(respawn=False)
            if time.monotonic() > give_up:
                self.run.errors.append("publishers did not stop")
                break
            time.sleep(TICK)
        self.topic.shutdown()
        while self.run.workers and time.monotonic() < give_up:
            self.reap(respawn=False)
            time.sleep(TICK)
        if self.run.workers:
            self.run.errors.append(f"{len(self.run.workers)} subscribers did not end "
                                   "after shutdown()")
            kill_all(self.run.workers)


# ---------------------------------------------------------------- the account

@dataclass
class Result:
    published: int = 0           # committed by publishes that returned
    uncertain: int = 0           # numbers of publishes that did not return
    received: int = 0
    lost: int = 0                # tethered: owed, not received, not uncertain
    duplicated: int = 0          # a number again, or backwards
    corrupt: int = 0             # bad header or checksum, phantom, or from before
    lagged: int = 0              # Lagged raised to untethered subscribers
    missed: int = 0              # their counts' sum
    unexplained: int = 0         # untethered accounts whose Lagged and gaps disagree
    whole: int = 0               # survivors whose received + missed = published since their start
    not_whole: int = 0           # ... and those whose do not
    checked: int = 0             # killed untethered subscribers checked at a checkpoint
    exact: int = 0               # untethered accounts exact
    bounded: int = 0             # ... within bounds (a fate unknown, or a number open)
    tethered_lagged: int = 0     # Lagged raised to a still-tethered subscriber
    conflicts: int = 0           # received, though a tethered subscriber passed it over
    untethered_by_stall: int = 0
    subscribers: int = 0
    survivors: int = 0
    unfinished: int = 0          # survivors that did not reach ShutDown
    longest_stall: float = 0.0   # seconds, one publish call
    kills: dict[str, int] = field(default_factory=dict)
    stops: int = 0
    lock_recoveries: int = 0
    reaped: int = 0
    broken: list[str] = field(default_factory=list)


def _bounds(ledger: Ledger, slot: int, settled: bool) -> tuple[int, int, int] | None:
    """What an untethered subscriber's Lagged counts may add up to (low,
    high: equal when it is exact), and what they do: at ShutDown, or
    (`settled`) at its last checkpoint (None: none whole)."""
    def get(_: int, word: int) -> int:
        return ledger.sub(slot, CHECKPOINT + 1 + SETTLED.index(word) if settled else word)
    if settled and ledger.sub(slot, CHECKPOINT) % 2 or not ledger.sub(slot, CHECKPOINT):
        return None   # killed while writing it, or before the first
    low, high = get(slot, LOWER), get(slot, UPPER) + get(slot, OPEN)
    logged = get(slot, GAPS)
    if logged <= MAX_GAPS:
        uncertain = Uncertain(ledger)
        for i in range(logged):
            at = (slot * MAX_GAPS + i) * 3
            n, a, b = ledger.gaps[at:at + 3]
            for fate in uncertain.fates(n, a, b):
                if ledger.fates[fate] == PUBLISHED:
                    low += 1
                elif ledger.fates[fate] == NOT_PUBLISHED:
                    high -= 1
    return low, high, get(slot, MISSED)


def _whole(ledger: Ledger, slot: int, published: int) -> bool | None:
    """Whether a subscriber that reached ShutDown took, or was told it
    missed, exactly every message published from its first on (None: its
    first is not known)."""
    start = ledger.sub(slot, START)
    if start < 0:
        return None
    return ledger.sub(slot, RECEIVED) + ledger.sub(slot, MISSED) == published - start


def account(s: Settings, ledger: Ledger, run: Run, stats: dict[str, Any]) -> Result:
    r = Result(kills=dict(run.kills), stops=run.stops,
               lock_recoveries=stats["lock_recoveries"], reaped=stats["reaped"])
    for n in range(s.publishers):
        r.published += ledger.lineage(n, COMMITTED)
        r.longest_stall = max(r.longest_stall, ledger.lineage(n, MAX_STALL_NS) / 1e9)
        at = n * MAX_RANGES * 2
        r.uncertain += sum(ledger.ranges[at + 2 * i + 1] - ledger.ranges[at + 2 * i]
                           for i in range(ledger.lineage(n, RANGES)))
    for slot in range(run.next_sub):
        if not ledger.sub(slot, SUBSCRIBED):
            continue
        r.subscribers += 1
        get = ledger.sub
        r.received += get(slot, RECEIVED)
        r.lost += get(slot, LOST)
        r.duplicated += get(slot, VIOLATIONS)
        r.corrupt += get(slot, CORRUPT) + get(slot, PHANTOM) + get(slot, OLD)
        r.conflicts += get(slot, CONFLICTS)
        r.lagged += get(slot, LAGS)
        r.missed += get(slot, MISSED)
        r.tethered_lagged += get(slot, TETHERED_LAGGED)
        r.untethered_by_stall += get(slot, UNTETHERED)
        killed = slot in run.killed_subs
        if not killed:
            r.survivors += 1
            if not get(slot, DONE):
                r.unfinished += 1
                continue
            whole = _whole(ledger, slot, stats["published"])
            r.whole += whole is True
            r.not_whole += whole is False
        if run.sub_kinds[slot] == "untethered" or get(slot, UNTETHERED):
            bounds = _bounds(ledger, slot, settled=killed)
            if bounds is None:
                continue
            low, high, missed = bounds
            r.checked += killed
            if not low <= missed <= high:
                r.unexplained += 1
            elif low == high:
                r.exact += 1
            else:
                r.bounded += 1
    b = r.broken
    if r.lost:
        b.append(f"{r.lost} messages lost by tethered subscribers")
    if r.duplicated:
        b.append(f"{r.duplicated} duplicates or order violations")
    if r.corrupt:
        b.append(f"{r.corrupt} corrupt, phantom or older than the subscription")
    if r.conflicts:
        b.append(f"{r.conflicts} messages received that a tethered subscriber passed over")
    if r.tethered_lagged:
        b.append(f"{r.tethered_lagged} Lagged raised to tethered subscribers")
    if r.unexplained:
        b.append(f"{r.unexplained} untethered subscribers whose Lagged counts do not match "
                 "their gaps")
    if r.not_whole:
        b.append(f"{r.not_whole} subscribers whose messages received and Lagged counts do "
                 "not add up to what was published after they subscribed")
    if r.unfinished:
        b.append(f"{r.unfinished} subscribers did not reach ShutDown")
    limit = s.stall_limit + (s.stall_timeout or 0.0)
    if r.longest_stall > limit:
        b.append(f"a publish stalled {r.longest_stall:.3f} s (limit {limit:g} s)")
    b += run.errors
    return r


def report(s: Settings, run: Run, r: Result) -> None:
    if s.json:
        print(json.dumps({"settings": asdict(s), "elapsed": run.elapsed,
                          "ended_early": run.ended_early, **asdict(r),
                          "result": "FAIL" if r.broken else "PASS"}, indent=2))
        sys.stdout.flush()
        return
    k = r.kills
    rows = [
        ("messages published", r.published,
         f"+ {r.uncertain} by publishes that did not return" if r.uncertain else ""),
        ("messages received", r.received, f"by {r.subscribers} subscribers"),
        ("lost", r.lost, "tethered: owed and not received"),
        ("duplicated", r.duplicated, "or out of order"),
        ("corrupt or phantom", r.corrupt, ""),
        ("lagged", r.lagged, f"untethered: {r.missed} messages missed"),
        ("lagged accounts", f"{r.exact}/{r.bounded}/{r.unexplained}",
         f"untethered: exact/within bounds/wrong; {r.checked} of them killed ones, "
         "checked at their last settled point"),
        ("whole accounts", f"{r.whole}/{r.survivors}",
         "survivors: received + Lagged counts = published since their first"),
        ("untethered by stall", r.untethered_by_stall,
         f"stall_timeout {s.stall_timeout:g} s" if s.stall_timeout else "no stall_timeout"),
        ("kills", sum(k.values()), f"{k['publisher']} publishers, {k['tethered']} tethered, "
                                   f"{k['untethered']} untethered"),
        ("stops", r.stops, f"SIGSTOP for {s.stop_for * 1000:g} ms" if r.stops else ""),
        ("lock recoveries", r.lock_recoveries, f"dead subscribers freed {r.reaped}"),
        ("longest stall", f"{r.longest_stall:.3f} s", "the longest publish call"),
        ("result", "FAIL" if r.broken else "PASS", ""),
    ]
    stop_note = f", a SIGSTOP every {s.stop_every * 1000:g} ms" if s.stop_every else ""
    print(f"ringshm stress --topic: {s.publishers} publishers, {s.tethered} tethered and "
          f"{s.untethered} untethered subscribers, {run.elapsed:.1f} s, {kill_note(s.kill_every)}"
          f"{stop_note}, payloads {s.sizes[0]}:{s.sizes[1]} bytes, capacity {s.capacity}")
    print_table(run.ended_early, rows, r.broken)


# ---------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ringshm stress --topic",
        description="Publishers and subscribers of one topic while workers are SIGKILLed "
                    "(and SIGSTOPped) at random; what every subscriber received accounted "
                    "for.  Exit status 1 if an invariant broke.  See docs/RELIABILITY.md.")
    parser.add_argument("--publishers", type=_positive(int), default=2, metavar="P")
    parser.add_argument("--tethered", type=int, default=3, metavar="T",
                        help="tethered subscribers (default 3)")
    parser.add_argument("--untethered", type=int, default=1, metavar="U",
                        help="untethered subscribers (default 1)")
    parser.add_argument("--seconds", type=_positive(float), default=10.0, metavar="S")
    parser.add_argument("--kill-every", type=_nonnegative, default=200.0, metavar="MS",
                        help="SIGKILL a random worker every MS milliseconds and start "
                             "another (default 200; 0: never)")
    parser.add_argument("--stop-every", type=_nonnegative, default=0.0, metavar="MS",
                        help="SIGSTOP a random untethered subscriber (or tethered, with "
                             "--stall-timeout) every MS milliseconds (default 0: never)")
    parser.add_argument("--stop-for", type=_positive(float), default=300.0, metavar="MS",
                        help="then SIGCONT it after MS milliseconds (default 300)")
    parser.add_argument("--stall-timeout", type=_positive(float), default=None, metavar="S",
                        help="the tethered subscribers' stall_timeout (default none)")
    parser.add_argument("--stall-limit", type=_positive(float), default=3.0, metavar="S",
                        help="the longest publish call allowed, plus the stall timeout "
                             "(default 3: about the recovery interval, and a loaded "
                             "machine's scheduling)")
    parser.add_argument("--sizes", type=_sizes, default=(1, 512), metavar="MIN:MAX")
    parser.add_argument("--capacity", type=_size, default=64 << 10, metavar="N")
    parser.add_argument("--recovery-interval", type=_positive(float), default=0.1,
                        metavar="SECONDS")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--name", default=None, help="topic name (default: a fresh one)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--json", action="store_true", help="the result as JSON")
    parser.add_argument("--topic", action="store_true", help=argparse.SUPPRESS)   # the mode
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the topic stress test; returns the exit status (0 all well, 1 an
    invariant broke or a worker failed, 130 interrupted).

    Raises:
        SystemExit: bad usage (status 2) or --help.
    """
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.tethered < 0 or args.untethered < 0 or args.tethered + args.untethered < 1:
        parser.error("--tethered and --untethered: at least one subscriber")
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    s = Settings(args.publishers, args.tethered, args.untethered, args.seconds,
                 args.kill_every / 1000, args.stop_every / 1000, args.stop_for / 1000,
                 args.stall_timeout, args.stall_limit, args.sizes, args.capacity,
                 args.recovery_interval, seed, args.name, args.quiet, args.json)
    kills = int(s.seconds / s.kill_every) + 1 if s.kill_every else 0
    ledger = Ledger(s.publishers, s.tethered + s.untethered + kills + 16)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    topic = supervisor = None
    try:
        topic = Topic.create(s.name, capacity=s.capacity, recovery_interval=s.recovery_interval)
        if HEADER.size + s.sizes[1] > topic.max_message_size:
            parser.error(f"--sizes: a message of {HEADER.size + s.sizes[1]} bytes does not "
                         f"fit a topic of {topic.capacity} bytes")
        supervisor = Supervisor(s, topic, ledger)
        if not s.quiet:
            print(f"topic {topic.name}, seed {seed}", file=sys.stderr)
        supervisor.main_phase()
        supervisor.finish()
        result = account(s, ledger, supervisor.run, topic.stats())
        report(s, supervisor.run, result)
        return 1 if result.broken else 0
    except KeyboardInterrupt:
        print("ringshm stress: interrupted", file=sys.stderr)
        return 130
    finally:
        if supervisor is not None:
            supervisor.resume(float("inf"))
            kill_all(supervisor.run.workers)
        if topic is not None:
            topic.close()
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
