"""``ringshm stress``: producers and consumers under random SIGKILLs, with an
exact account of every message.

P producer and C consumer processes share one ring for S seconds; every MS
milliseconds the supervisor (this process) SIGKILLs a random worker and
starts a new one in its place.  Then it stops the producers, waits for the
ring to drain, shuts it down and prints a table.  Exit status 1 if an
invariant broke.  docs/RELIABILITY.md explains the accounting; in short:

* Each producer incarnation has an id and numbers its messages 0, 1, 2...
  Before a put it writes `pending` (the sequence number after the batch)
  into a shared ledger, after the put returned `committed`.  A producer
  killed between the two leaves messages that may or may not be in the
  ring: delivered or not, both are fine.
* Consumers count every message they receive in a shared byte per (producer,
  sequence number), so the count survives their own SIGKILL.  With view()
  a consumer records the message inside the with-block, before it is
  consumed: if it dies after recording, the message is delivered again, a
  duplicate that the ledger explains (its last record, and its state at
  death, are in the ledger).  With get() a consumer records after get()
  returned: if it dies in between, one message may be gone unrecorded
  ("in flight"), at most one per such kill.
* lost = committed messages nobody recorded, less those in flight.  It must
  be 0, and so must order violations (each consumer sees each producer's
  numbers increase), corrupt messages (bad checksum or header) and phantom
  ones (numbers no put was started for).

Run ``ringshm stress --help`` for the options.
"""

from __future__ import annotations

import argparse
import mmap
import os
import random
import signal
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ._stress_common import (
    DRAIN_TIMEOUT,
    EXIT_OK,
    EXIT_RETIRED,
    HEADER,
    POLL,
    TICK,
    OutOfSlots,
    Worker,
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
from .errors import Empty, Full, ShutDown
from .ring import Ring

__all__ = ["main"]

# An empty message: the supervisor's last put (see Supervisor.finish); not
# counted.
END_MARKER = b""
# Messages one producer incarnation may put (one ledger byte each); then it
# retires and a new incarnation takes its slot.
SEQ_LIMIT = 1 << 20
# Keep the ledger under this many bytes of (lazily touched) shared memory:
# only the pages of sequence numbers really delivered are ever touched (a
# run of 17 M messages touches ~20 MB), so the budget bounds address space,
# not memory.  4 GiB: a 2-minute run with a kill every 50 ms needs ~2,800
# producer slots of 1 MiB.
LEDGER_BUDGET = 1 << 32
MAX_BATCH = 8             # put_many batches of 2..MAX_BATCH messages


# Control words of the ledger.
STOP, MEASURING, LAST_PROGRESS, LONGEST_GAP = range(4)
# A producer's words.
COMMITTED, PENDING = range(2)
PRODUCER_WORDS = 2
# A consumer's words; STATE says where it is, for the post-mortem.
STATE, LAST_ID, LAST_SEQ, RECEIVED, VIOLATIONS, CORRUPT, PHANTOM = range(7)
CONSUMER_WORDS = 8
IDLE, IN_GET, IN_VIEW = 0, 1, 2


# ---------------------------------------------------------------- the ledger

class Ledger:
    """Shared bookkeeping that outlives any worker: an anonymous shared
    mapping made before the first fork, so every worker inherits it.

    Layout: a page of control words, the producers' words, the consumers'
    words, then SEQ_LIMIT delivery counts (one byte each) per producer."""

    def __init__(self, producer_slots: int, consumer_slots: int) -> None:
        self.producer_slots = producer_slots
        self.consumer_slots = consumer_slots
        control = mmap.PAGESIZE
        producers = _page_round(producer_slots * PRODUCER_WORDS * 8)
        consumers = _page_round(consumer_slots * CONSUMER_WORDS * 8)
        self._counts_at = control + producers + consumers
        self._map = mmap.mmap(-1, self._counts_at + producer_slots * SEQ_LIMIT)
        view = memoryview(self._map)
        self.control = view[:control].cast("q")
        self.producers = view[control:control + producers].cast("q")
        self.consumers = view[control + producers:self._counts_at].cast("q")
        self.counts = view[self._counts_at:]

    def producer(self, slot: int, word: int) -> int:
        return self.producers[slot * PRODUCER_WORDS + word]

    def consumer(self, slot: int, word: int) -> int:
        return self.consumers[slot * CONSUMER_WORDS + word]

    def counts_of(self, slot: int, end: int) -> bytes:
        """Delivery counts of producer `slot`'s sequence numbers 0..end-1."""
        start = self._counts_at + slot * SEQ_LIMIT
        return self._map[start:start + end]


# ---------------------------------------------------------------- workers

def _produce(ring: Ring, ledger: Ledger, slot: int, sizes: tuple[int, int],
             seed: int, supervisor: int) -> int:
    """Put messages until told to stop; returns the exit code."""
    rng = random.Random(seed)
    message = messages_of(rng, slot, sizes)
    # A batch may take at most half the ring (DESIGN.md, "batches").
    max_batch = min(MAX_BATCH, ring.capacity // 2 // _record_span(HEADER.size + sizes[1]))
    words = ledger.producers
    base = slot * PRODUCER_WORDS
    control = ledger.control
    seq = 0
    while not control[STOP]:
        how, batch = next_batch(rng, max_batch, message, seq)
        count = len(batch)
        if seq + count > SEQ_LIMIT:
            return EXIT_RETIRED
        words[base + PENDING] = seq + count
        while True:
            try:
                if count > 1:
                    ring.put_many(batch, timeout=POLL)
                elif how < 0.4:
                    # Zero-copy: the put lock is held while we write, so
                    # kills land inside it.
                    with ring.reserve(len(batch[0]), timeout=POLL) as buf:
                        buf[:] = batch[0]
                else:
                    ring.put(batch[0], timeout=POLL)
                break
            except Full:
                if control[STOP] or os.getppid() != supervisor:
                    return EXIT_OK
            except ShutDown:
                return EXIT_OK
        words[base + COMMITTED] = seq + count
        seq += count
        if seq & 1023 < count and os.getppid() != supervisor:
            break
    return EXIT_OK


def _consume(ring: Ring, ledger: Ledger, slot: int, mode: str, seed: int,
             supervisor: int) -> int:
    """Take messages until the ring is shut down; returns the exit code."""
    rng = random.Random(seed)
    words = ledger.consumers
    base = slot * CONSUMER_WORDS
    control = ledger.control
    counts = ledger.counts
    producers = ledger.producers
    last_seq: dict[int, int] = {}   # per producer, for the order check
    unpack = HEADER.unpack_from

    def record(message: bytes | memoryview) -> None:   # get(), or view()
        if len(message) == 0:
            return   # END_MARKER
        if len(message) < HEADER.size:
            words[base + CORRUPT] += 1
            return
        producer, seq, size, crc = unpack(message)
        if (producer >= ledger.producer_slots or seq >= SEQ_LIMIT
                or size != len(message) - HEADER.size
                or zlib.crc32(message[HEADER.size:]) != crc):
            words[base + CORRUPT] += 1
            return
        if seq >= producers[producer * PRODUCER_WORDS + PENDING]:
            words[base + PHANTOM] += 1   # no put was started for it
            return
        if seq <= last_seq.get(producer, -1):
            words[base + VIOLATIONS] += 1
        last_seq[producer] = seq
        # Who we are about to count, then the count: a duplicate caused by
        # our death inside view() can be traced to this record.
        words[base + LAST_ID] = producer
        words[base + LAST_SEQ] = seq
        at = producer * SEQ_LIMIT + seq
        counts[at] = min(counts[at] + 1, 255)
        words[base + RECEIVED] += 1
        now = time.monotonic_ns()
        if control[MEASURING]:
            gap = now - control[LAST_PROGRESS]
            control[LONGEST_GAP] = max(control[LONGEST_GAP], gap)
        control[LAST_PROGRESS] = now

    while True:
        use_view = mode == "view" or (mode == "mixed" and rng.random() < 0.5)
        try:
            if use_view:
                words[base + STATE] = IN_VIEW
                words[base + LAST_ID] = -1   # nothing recorded in this window yet
                with ring.view(timeout=POLL) as mv:
                    record(mv)
            else:
                words[base + STATE] = IN_GET
                record(ring.get(timeout=POLL))
            words[base + STATE] = IDLE
        except Empty:
            words[base + STATE] = IDLE
            if os.getppid() != supervisor:
                return EXIT_OK
        except ShutDown:
            words[base + STATE] = IDLE
            return EXIT_OK


def _record_span(payload: int) -> int:
    return (8 + payload + 7) & ~7


# ---------------------------------------------------------------- the supervisor


@dataclass
class Settings:
    producers: int
    consumers: int
    seconds: float
    kill_every: float          # seconds; 0: no kills
    sizes: tuple[int, int]
    capacity: int
    consume: str
    recovery_interval: float
    seed: int
    name: str | None
    quiet: bool


@dataclass
class Run:
    """What the supervisor saw."""
    workers: dict[int, Worker] = field(default_factory=dict)
    next_producer: int = 0
    next_consumer: int = 0
    kills: dict[str, int] = field(default_factory=lambda: {"producer": 0, "consumer": 0})
    killed_producers: list[int] = field(default_factory=list)
    killed_consumers: list[tuple[int, int]] = field(default_factory=list)   # (slot, state)
    retired: int = 0
    errors: list[str] = field(default_factory=list)
    ended_early: str | None = None
    elapsed: float = 0.0
    longest_stall: float = 0.0


class Supervisor:
    def __init__(self, settings: Settings, ring: Ring, ledger: Ledger) -> None:
        self.s = settings
        self.ring = ring
        self.ledger = ledger
        self.run = Run()
        self.rng = random.Random(settings.seed)
        self.pid = os.getpid()

    # -- workers -----------------------------------------------------------

    def spawn(self, kind: str) -> None:
        run = self.run
        if kind == "producer":
            if run.next_producer >= self.ledger.producer_slots:
                raise OutOfSlots("producer")
            slot, run.next_producer = run.next_producer, run.next_producer + 1
        else:
            if run.next_consumer >= self.ledger.consumer_slots:
                raise OutOfSlots("consumer")
            slot, run.next_consumer = run.next_consumer, run.next_consumer + 1
        seed = self.rng.getrandbits(64)
        fork_worker(lambda: self._worker(kind, slot, seed), run.workers, Worker(kind, slot))

    def _worker(self, kind: str, slot: int, seed: int) -> int:
        """The body of a forked worker; never returns into the supervisor."""
        ring = Ring.open(self.ring.name)
        if kind == "producer":
            return _produce(ring, self.ledger, slot, self.s.sizes, seed, self.pid)
        return _consume(ring, self.ledger, slot, self.s.consume, seed, self.pid)

    def kill_random(self) -> None:
        pid = self.rng.choice(sorted(self.run.workers))
        worker = kill_worker(pid, self.run.workers)
        self.run.kills[worker.kind] += 1
        if worker.kind == "producer":
            self.run.killed_producers.append(worker.slot)
        else:
            state = self.ledger.consumer(worker.slot, STATE)
            self.run.killed_consumers.append((worker.slot, state))
        self.spawn(worker.kind)

    def reap(self, respawn: bool) -> dict[str, int]:
        """Reap workers that ended; start new ones in their place if
        `respawn`.  Returns how many of each kind ended."""
        ended = {"producer": 0, "consumer": 0}
        while self.run.workers:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            worker = self.run.workers.pop(pid, None)
            if worker is None:
                continue
            ended[worker.kind] += 1
            code = os.waitstatus_to_exitcode(status)
            if code == EXIT_RETIRED:
                self.run.retired += 1
            elif code != EXIT_OK:
                self.run.errors.append(f"{worker.kind} {worker.slot} (pid {pid}) "
                                       f"exited with status {code}")
            if respawn:
                self.spawn(worker.kind)
        return ended

    def kill_all(self) -> None:
        kill_all(self.run.workers)

    # -- the run -----------------------------------------------------------

    def main_phase(self) -> None:
        s, control = self.s, self.ledger.control
        start = time.monotonic()
        control[LAST_PROGRESS] = time.monotonic_ns()
        control[MEASURING] = 1
        for _ in range(s.producers):
            self.spawn("producer")
        for _ in range(s.consumers):
            self.spawn("consumer")
        end = start + s.seconds
        next_kill = start + s.kill_every if s.kill_every else float("inf")
        progress = Progress(s.quiet)
        longest = 0
        try:
            while True:
                now = time.monotonic()
                if now >= end:
                    break
                self.reap(respawn=True)
                if now >= next_kill:
                    self.kill_random()
                    next_kill = max(next_kill + s.kill_every, now)
                longest = max(longest, time.monotonic_ns() - control[LAST_PROGRESS])
                progress.show(now - start, self.ring.stats(), self.run)
                time.sleep(TICK)
        except OutOfSlots as exc:
            self.run.ended_early = (f"out of {exc} slots in the ledger after "
                                    f"{time.monotonic() - start:.1f} s")
        control[MEASURING] = 0
        self.run.elapsed = time.monotonic() - start
        self.run.longest_stall = max(longest, control[LONGEST_GAP]) / 1e9
        progress.done()

    def finish(self) -> None:
        """Stop the producers, drain the ring, shut it down, let the
        consumers go."""
        try:
            self._drain()
        except OutOfSlots as exc:   # workers that keep failing: reported already
            self.run.errors.append(f"no {exc} slot left in the ledger to drain the ring")
        self.ring.shutdown()
        give_up = time.monotonic() + DRAIN_TIMEOUT
        while self.run.workers and time.monotonic() < give_up:
            self.reap(respawn=False)
            time.sleep(TICK)
        if self.run.workers:
            self.run.errors.append(f"{len(self.run.workers)} workers did not end "
                                   "after shutdown()")
            self.kill_all()

    def _drain(self) -> None:
        control = self.ledger.control
        control[STOP] = 1
        give_up = time.monotonic() + DRAIN_TIMEOUT
        while any(w.kind == "producer" for w in self.run.workers.values()):
            ended = self.reap(respawn=False)
            if ended["consumer"]:   # a consumer died by itself: keep draining
                for _ in range(ended["consumer"]):
                    self.spawn("consumer")
            if time.monotonic() > give_up:
                self.run.errors.append("producers did not stop")
                break
            time.sleep(TICK)
        # One last put of our own: it takes the put lock over from a
        # producer killed inside it (completing the counters), so the ring's
        # counters can be checked exactly below.  Consumers skip it.
        try:
            self.ring.put(END_MARKER, timeout=max(give_up - time.monotonic(), 1.0))
        except Full:
            self.run.errors.append("the ring stayed full after the producers stopped")
        while True:
            stats = self.ring.stats()
            if stats["head"] == stats["tail"]:
                break
            self.reap(respawn=True)
            if time.monotonic() > give_up:
                self.run.errors.append(f"the ring did not drain: {stats['messages']} "
                                       "messages left")
                break
            time.sleep(TICK)


class Progress:
    """One line of progress on stderr: rewritten in place on a terminal, a
    new line every few seconds otherwise."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.every = 0.2 if self.tty else 2.0
        self.next = self.every

    def show(self, elapsed: float, stats: dict[str, Any], run: Run) -> None:
        if self.quiet or elapsed < self.next:
            return
        self.next = elapsed + self.every
        line = (f"{elapsed:6.1f} s  put {stats['messages_put']:>10}  "
                f"got {stats['messages_got']:>10}  in ring {stats['messages']:>6}  "
                f"kills {sum(run.kills.values()):>4}  "
                f"recoveries {stats['lock_recoveries']:>4}")
        sys.stderr.write(("\r" + line) if self.tty else (line + "\n"))
        sys.stderr.flush()

    def done(self) -> None:
        if self.tty and not self.quiet:
            sys.stderr.write("\n")


# ---------------------------------------------------------------- the account

@dataclass
class Account:
    committed: int = 0          # messages whose put() returned
    started: int = 0            # messages a put was started for
    at_death: int = 0           # delivered, put by a producer killed before it recorded
    got: int = 0                # deliveries recorded (duplicates included)
    missing: int = 0            # committed, recorded by nobody
    in_flight: int = 0          # consumers killed between get() and recording
    duplicated: int = 0
    explained: int = 0          # duplicates of a record made inside view() by the dead
    allowed: int = 0            # consumers killed inside view()
    violations: int = 0
    corrupt: int = 0
    phantom: int = 0

    @property
    def lost(self) -> int:
        return max(0, self.missing - self.in_flight)


# Delivery counts with 1 (delivered once) mapped to 0: what is left are
# duplicates.
_DUPLICATES = bytes.maketrans(b"\x01", b"\x00")


def account(ledger: Ledger, run: Run) -> Account:
    a = Account()
    redelivered = {(ledger.consumer(slot, LAST_ID), ledger.consumer(slot, LAST_SEQ))
                   for slot, state in run.killed_consumers if state == IN_VIEW}
    a.allowed = sum(state == IN_VIEW for _, state in run.killed_consumers)
    a.in_flight = sum(state == IN_GET for _, state in run.killed_consumers)
    killed = set(run.killed_producers)
    for slot in range(run.next_producer):
        committed = ledger.producer(slot, COMMITTED)
        pending = ledger.producer(slot, PENDING)
        counts = ledger.counts_of(slot, pending)
        a.committed += committed
        a.started += pending
        a.missing += counts[:committed].count(0)
        after = counts[committed:]
        if slot in killed:
            a.at_death += len(after) - after.count(0)
        a.got += len(counts) - counts.count(0)
        duplicates = counts.translate(_DUPLICATES)
        at = _first_nonzero(duplicates, 0)
        while at >= 0:   # rare: at most one per consumer kill when all is well
            extra = counts[at] - 1
            a.got += extra
            a.duplicated += extra
            if extra == 1 and (slot, at) in redelivered:
                a.explained += 1
            at = _first_nonzero(duplicates, at + 1)
    for slot in range(run.next_consumer):
        a.violations += ledger.consumer(slot, VIOLATIONS)
        a.corrupt += ledger.consumer(slot, CORRUPT)
        a.phantom += ledger.consumer(slot, PHANTOM)
    return a


def _first_nonzero(data: bytes, start: int) -> int:
    """Index of the first nonzero byte at or after `start`, or -1."""
    rest = data[start:].lstrip(b"\x00")
    return len(data) - len(rest) if rest else -1


def report(s: Settings, run: Run, a: Account, stats: dict[str, Any]) -> list[str]:
    """Print the table; return the invariants that broke."""
    broken = []
    if a.lost:
        broken.append(f"{a.lost} committed messages lost")
    if a.duplicated > a.explained:
        broken.append(f"{a.duplicated - a.explained} duplicates that no consumer's "
                      "death inside view() explains")
    if a.violations:
        broken.append(f"{a.violations} order violations")
    if a.corrupt or a.phantom:
        broken.append(f"{a.corrupt} corrupt and {a.phantom} phantom messages")
    # The ring's own counters are exact across deaths: all that was put was
    # got, and the puts lie between what was committed and what was started
    # (plus the end marker).
    ring_put, ring_got = stats["messages_put"], stats["messages_got"]
    if ring_put != ring_got or not a.committed + 1 <= ring_put <= a.started + 1:
        broken.append(f"ring counters: {ring_put} put and {ring_got} got, for "
                      f"{a.committed} to {a.started} messages (+1 end marker)")
    # What the ring consumed and no consumer recorded: only consumers killed
    # between get() and recording can have taken those, one each.
    unrecorded = ring_got - 1 - (a.got - a.duplicated)
    if not 0 <= unrecorded <= a.in_flight:
        broken.append(f"the ring consumed {unrecorded} messages nobody recorded, but only "
                      f"{a.in_flight} consumers were killed between get() and recording")
    broken += run.errors

    kills = run.kills
    rows = [
        ("messages put (committed)", a.committed,
         f"+{a.at_death} put as their producer was killed" if a.at_death else ""),
        ("messages got", a.got, "recorded by consumers, duplicates included"),
        ("lost", a.lost,
         f"committed and unrecorded {a.missing}; consumed by the ring and unrecorded "
         f"{unrecorded}; consumers killed between get() and recording {a.in_flight}"
         if a.missing or unrecorded else ""),
        ("duplicated", a.duplicated,
         f"allowed {a.allowed}: consumers killed inside view(); explained {a.explained}"),
        ("order violations", a.violations, ""),
        ("corrupt or phantom", a.corrupt + a.phantom, ""),
        ("kills", kills["producer"] + kills["consumer"],
         f"{kills['producer']} producers, {kills['consumer']} consumers"
         + (f"; {run.retired} producers retired" if run.retired else "")),
        ("lock recoveries", stats["lock_recoveries"], ""),
        ("longest stall", f"{run.longest_stall:.3f} s", "longest time without a message got"),
        ("ring counters put/got", f"{ring_put}/{ring_got}", "+1: the end marker"),
        ("result", "FAIL" if broken else "PASS", ""),
    ]
    print(f"ringshm stress: {s.producers} producers, {s.consumers} consumers, "
          f"{run.elapsed:.1f} s, {kill_note(s.kill_every)}, payloads "
          f"{s.sizes[0]}:{s.sizes[1]} bytes, capacity {stats['capacity']}, consumers use "
          f"{s.consume}")
    print_table(run.ended_early, rows, broken)
    return broken


# ---------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ringshm stress",
        description="Producers and consumers on one ring while workers are SIGKILLed at "
                    "random; every message accounted for.  Exit status 1 if a message "
                    "was lost or delivered twice without cause, or out of order, or "
                    "corrupted.  See docs/RELIABILITY.md.")
    parser.add_argument("--producers", type=_positive(int), default=2, metavar="P")
    parser.add_argument("--consumers", type=_positive(int), default=2, metavar="C")
    parser.add_argument("--seconds", type=_positive(float), default=10.0, metavar="S",
                        help="length of the run before the drain (default 10)")
    parser.add_argument("--kill-every", type=_nonnegative, default=500.0, metavar="MS",
                        help="SIGKILL a random worker every MS milliseconds and start "
                             "another (default 500; 0: never)")
    parser.add_argument("--sizes", type=_sizes, default=(1, 512), metavar="MIN:MAX",
                        help=f"payload bytes of a message, after its {HEADER.size}-byte "
                             "header (default 1:512)")
    parser.add_argument("--capacity", type=_size, default=64 << 10, metavar="N",
                        help="bytes of the ring (default 64K: small, so it wraps and "
                             "fills often)")
    parser.add_argument("--consume", choices=["mixed", "view", "get"], default="mixed",
                        help="how consumers take messages (default: view() or get() "
                             "at random)")
    parser.add_argument("--recovery-interval", type=_positive(float), default=0.1,
                        metavar="SECONDS")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--name", default=None, help="ring name (default: a fresh one)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--topic", action="store_true",
                        help="publishers and subscribers of a topic instead "
                             "(ringshm.stress_topic; its options: ringshm stress --topic "
                             "--help)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stress test; returns the exit status (0 all well, 1 an
    invariant broke or a worker failed, 130 interrupted).

    Raises:
        SystemExit: bad usage (status 2) or --help.
    """
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.topic:   # `ringshm stress --topic` runs ringshm.stress_topic (cli.py)
        parser.error("--topic is ringshm.stress_topic's: run `ringshm stress --topic`")
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    settings = Settings(args.producers, args.consumers, args.seconds,
                        args.kill_every / 1000, args.sizes, args.capacity, args.consume,
                        args.recovery_interval, seed, args.name, args.quiet)
    kills = int(settings.seconds / settings.kill_every) + 1 if settings.kill_every else 0
    # Producer incarnations: the first ones, those that replace the killed,
    # and those that replace the retired (at most ~one a second each).
    producer_slots = min(settings.producers * (2 + int(settings.seconds)) + kills,
                         LEDGER_BUDGET // SEQ_LIMIT)
    consumer_slots = settings.consumers + kills + 1

    previous = signal.signal(signal.SIGTERM, _interrupt)
    ring = supervisor = None
    try:
        ring = Ring.create(settings.name, capacity=settings.capacity,
                           recovery_interval=settings.recovery_interval)
        largest = HEADER.size + settings.sizes[1]
        if largest > ring.max_message_size:
            parser.error(f"--sizes: a message of {largest} bytes does not fit a ring of "
                         f"{ring.capacity} bytes")
        ledger = Ledger(producer_slots, consumer_slots)
        supervisor = Supervisor(settings, ring, ledger)
        if not settings.quiet:
            print(f"ring {ring.name}, seed {seed}", file=sys.stderr)
        supervisor.main_phase()
        supervisor.finish()
        broken = report(settings, supervisor.run, account(ledger, supervisor.run),
                        ring.stats())
        return 1 if broken else 0
    except KeyboardInterrupt:
        print("ringshm stress: interrupted", file=sys.stderr)
        return 130
    finally:
        if supervisor is not None:
            supervisor.kill_all()
        if ring is not None:
            ring.close()   # the creator: removes the segment
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
