"""The publish/subscribe workload: one publisher, N subscribers, every
subscriber receives every message.

Deliveries per second are summed over the subscribers: N × messages
delivered / the time from the start (every subscriber connected, the
publisher released) to the last subscriber's last message. Two payloads:

* 64 B messages, each carrying its sequence number: a subscriber counts
  what it received, in order; a lossless transport that loses, repeats or
  reorders one fails the run. ZeroMQ's plain PUB drops at its high-water
  mark by design: its drops are reported, not failed.
* the 1920×1080×3 uint8 frame (6.2 MB), stamped with its sequence number
  at both ends and a pattern between (arrays.py's checks): each subscriber
  ends with a writable copy of its own and checks it.

Transports: ringshm's Topic (one copy in, however many subscribers), N
ringshm Rings with the publisher putting into each (the naive fan-out: N
copies in), iceoryx2 publish-subscribe (lossless: RetryUntilDelivered),
pyzmq PUB/SUB over ipc:// (an XPUB socket, so that the publisher sees its
subscribers join before it starts; plain: high-water marks raised to the
run's length, drops counted; and with XPUB_NODROP: a full pipe blocks).
And a 64 B ping-pong through two topics.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import statistics
import time
import traceback
import uuid
from typing import TYPE_CHECKING, Any, Callable, Optional

from . import arrays, iox2_sandbox

if TYPE_CHECKING:
    Log = Callable[[str], None]

_fork = multiprocessing.get_context("fork")
FRAME_SHAPE = (1080, 1920, 3)
FRAME_BYTES = 1080 * 1920 * 3
SMALL = 64
BATCH = 256          # 64 B messages per publish_many / put_many
TOPIC_CAPACITY_SMALL = 4 << 20
FRAMES_IN_FLIGHT = 4
STOP = -1


def _frame_capacity() -> int:
    need = FRAMES_IN_FLIGHT * (FRAME_BYTES + 4096)
    return 1 << (need - 1).bit_length()


def _message(seq: int) -> bytes:
    return seq.to_bytes(8, "little", signed=True) + b"\x5a" * (SMALL - 8)


class Counter:
    """What one subscriber received of the 64 B stream."""

    def __init__(self) -> None:
        self.received = 0
        self.bad = 0
        self.last = -1

    def check(self, batch: list[Any]) -> bool:
        """Count a batch; False when it ends with the end marker.  A batch of
        many is checked at once (NumPy over its sequence numbers), so that
        the check costs a batched transport no more per message than the
        one-message transports pay."""
        if len(batch) < 8:
            for message in batch:
                seq = int.from_bytes(bytes(message[:8]), "little", signed=True)
                if seq == STOP:
                    return False
                self.bad += seq <= self.last or len(message) != SMALL
                self.last = max(self.last, seq)
                self.received += 1
            return True
        import numpy as np
        joined = b"".join(batch)
        if len(joined) != SMALL * len(batch):
            self.bad += len(batch)
            return True
        seqs = np.frombuffer(joined, dtype="<i8").reshape(-1, SMALL // 8)[:, 0]
        more = seqs[-1] != STOP
        if not more:
            seqs = seqs[:-1]
        if len(seqs):
            self.bad += int(seqs[0] <= self.last) + int(np.count_nonzero(np.diff(seqs) <= 0))
            self.last = max(self.last, int(seqs.max()))
            self.received += len(seqs)
        return bool(more)


# ---- the transports -------------------------------------------------------
#
# Each is a class with setup(n, payload) -> state (made before the fork),
# publisher(state) -> (send(items), close), subscriber(state, i) ->
# (receive() -> list of items, close), teardown(state); `items` are bytes
# (64 B, in batches) or frames (one array).  `lossless`: loss fails the run.


class Transport:
    key = ""
    label = ""
    lossless = True

    def setup(self, n: int, frames: bool) -> Any:
        return None

    def publisher(self, state: Any) -> tuple[Callable[[list[Any]], object], Callable[[], object]]:
        raise NotImplementedError

    def subscriber(self, state: Any, index: int) -> tuple[Callable[[], list[Any]],
                                                           Callable[[], object]]:
        raise NotImplementedError

    def teardown(self, state: Any) -> None:
        pass


def _unique(tag: str) -> str:
    return f"rs-bench-{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class TopicTransport(Transport):
    key, label = "ringshm-topic", "ringshm Topic"

    def setup(self, n: int, frames: bool) -> Any:
        from ringshm import Topic  # type: ignore[attr-defined, unused-ignore]
        name = _unique("topic")
        topic = Topic.create(name, capacity=_frame_capacity() if frames else
                             TOPIC_CAPACITY_SMALL)
        # Subscribed before the fork (the children open by name and take
        # over their own subscription): made here so that none misses the
        # first message.  A subscription belongs to its process, so each
        # child subscribes itself, then the start barrier waits for all.
        return {"name": name, "topic": topic, "frames": frames}

    def publisher(self, state: Any) -> Any:
        from ringshm import Topic  # type: ignore[attr-defined, unused-ignore]
        topic = Topic.open(state["name"])
        if state["frames"]:
            def send(items: list[Any]) -> None:
                frame = items[0]
                with topic.reserve(frame.nbytes) as buf:
                    buf[:] = frame.reshape(-1).view("u1")
        else:
            def send(items: list[Any]) -> None:
                topic.publish_many(items)
        return send, topic.close

    def subscriber(self, state: Any, index: int) -> Any:
        import numpy as np

        from ringshm import Topic  # type: ignore[attr-defined, unused-ignore]
        topic = Topic.open(state["name"])
        sub = topic.subscribe()
        if state["frames"]:
            def receive() -> list[Any]:
                with sub.view() as view:
                    return [np.frombuffer(view, dtype=np.uint8).reshape(FRAME_SHAPE).copy()]
        else:
            def receive() -> list[Any]:
                got: list[Any] = sub.get_many(max_messages=1024)
                return got

        def close() -> None:
            sub.close()
            topic.close()
        return receive, close

    def teardown(self, state: Any) -> None:
        state["topic"].close()


class RingsTransport(Transport):
    key, label = "ringshm-rings", "N ringshm Rings"

    def setup(self, n: int, frames: bool) -> Any:
        from ringshm import Ring
        names = [_unique(f"ring{i}") for i in range(n)]
        rings = [Ring.create(name, capacity=_frame_capacity() if frames else
                             TOPIC_CAPACITY_SMALL) for name in names]
        return {"names": names, "rings": rings, "frames": frames}

    def publisher(self, state: Any) -> Any:
        from ringshm import Ring
        rings = [Ring.open(name) for name in state["names"]]
        if state["frames"]:
            def send(items: list[Any]) -> None:
                flat = items[0].reshape(-1).view("u1")
                for ring in rings:
                    with ring.reserve(flat.nbytes) as buf:
                        buf[:] = flat
        else:
            def send(items: list[Any]) -> None:
                for ring in rings:
                    ring.put_many(items)

        def close() -> None:
            for ring in rings:
                ring.close()
        return send, close

    def subscriber(self, state: Any, index: int) -> Any:
        import numpy as np

        from ringshm import Ring
        ring = Ring.open(state["names"][index])
        if state["frames"]:
            def receive() -> list[Any]:
                with ring.view() as view:
                    return [np.frombuffer(view, dtype=np.uint8).reshape(FRAME_SHAPE).copy()]
        else:
            def receive() -> list[Any]:
                return ring.get_many(max_messages=1024)
        return receive, ring.close

    def teardown(self, state: Any) -> None:
        for ring in state["rings"]:
            ring.close()


class Iceoryx2Transport(Transport):
    key, label = "iceoryx2", "iceoryx2 publish-subscribe"

    def setup(self, n: int, frames: bool) -> Any:
        import iceoryx2  # noqa: F401 -- skipped early when it is missing
        return {"name": _unique("iox2"), "n": n, "frames": frames,
                "made": os.pipe(), "connected": os.pipe()}

    @staticmethod
    def _service(state: Any) -> tuple[Any, Any, Any]:
        import iceoryx2 as iox2
        iox2.set_log_level(iox2.LogLevel.Error)
        node = iox2_sandbox.node(iox2, state["name"])
        service = (node.service_builder(iox2.ServiceName.new(state["name"]))
                   .publish_subscribe(iox2.Slice[ctypes.c_uint8])
                   .enable_safe_overflow(False)
                   .subscriber_max_buffer_size(FRAMES_IN_FLIGHT if state["frames"] else BATCH)
                   .max_publishers(1).max_subscribers(state["n"])
                   .open_or_create())
        return iox2, node, service

    def publisher(self, state: Any) -> Any:
        iox2, node, service = self._service(state)
        nbytes = FRAME_BYTES if state["frames"] else SMALL
        publisher = (service.publisher_builder().initial_max_slice_len(nbytes)
                     .backpressure_strategy(iox2.BackpressureStrategy.RetryUntilDelivered)
                     .create())
        for _ in range(state["n"]):
            os.write(state["made"][1], b"!")
        for _ in range(state["n"]):
            os.read(state["connected"][0], 1)
        publisher.update_connections()
        memmove = ctypes.memmove

        def send(items: list[Any]) -> None:
            for item in items:
                if state["frames"]:
                    sample = publisher.loan_slice_uninit(nbytes)
                    memmove(sample.payload_ptr, item.ctypes.data, nbytes)
                else:
                    sample = publisher.loan_slice_uninit(len(item))
                    memmove(sample.payload_ptr, item, len(item))
                sample.assume_init().send()

        ports = [node, service, publisher]

        def close() -> None:
            publisher.delete()
            ports.clear()
        return send, close

    def subscriber(self, state: Any, index: int) -> Any:
        import numpy as np
        _, node, service = self._service(state)
        subscriber = service.subscriber_builder().buffer_size(
            FRAMES_IN_FLIGHT if state["frames"] else BATCH).create()
        os.read(state["made"][0], 1)
        subscriber.has_samples()
        os.write(state["connected"][1], b"!")
        yield_cpu = os.sched_yield
        frames = state["frames"]
        frame_type = ctypes.c_uint8 * FRAME_BYTES
        small_type = ctypes.c_char * SMALL

        def receive() -> list[Any]:
            while True:
                sample = subscriber.receive()
                if sample is not None:
                    break
                yield_cpu()
            if frames:
                payload = frame_type.from_address(sample.payload_ptr)
                item: Any = np.frombuffer(payload, dtype=np.uint8  # type: ignore[call-overload, unused-ignore]
                                          ).reshape(FRAME_SHAPE).copy()
            else:
                item = bytes(small_type.from_address(sample.payload_ptr))
            sample.delete()
            return [item]

        ports = [node, service]

        def close() -> None:
            subscriber.delete()
            ports.clear()
        return receive, close

    def teardown(self, state: Any) -> None:
        for fd in (*state["made"], *state["connected"]):
            os.close(fd)
        iox2_sandbox.remove(state["name"])


def _hwm(state: Any) -> int:
    """Plain PUB's high-water mark, raised: the whole run of 64 B messages
    (none dropped unless a subscriber falls that far behind), and 16
    frames (100 MB a subscriber: more would only hide the drops)."""
    return 16 if state["frames"] else 1_000_000


class ZmqTransport(Transport):
    key, label, nodrop = "zmq-pub", "pyzmq PUB/SUB (drops at its HWM)", False
    lossless = False

    def setup(self, n: int, frames: bool) -> Any:
        import zmq  # noqa: F401 -- skipped early when it is missing
        return {"path": f"/tmp/{_unique('zmq')}.ipc", "n": n, "frames": frames}

    def publisher(self, state: Any) -> Any:
        import zmq
        context = zmq.Context()
        socket = context.socket(zmq.XPUB)
        socket.setsockopt(zmq.XPUB_VERBOSE, 1)   # every subscriber's join, not one
        if self.nodrop:
            socket.setsockopt(zmq.XPUB_NODROP, 1)
        else:
            socket.setsockopt(zmq.SNDHWM, _hwm(state))
        socket.bind(f"ipc://{state['path']}")
        for _ in range(state["n"]):   # each subscriber's join
            socket.recv()

        def send(items: list[Any]) -> None:
            for item in items:
                while True:
                    try:
                        # Copied in (the publisher stamps the same array
                        # next: zero-copy would send that one).
                        socket.send(item, copy=True)
                        break
                    except zmq.Again:   # NODROP: full: wait, as the others do
                        socket.poll(100, zmq.POLLOUT)

        def close() -> None:
            if not self.nodrop:
                # The end marker may be dropped too: send it a few times.
                for _ in range(20):
                    try:
                        socket.send(_message(STOP), zmq.NOBLOCK)
                    except zmq.Again:
                        pass
                    time.sleep(0.01)
            socket.close(linger=-1)   # every queued message is delivered first
            context.term()
        return send, close

    def subscriber(self, state: Any, index: int) -> Any:
        import numpy as np
        import zmq
        context = zmq.Context()
        socket = context.socket(zmq.SUB)
        # XPUB_NODROP makes the publisher's send wait, but a SUB still
        # drops at its own receive high-water mark (libzmq 4.3.5: 446 of
        # 50,000 64 B messages lost 1→1 with the default marks): the no-drop
        # row lifts it, so that nothing is lost anywhere.
        socket.setsockopt(zmq.RCVHWM, 0 if self.nodrop else _hwm(state))
        socket.setsockopt(zmq.SUBSCRIBE, b"")
        socket.connect(f"ipc://{state['path']}")
        frames = state["frames"]
        stop = _message(STOP)

        def receive() -> list[Any]:
            # Plain PUB may drop the end marker too: two quiet seconds end it.
            if not self.nodrop and not socket.poll(2000):
                message: Any = stop
            else:
                message = socket.recv(copy=False)
            if not frames:
                return [bytes(message)]
            if len(message) == FRAME_BYTES:
                return [np.frombuffer(message.buffer, dtype=np.uint8).reshape(FRAME_SHAPE).copy()]
            return [np.frombuffer(bytes(message)[:8], dtype="<i8")]   # the end marker

        def close() -> None:
            socket.close(linger=0)
            context.term()
        return receive, close

    def teardown(self, state: Any) -> None:
        try:
            os.unlink(state["path"])
        except FileNotFoundError:
            pass


class ZmqNoDropTransport(ZmqTransport):
    key, label, nodrop = "zmq-nodrop", "pyzmq XPUB_NODROP/SUB (blocks when full)", True
    lossless = True


TRANSPORTS: tuple[Transport, ...] = (TopicTransport(), RingsTransport(), Iceoryx2Transport(),
                                     ZmqNoDropTransport(), ZmqTransport())
BY_KEY = {t.key: t for t in TRANSPORTS}


# ---- one run ----------------------------------------------------------------


def _publish(transport: Transport, state: Any, count: int, frames: bool, go: Any) -> None:
    # The publisher exists before the start: iceoryx2's and zmq's
    # subscribers connect to it.
    send, close = transport.publisher(state)
    frame = arrays.template(FRAME_SHAPE, "uint8") if frames else None
    # Made before the start, for every transport alike: the run measures
    # moving messages, not making them.
    batches = [] if frames else [[_message(seq) for seq in range(start, min(count, start + BATCH))]
                                 for start in range(0, count, BATCH)]
    go.wait()
    if frame is not None:
        for seq in range(count):
            arrays.stamp(frame, seq)
            send([frame])
        arrays.stamp(frame, STOP)
        send([frame])
    else:
        for batch in batches:
            send(batch)
        send([_message(STOP)])
    close()


def _subscribe(transport: Transport, state: Any, index: int, frames: bool,
               ready: Any, go: Any, out: Any) -> None:
    receive, close = transport.subscriber(state, index)
    counter: Any = arrays.Checker(FRAME_SHAPE, "uint8") if frames else Counter()
    ready.wait()
    go.wait()
    last = time.perf_counter()
    done = False
    while not done:
        if frames:
            for item in receive():
                if not counter.check(item):
                    done = True
                    break
                last = time.perf_counter()
        else:
            before = counter.received
            done = not counter.check(receive())
            if counter.received != before:
                last = time.perf_counter()
    close()
    out.send((counter.received, counter.bad, last))


def run_once(transport: Transport, n: int, count: int, frames: bool) -> dict[str, Any]:
    """One measured run: {"sent", "received" (per subscriber), "bad", "seconds"}."""
    state = transport.setup(n, frames)
    ready = _fork.Barrier(n + 1)   # subscribers made
    go = _fork.Barrier(n + 2)      # ... and the publisher's start
    pipes = [_fork.Pipe(duplex=False) for _ in range(n)]
    children = []
    try:
        for i in range(n):
            p = _fork.Process(target=_subscribe, args=(transport, state, i, frames, ready, go,
                                                       pipes[i][1]), daemon=True)
            p.start()
            children.append(p)

        pub = _fork.Process(target=_publish, args=(transport, state, count, frames, go),
                            daemon=True)
        pub.start()
        children.append(pub)
        ready.wait(timeout=60)
        start = time.perf_counter()
        go.wait(timeout=60)
        results = [pipes[i][0].recv() if pipes[i][0].poll(600) else None for i in range(n)]
        for p in children:
            p.join(timeout=60)
        if any(r is None for r in results) or any(p.exitcode != 0 for p in children):
            raise RuntimeError(f"{transport.label}: a process failed "
                               f"(exit codes {[p.exitcode for p in children]})")
        done = [r for r in results if r is not None]
        end = max(r[2] for r in done)
        return {"sent": count, "received": [r[0] for r in done],
                "bad": sum(r[1] for r in done), "seconds": end - start}
    finally:
        for p in children:
            if p.is_alive():
                p.kill()
                p.join()
        transport.teardown(state)


def run(counts: tuple[int, int] = (200_000, 200), subscribers: tuple[int, ...] = (1, 2, 4),
        repeats: int = 3, transports: tuple[Transport, ...] = TRANSPORTS,
        log: Optional[Log] = None, pingpong: int = 20_000) -> list[dict[str, Any]]:
    """Every case, median of `repeats`: a list of records for format_table."""
    records: list[dict[str, Any]] = []
    for frames, count in ((False, counts[0]), (True, counts[1])):
        for n in subscribers:
            for transport in transports:
                record: dict[str, Any] = {"transport": transport.key, "label": transport.label,
                                          "payload": "frame" if frames else "64 B",
                                          "subscribers": n, "runs": [], "skipped": None}
                try:
                    for _ in range(repeats):
                        record["runs"].append(run_once(transport, n, count, frames))
                except ImportError as exc:
                    record["skipped"] = f"not installed ({exc.name})"
                except Exception as exc:  # noqa: BLE001 -- a failed case is reported
                    traceback.print_exc()
                    record["skipped"] = f"failed: {exc}"
                _summarise(record, transport)
                if log is not None:
                    log(_line(record))
                records.append(record)
    if pingpong:
        records.append(pingpong_topic(pingpong))
    return records


def _summarise(record: dict[str, Any], transport: Transport) -> None:
    runs = record["runs"]
    if not runs:
        record["ok"] = record["skipped"] is not None
        return
    rates = [sum(r["received"]) / r["seconds"] for r in runs]
    record["deliveries_per_s"] = statistics.median(rates)
    expected = [r["sent"] * record["subscribers"] for r in runs]
    received = [sum(r["received"]) for r in runs]
    record["lost"] = sum(e - g for e, g in zip(expected, received))
    record["lost_share"] = record["lost"] / sum(expected)
    record["bad"] = sum(r["bad"] for r in runs)
    record["ok"] = record["bad"] == 0 and (record["lost"] == 0 or not transport.lossless)


def _line(record: dict[str, Any]) -> str:
    head = f"pubsub {record['payload']:>5} 1→{record['subscribers']} {record['label']}"
    if "deliveries_per_s" not in record:
        return f"{head}: skipped ({record['skipped']})"
    return (f"{head}: {record['deliveries_per_s']:,.0f} deliveries/s, lost "
            f"{record['lost_share']:.1%}, bad {record['bad']}")


def pingpong_topic(rounds: int) -> dict[str, Any]:
    """Round trips of 64 B through two topics (ping, pong), p50/p99 µs."""
    from ringshm import Topic  # type: ignore[attr-defined, unused-ignore]
    ping_name, pong_name = _unique("ping"), _unique("pong")
    ping = Topic.create(ping_name, capacity=1 << 16)
    pong = Topic.create(pong_name, capacity=1 << 16)
    ready = _fork.Barrier(2)

    def echo() -> None:
        inbox = Topic.open(ping_name).subscribe()
        outbox = Topic.open(pong_name)
        ready.wait()
        for message in inbox:
            outbox.publish(message)
            if message[:1] == b"q":
                break

    child = _fork.Process(target=echo, daemon=True)
    try:
        replies = pong.subscribe()
        child.start()
        ready.wait(timeout=60)
        message = b"p" * SMALL
        times = []
        for i in range(rounds + rounds // 10):
            t0 = time.perf_counter_ns()
            ping.publish(message)
            replies.get()
            if i >= rounds // 10:   # after a warm-up
                times.append(time.perf_counter_ns() - t0)
        ping.publish(b"q" * SMALL)
        replies.get(timeout=10)
        child.join(timeout=10)
        times.sort()
        return {"transport": "ringshm-topic", "label": "ringshm Topic ping-pong",
                "payload": "64 B", "subscribers": 1, "skipped": None, "ok": True,
                "p50_us": times[len(times) // 2] / 1e3,
                "p99_us": times[len(times) * 99 // 100] / 1e3, "rounds": rounds}
    finally:
        if child.is_alive():
            child.kill()
            child.join()
        ping.close()
        pong.close()


# ---- the report ---------------------------------------------------------------


def format_table(records: list[dict[str, Any]]) -> str:
    """The pub/sub table: deliveries/s summed over subscribers, and the
    Topic's ratio to each row of its payload and fan-out."""
    lines = ["Publish/subscribe (1 publisher → N subscribers; deliveries/s summed over "
             "subscribers, median of the runs)",
             f"{'payload':>7} {'N':>2}  {'transport':<44} {'deliveries/s':>14} "
             f"{'lost':>7} {'Topic ×':>8}"]
    topic = {(r["payload"], r["subscribers"]): r.get("deliveries_per_s")
             for r in records if r["transport"] == "ringshm-topic" and "p50_us" not in r}
    for r in records:
        if "p50_us" in r:
            lines.append(f"ping-pong through a topic, 64 B: p50 {r['p50_us']:.1f} µs, "
                         f"p99 {r['p99_us']:.1f} µs ({r['rounds']} round trips)")
            continue
        head = f"{r['payload']:>7} {r['subscribers']:>2}  {r['label']:<44}"
        if "deliveries_per_s" not in r:
            lines.append(f"{head} skipped: {r['skipped']}")
            continue
        mine = topic.get((r["payload"], r["subscribers"]))
        ratio = f"{mine / r['deliveries_per_s']:.2f}" if mine else "n/a"
        lines.append(f"{head} {r['deliveries_per_s']:>14,.0f} {r['lost_share']:>7.1%} "
                     f"{ratio:>8}" + ("" if r["ok"] else "  FAILED (lost or wrong)"))
    return "\n".join(lines)


def targets(records: list[dict[str, Any]]) -> list[tuple[str, Optional[float], str,
                                                         Optional[bool], str]]:
    """The publish/subscribe targets, 1→4 (targets.Verdict tuples)."""
    rate = {(r["transport"], r["payload"], r["subscribers"]): r.get("deliveries_per_s")
            for r in records if "p50_us" not in r}

    def verdict(name: str, payload: str, other: str,
                goal: float) -> tuple[str, Optional[float], str, Optional[bool], str]:
        mine = rate.get(("ringshm-topic", payload, 4))
        theirs = rate.get((other, payload, 4))
        value = mine / theirs if mine and theirs else None
        return (name, value, f"≥ {goal:g}×", None if value is None else value >= goal, "×")
    return [verdict("1→4 64 B: Topic / iceoryx2", "64 B", "iceoryx2", 10.0),
            verdict("1→4 64 B: Topic / pyzmq XPUB_NODROP", "64 B", "zmq-nodrop", 4.0),
            verdict("1→4 64 B: Topic / four Rings", "64 B", "ringshm-rings", 3.0),
            verdict("1→4 frames: Topic / iceoryx2", "frame", "iceoryx2", 1.0),
            verdict("1→4 frames: Topic / four Rings", "frame", "ringshm-rings", 1.5)]
