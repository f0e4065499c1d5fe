"""The arrays workload: NumPy arrays from one producer process to one
consumer, through ringshm and the libraries users move frames with.

Every consumer ends with an array of its own (a copy it may write) and
checks its contents: each array carries its sequence number in its first
and last 8 bytes and a fixed pattern between, so a lost, repeated,
reordered or torn array is counted, never hidden. The producer sends for
the time budget, then an end marker (sequence number -1).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import time
import traceback
import uuid
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol

from . import cref, iox2_sandbox
from .transport import Unsupported

if TYPE_CHECKING:
    import multiprocessing.queues

    import numpy.typing as npt
    from py_sharedmemory import SharedMemoryReceiver, SharedMemorySender

    from ringshm import Queue, Ring

    Array = npt.NDArray[Any]
    Shape = tuple[int, ...]
    #: (call, close) from a peer's sender() / receiver().
    Sender = tuple[Callable[[Array], object], Callable[[], object]]
    Receiver = tuple[Callable[[], Array], Callable[[], object]]

    class ArrayFifo(Protocol):
        """What the arrays workload uses of a faster_fifo.Queue (untyped)."""

        def put(self, array: Array) -> None: ...

        def get(self, timeout: float) -> Array: ...

_fork = multiprocessing.get_context("fork")
STOP = -1
# Bytes in flight: about four arrays, as the bytes workload allows four
# messages (transport.capacity_for).
IN_FLIGHT = 4
#: (name, shape, dtype name) of each array case.
CASES = (("1920×1080×3 uint8 frame", (1080, 1920, 3), "uint8"),
         ("64 KiB float32", (16384,), "float32"))
_CHECK = slice(4096, 4160)   # a stretch of the pattern every consumer compares


def template(shape: Shape, dtype: npt.DTypeLike) -> Array:
    """The array a producer stamps and sends."""
    import numpy as np
    array = np.zeros(shape, dtype=dtype)
    flat = array.reshape(-1).view(np.uint8)
    flat[:] = np.arange(flat.size, dtype=np.uint64) % 251
    return array


def stamp(array: Array, seq: int) -> None:
    """Write seq into the first and last 8 bytes of array."""
    flat = array.reshape(-1).view("<i8")
    flat[0] = flat[-1] = seq


class Checker:
    """Counts what a consumer received and what was wrong with it."""

    def __init__(self, shape: Shape, dtype: npt.DTypeLike) -> None:
        self.expect = template(shape, dtype).reshape(-1).view("u1")[_CHECK].copy()
        self.shape = shape
        self.received = 0
        self.bad = 0        # torn, wrong, repeated or out of order
        self.last = -1

    def check(self, array: Array) -> bool:
        """False at the end marker; counts one array otherwise. (A gap in
        the sequence shows as sent - received.)"""
        ends = array.reshape(-1).view("<i8")
        seq = int(ends[0])
        if seq == STOP:
            return False
        ok = (array.shape == self.shape and array.flags.writeable and seq > self.last
              and int(ends[-1]) == seq
              and (array.reshape(-1).view("u1")[_CHECK] == self.expect).all())
        self.bad += not ok
        self.last = max(self.last, seq)
        self.received += 1
        return True


def _pump(send: Callable[[Array], object], array: Array, seconds: float) -> int:
    """The producer's loop over its template `array`; returns how many
    arrays it sent."""
    stop_at = time.perf_counter() + seconds
    sent = 0
    while time.perf_counter() < stop_at:
        stamp(array, sent)
        send(array)
        sent += 1
    stamp(array, STOP)
    send(array)
    return sent


class ArrayPeer:
    """One way of moving arrays. Subclasses give ``setup`` (in the parent,
    before the fork; returns the shared state), ``sender(state)`` and
    ``receiver(state)`` (each returns (call, close)), ``teardown(state)``."""

    key = label = ""
    module: str | None = None   # the import that must work, for missing()

    def missing(self) -> Optional[str]:
        if self.module is None:
            return None
        try:
            __import__(self.module)
        except ImportError as exc:
            return f"{self.label}: {self.module} is not installed ({exc})"
        return None

    def setup(self, nbytes: int, shape: Shape, dtype: str) -> Any:
        return None

    def sender(self, state: Any) -> Sender:
        raise NotImplementedError

    def receiver(self, state: Any) -> Receiver:
        raise NotImplementedError

    def teardown(self, state: Any) -> None:
        pass

    def run(self, shape: Shape, dtype: str, seconds: float) -> dict[str, Any]:
        """One measured run: {"sent", "received", "bad", "seconds"}."""
        import numpy as np
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        state = self.setup(nbytes, shape, dtype)
        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:   # the producer
            status = 1
            try:
                os.close(ready_r)
                os.close(go_w)
                # Made before the start: the consumer's clock runs from it
                # (numpy takes tens of ms over a frame's pattern).
                array = template(shape, dtype)
                os.write(ready_w, b"r")
                if os.read(go_r, 1) != b"!":
                    os._exit(1)   # the consumer gave up before the start
                send, close = self.sender(state)
                sent = _pump(send, array, seconds)
                close()
                os.write(ready_w, str(sent).encode())
                status = 0
            except BaseException:  # noqa: BLE001 -- reported, then the status says it
                traceback.print_exc()
            finally:
                os._exit(status)
        os.close(ready_w)
        os.close(go_r)
        try:
            receive, close = self.receiver(state)
            checker = Checker(shape, dtype)
            if os.read(ready_r, 1) != b"r":   # it failed before its template was made
                raise RuntimeError(f"{self.label}: the producer failed before the start")
            os.write(go_w, b"!")
            start = time.perf_counter()
            while checker.check(receive()):
                pass
            elapsed = time.perf_counter() - start
            close()
            sent = int(os.read(ready_r, 64) or b"-1")
        finally:
            os.close(ready_r)
            os.close(go_w)
            _, status = os.waitpid(pid, 0)
            self.teardown(state)
        if sent < 0 or status != 0:
            raise RuntimeError(f"{self.label}: the producer failed (wait status {status})")
        return {"sent": sent, "received": checker.received, "bad": checker.bad,
                "seconds": elapsed}


def _capacity(nbytes: int) -> int:
    need = max(4 << 20, IN_FLIGHT * (nbytes + 4096))
    return 1 << (need - 1).bit_length()


class RingshmQueue(ArrayPeer):
    key, label = "ringshm-queue", "ringshm.Queue (pickle 5, out-of-band)"

    def setup(self, nbytes: int, shape: Shape, dtype: str) -> Queue[Array]:
        from ringshm import Queue
        return Queue(capacity=_capacity(nbytes))

    def sender(self, q: Queue[Array]) -> Sender:
        return q.put, q.close

    def receiver(self, q: Queue[Array]) -> Receiver:
        return q.get, lambda: None

    def teardown(self, q: Queue[Array]) -> None:
        q.close()


class RingshmRaw(ArrayPeer):
    key, label = "ringshm-ring", "ringshm Ring, reserve() + view() + .copy()"

    def setup(self, nbytes: int, shape: Shape, dtype: str) -> tuple[Ring, Shape, str]:
        from ringshm import Ring
        return Ring.create(capacity=_capacity(nbytes)), shape, dtype

    def sender(self, state: tuple[Ring, Shape, str]) -> Sender:
        ring, _, _ = state
        reserve = ring.reserve

        def send(array: Array) -> None:
            # The stubs declare __buffer__ (typing's Buffer) only on Python 3.12+;
            # an ndarray exports its buffer on every version.
            source = memoryview(array).cast("B")  # type: ignore[arg-type, unused-ignore]
            with reserve(source.nbytes) as space:
                space[:] = source
        return send, ring.close

    def receiver(self, state: tuple[Ring, Shape, str]) -> Receiver:
        import numpy as np
        ring, shape, dtype = state
        view = ring.view

        def receive() -> Array:
            with view() as message:
                return np.frombuffer(message, dtype=dtype).reshape(shape).copy()
        return receive, lambda: None

    def teardown(self, state: tuple[Ring, Shape, str]) -> None:
        state[0].close()


class MPQueue(ArrayPeer):
    """Its feeder thread pickles an item after put() returned: the producer
    must not change the array it put, so it puts a copy."""

    key, label = "mp-queue", "multiprocessing.Queue"

    def setup(self, nbytes: int, shape: Shape, dtype: str
              ) -> multiprocessing.queues.Queue[Array]:
        return _fork.Queue(maxsize=IN_FLIGHT)

    def sender(self, q: multiprocessing.queues.Queue[Array]) -> Sender:
        def close() -> None:
            q.close()
            q.join_thread()
        return lambda array: q.put(array.copy()), close

    def receiver(self, q: multiprocessing.queues.Queue[Array]) -> Receiver:
        return q.get, lambda: None

    def teardown(self, q: multiprocessing.queues.Queue[Array]) -> None:
        q.close()


class FasterFifo(ArrayPeer):
    key, label, module = "faster-fifo", "faster-fifo Queue (pickle)", "faster_fifo"

    def setup(self, nbytes: int, shape: Shape, dtype: str) -> ArrayFifo:
        import faster_fifo
        fifo: ArrayFifo = faster_fifo.Queue(max_size_bytes=_capacity(nbytes))
        return fifo

    def sender(self, q: ArrayFifo) -> Sender:
        return q.put, lambda: None

    def receiver(self, q: ArrayFifo) -> Receiver:
        def receive() -> Array:
            while True:
                try:
                    return q.get(timeout=10)
                except Exception as exc:  # noqa: BLE001 -- its Empty after a timeout
                    if type(exc).__name__ != "Empty":
                        raise
        return receive, lambda: None


class PySharedMemory(ArrayPeer):
    key, label, module = "py-sharedmemory", "py-sharedmemory", "py_sharedmemory"

    def setup(self, nbytes: int, shape: Shape, dtype: str
              ) -> tuple[SharedMemorySender, SharedMemoryReceiver]:
        from py_sharedmemory import create_shared_memory_pair
        # One producer per pair, as its documentation says.
        pair: tuple[SharedMemorySender, SharedMemoryReceiver] = create_shared_memory_pair(
            capacity=IN_FLIGHT, ctx=_fork)
        return pair   # typed here: the package may be installed without its types

    def sender(self, pair: tuple[SharedMemorySender, SharedMemoryReceiver]) -> Sender:
        sender, _ = pair

        def close() -> None:
            sender.wait_for_all_ack()
            sender.close()
        return sender.put, close

    def receiver(self, pair: tuple[SharedMemorySender, SharedMemoryReceiver]) -> Receiver:
        _, receiver = pair
        return receiver.get, receiver.close

    def teardown(self, pair: tuple[SharedMemorySender, SharedMemoryReceiver]) -> None:
        pair[0].close()


def _wait_count(stream: Any, count: int) -> None:
    """Until pyshmem `stream` has been written `count` times. Its own
    read_new() waits for a write after the call and can miss one that
    landed just before (its docstring says to poll the count instead)."""
    while stream.count < count:
        os.sched_yield()


class PyShmem(ArrayPeer):
    """pyshmem keeps only the latest value: the consumer acknowledges each
    array on a second stream, and the producer waits for that before the
    next write, or arrays would be overwritten unseen."""

    key, label, module = "pyshmem", "pyshmem (with an ack stream)", "pyshmem"

    def setup(self, nbytes: int, shape: Shape, dtype: str) -> tuple[str, Any, Any]:
        import numpy as np
        import pyshmem
        name = f"ringshm-bench-{uuid.uuid4().hex[:12]}"
        data = pyshmem.create(name, shape=shape, dtype=dtype)
        ack = pyshmem.create(name + "-ack", shape=(1,), dtype=np.int64)
        return name, data, ack

    def _open(self, state: tuple[str, Any, Any]
              ) -> tuple[tuple[Any, Any], Callable[[], object]]:
        import pyshmem
        name, data, ack = state
        opened = pyshmem.open(name), pyshmem.open(name + "-ack")
        return opened, (lambda: [stream.close() for stream in opened])

    def sender(self, state: tuple[str, Any, Any]) -> Sender:
        (data, ack), close = self._open(state)
        written = [ack.count]

        def send(array: Array) -> None:
            data.write(array)
            written[0] += 1
            _wait_count(ack, written[0])
        return send, close

    def receiver(self, state: tuple[str, Any, Any]) -> Receiver:
        import numpy as np
        (data, ack), close = self._open(state)
        seen = [data.count]
        count = np.zeros(1, dtype=np.int64)

        def receive() -> Array:
            seen[0] += 1
            _wait_count(data, seen[0])
            array: Array = data.read()
            ack.write(count)
            return array
        return receive, close

    def teardown(self, state: tuple[str, Any, Any]) -> None:
        _, data, ack = state
        for stream in (data, ack):
            stream.close()
            stream.unlink()


#: (service name, bytes of an array, its shape, its dtype, the "publisher
#: made" pipe, the "subscriber connected" pipe).
Iceoryx2State = tuple[str, int, "Shape", str, tuple[int, int], tuple[int, int]]


class Iceoryx2(ArrayPeer):
    """iceoryx2 publish-subscribe with a loaned sample: the producer copies
    the array into it, the consumer copies it out (np.frombuffer().copy()).
    Lossless: no safe overflow, the publisher retries until delivered. The
    subscriber and its buffer exist before the first send (has_samples()),
    or samples sent before it are dropped; it has no blocking receive, so it
    polls with sched_yield."""

    key, label, module = "iceoryx2", "iceoryx2 (loaned sample)", "iceoryx2"

    def setup(self, nbytes: int, shape: Shape, dtype: str) -> Iceoryx2State:
        # Two pipes for the handshake: publisher made -> subscriber connected.
        return (f"ringshm-bench-{os.getpid()}-{uuid.uuid4().hex[:12]}", nbytes, shape, dtype,
                os.pipe(), os.pipe())

    def teardown(self, state: Iceoryx2State) -> None:
        for fd in (*state[4], *state[5]):
            os.close(fd)
        iox2_sandbox.remove(state[0])

    @staticmethod
    def _service(name: str, nbytes: int) -> tuple[ModuleType, Any, Any]:
        import iceoryx2 as iox2
        iox2.set_log_level(iox2.LogLevel.Error)
        node = iox2_sandbox.node(iox2, name)
        service = (node.service_builder(iox2.ServiceName.new(name))
                   .publish_subscribe(iox2.Slice[ctypes.c_uint8])
                   .enable_safe_overflow(False)
                   .subscriber_max_buffer_size(IN_FLIGHT)
                   .max_publishers(1).max_subscribers(1)
                   .open_or_create())
        return iox2, node, service

    def sender(self, state: Iceoryx2State) -> Sender:
        name, nbytes, _, _, made, connected = state
        iox2, node, service = self._service(name, nbytes)
        publisher = (service.publisher_builder().initial_max_slice_len(nbytes)
                     .backpressure_strategy(iox2.BackpressureStrategy.RetryUntilDelivered)
                     .create())
        publisher.update_connections()
        os.write(made[1], b"!")
        os.read(connected[0], 1)   # samples sent before it connected are dropped
        memmove = ctypes.memmove

        def send(array: Array) -> None:
            sample = publisher.loan_slice_uninit(nbytes)
            memmove(sample.payload_ptr, array.ctypes.data, nbytes)
            sample.assume_init().send()

        ports = [node, service, publisher]   # alive until close()

        def close() -> None:
            publisher.delete()
            ports.clear()
        return send, close

    def receiver(self, state: Iceoryx2State) -> Receiver:
        import numpy as np
        name, nbytes, shape, dtype, made, connected = state
        _, node, service = self._service(name, nbytes)
        subscriber = service.subscriber_builder().buffer_size(IN_FLIGHT).create()
        buffer_type = ctypes.c_uint8 * nbytes
        yield_cpu = os.sched_yield
        waiting = [True]

        def receive() -> Array:
            if waiting[0]:   # the producer's publisher exists: connect to it
                os.read(made[0], 1)
                subscriber.has_samples()
                os.write(connected[1], b"!")
                waiting[0] = False
            while True:
                sample = subscriber.receive()
                if sample is not None:
                    break
                yield_cpu()
            payload = buffer_type.from_address(sample.payload_ptr)
            # A ctypes array is a buffer; its stubs say so only on Python 3.12+.
            array: Array = np.frombuffer(payload, dtype=dtype  # type: ignore[call-overload, unused-ignore]
                                         ).reshape(shape).copy()
            sample.delete()
            return array

        def close() -> None:
            subscriber.delete()
        return receive, close


class CReference(ArrayPeer):
    """The machine's limit for two copies: the C reference ring (cring.c)
    moving messages of the array's size through a ring of the same
    capacity, memcpy in and memcpy out into one reused buffer, both sides
    spinning, no Python. Every peer pays at least these two copies; the
    C program counts what arrived but does not look at the contents."""

    key, label = "c-ref", "C reference ring (memcpy in, memcpy out)"

    def missing(self) -> Optional[str]:
        return cref.compile_cring()[1]

    def run(self, shape: Shape, dtype: str, seconds: float) -> dict[str, Any]:
        import numpy as np
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        result = cref.run_cring(["throughput", nbytes, _capacity(nbytes), seconds],
                                timeout=seconds + 60)
        if result["received_bytes"] != result["received"] * nbytes:
            raise RuntimeError(f"{self.label}: {result['received_bytes']} bytes in "
                               f"{result['received']} messages of {nbytes}")
        return {"sent": result["sent"], "received": result["received"], "bad": 0,
                "seconds": result["seconds"]}


PEERS: tuple[ArrayPeer, ...] = (RingshmQueue(), RingshmRaw(), MPQueue(), FasterFifo(),
                                PySharedMemory(), PyShmem(), Iceoryx2(), CReference())


def run(seconds: float, repeats: int, peers: tuple[ArrayPeer, ...] = PEERS,
        log: Optional[Callable[[str], object]] = None) -> list[dict[str, Any]]:
    """Every case over every peer, repeats outermost; the best repeat counts.
    Returns a list of records (label, case, arrays_per_s, gb_per_s, sent,
    received, bad, skipped, error)."""
    log = log or (lambda line: None)
    try:
        import numpy  # noqa: F401
    except ImportError:
        return [{"case": case, "key": p.key, "label": p.label, "skipped": "numpy is not installed",
                 "error": None, "repeats": []} for case, _, _ in CASES for p in peers]
    records: list[dict[str, Any]] = []
    for case, shape, dtype in CASES:
        for peer in peers:
            records.append({"case": case, "shape": shape, "dtype": dtype, "key": peer.key,
                            "label": peer.label, "skipped": peer.missing(), "error": None,
                            "repeats": [], "sent": 0, "received": 0, "bad": 0, "lost": 0})
    for repeat in range(repeats):
        for record, peer in zip(records, peers * len(CASES)):
            if record["skipped"] or record["error"]:
                continue
            try:
                result = peer.run(record["shape"], record["dtype"], seconds)
            except Unsupported as exc:
                record["skipped"] = str(exc)
                continue
            except Exception as exc:  # noqa: BLE001 -- one broken peer must not end the run
                record["error"] = f"{type(exc).__name__}: {exc}"
                log(f"[arrays] {record['label']}, {record['case']}: ERROR {record['error']}")
                continue
            rate = result["received"] / result["seconds"]
            record["repeats"].append(rate)
            record["lost"] += result["sent"] - result["received"]
            record["bad"] += result["bad"]
            if rate >= max(record["repeats"]):
                record.update(sent=result["sent"], received=result["received"],
                              arrays_per_s=rate)
            log(f"[arrays {repeat + 1}/{repeats}] {record['label']}, {record['case']}: "
                f"{rate:,.0f} arrays/s")
    for record in records:
        if record["repeats"]:
            import numpy as np
            nbytes = int(np.prod(record["shape"])) * np.dtype(record["dtype"]).itemsize
            record["gb_per_s"] = record["arrays_per_s"] * nbytes / 1e9
        record["ok"] = not record["error"] and record["lost"] == 0 and record["bad"] == 0
    return records


def rate(records: list[dict[str, Any]], key: str, case: str) -> Optional[float]:
    """Arrays/s of peer `key` in `case`, or None when it was not measured
    (or lost or damaged arrays: such a figure is no result)."""
    for r in records:
        if r["key"] == key and r["case"] == case and r.get("repeats") and r["ok"]:
            value: float = r["arrays_per_s"]
            return value
    return None


def format_table(records: list[dict[str, Any]]) -> str:
    """The arrays table: arrays/s, GB/s and % of the C reference per peer and
    case."""
    lines = ["Arrays, 1→1 (each consumer ends with its own writable copy, contents checked)"]
    for case, _, _ in CASES:
        limit = rate(records, CReference.key, case)
        lines.append(f"  {case:<44} {'arrays/s':>10} {'GB/s':>8} {'% of C':>7}  checks")
        for r in (r for r in records if r["case"] == case):
            if r["skipped"]:
                lines.append(f"    skipped {r['label']}: {r['skipped']}")
            elif r["error"]:
                lines.append(f"    {r['label']:<42} ERROR {r['error']}")
            else:
                note = "ok" if r["ok"] else f"LOST {r['lost']}, BAD {r['bad']}"
                if r["ok"] and r["key"] == CReference.key:
                    note = "count ok"
                share = f"{100 * r['arrays_per_s'] / limit:>6.0f}%" if limit else f"{'—':>7}"
                lines.append(f"    {r['label']:<42} {r['arrays_per_s']:>10,.0f} "
                             f"{r['gb_per_s']:>8.2f} {share}  {note}")
    return "\n".join(lines)
