"""Ring A -> out bridge -> NATS JetStream -> in bridge -> ring B, each in a
process of its own, while the out bridge, the in bridge and nats-server are
SIGKILLed at random points and started again: every message put into A
arrives in B exactly once, in order per producer (issue 11).

The default run moves 20,000 messages with at least 10 kills; with
RINGSHM_BRIDGE_SOAK=1 it moves 100,000 (the issue's count; about 90 s).
"""

import multiprocessing
import os
import random
import struct
import threading
import time

import pytest
from bridgekit import Bridge, nats_server  # noqa: F401 -- a fixture

from ringshm import Empty, Ring

pytestmark = [pytest.mark.fault, pytest.mark.multiprocess, pytest.mark.slow]

SOAK = os.environ.get("RINGSHM_BRIDGE_SOAK") == "1"
MESSAGES = 100_000 if SOAK else 20_000
PRODUCERS = 4
MIN_KILLS = 10
# Producers put at about this many messages a second in all, so that the
# kills fall while messages flow (not after everything arrived).
RATE = 1_400
RECORD = struct.Struct("<II")   # producer, index; then 0..200 bytes of padding
DELIVERY_TIMEOUT = 180.0


def producer(name, who, count, seed):
    ring = Ring.open(name)
    rng = random.Random(seed)
    pause = PRODUCERS / RATE
    for index in range(count):
        ring.put(RECORD.pack(who, index) + bytes(rng.randrange(200)), timeout=120)
        if index % 20 == 19:
            time.sleep(20 * pause)
    ring.close()


class Killer(threading.Thread):
    """SIGKILLs one of the out bridge, the in bridge and the server every
    0.3..1.5 s and starts it again at once, until stopped."""

    def __init__(self, victims, seed):
        super().__init__(daemon=True)
        self.victims = victims
        self.rng = random.Random(seed)
        self.kills = {name: 0 for name in victims}
        self.stopping = threading.Event()
        self.error = None

    def run(self):
        try:
            while not self.stopping.wait(self.rng.uniform(0.3, 1.5)):
                name = self.rng.choice(sorted(self.victims))
                victim = self.victims[name]
                victim.kill()
                self.kills[name] += 1
                if name == "server":
                    time.sleep(self.rng.uniform(0, 0.5))   # an outage, not only a restart
                victim.start()
        except BaseException as exc:   # reported by the test
            self.error = exc

    def total(self):
        return sum(self.kills.values())


def test_every_message_once_in_order_across_kills(make_ring, nats_server, tmp_path):  # noqa: F811
    a = make_ring(capacity=1 << 16)
    b = make_ring(capacity=1 << 16)
    subject = "jobs.kills"
    out = Bridge(["out", a.name, nats_server.url, "--subject", subject, "--wait"],
                 tmp_path / "out.log").start()
    inward = Bridge(["in", nats_server.url, "--subject", subject, b.name, "--wait"],
                    tmp_path / "in.log").start()
    seed = random.randrange(1 << 30)
    killer = Killer({"out": out, "in": inward, "server": nats_server}, seed)
    per_producer = MESSAGES // PRODUCERS
    # spawn: the killer thread runs by now, and a fork of a threaded process
    # may deadlock in the child (Python 3.12+ warns of it).
    ctx = multiprocessing.get_context("spawn")
    producers = [ctx.Process(target=producer, args=(a.name, who, per_producer, seed + who))
                 for who in range(PRODUCERS)]
    expected = [0] * PRODUCERS
    received = 0
    try:
        killer.start()
        for p in producers:
            p.start()
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        while received < MESSAGES:
            assert time.monotonic() < deadline, \
                f"{received} of {MESSAGES} arrived (seed {seed}, kills {killer.kills})"
            if killer.is_alive() and killer.total() >= MIN_KILLS and \
                    not any(p.is_alive() for p in producers):
                killer.stopping.set()
                killer.join()
            try:
                batch = b.get_many(timeout=0.2)
            except Empty:
                continue
            for message in batch:
                who, index = RECORD.unpack_from(message)
                assert index == expected[who], \
                    (f"producer {who}: message {index} after {expected[who] - 1} "
                     f"({'a duplicate' if index < expected[who] else 'a gap'}; seed {seed})")
                expected[who] += 1
            received += len(batch)
        killer.stopping.set()
        killer.join()
        assert killer.error is None, killer.error
        assert killer.total() >= MIN_KILLS, killer.kills
        # Nothing more may come: no late duplicate.
        with pytest.raises(Empty):
            b.get(timeout=2)
        assert expected == [per_producer] * PRODUCERS
        stats = a.stats()
        assert stats["messages_put"] == stats["messages_got"] == MESSAGES, stats
        # Shut down and drained, each bridge ends by itself, with status 0.
        a.shutdown()
        assert out.wait(30) == 0, out.log()
        b.shutdown()
        assert inward.wait(30) == 0, inward.log()
        print(f"kills: {killer.kills}, bridge starts: out {out.starts}, in {inward.starts}")
    finally:
        killer.stopping.set()
        for p in producers:
            if p.is_alive():
                p.kill()
            p.join()
        out.kill()
        inward.kill()
