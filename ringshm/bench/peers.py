"""The transports ringshm is compared with, each used the fastest way its
documentation offers for bytes: no pickling where the transport allows it,
bounded to the same bytes in flight as the ring where it can be bounded.
"""

from __future__ import annotations

import functools
import itertools
import multiprocessing
import os
import queue
import shutil
import tempfile
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Optional, cast

from . import iox2_sandbox
from .transport import GET_MANY_LIMIT, BatchMixin, Endpoint, Transport, Unsupported

if TYPE_CHECKING:
    import multiprocessing.queues
    from multiprocessing.connection import Connection

    import faster_fifo
    import posix_ipc
    import zmq

_fork = multiprocessing.get_context("fork")

# Above this size zmq sends and receives without copying (pyzmq's advice:
# copying is cheaper for small frames).
ZMQ_COPY_THRESHOLD = 64 << 10


class MPQueue(Transport):
    """multiprocessing.Queue: pickles every item (it cannot do otherwise) and
    writes it to a pipe from a feeder thread."""

    key = "mp-queue"
    label = "multiprocessing.Queue"

    def open(self, size: int, capacity: int, producers: int, consumers: int
             ) -> multiprocessing.queues.Queue[bytes]:
        # Bounded like the ring; unbounded, the producer's deque grows
        # without limit and the run would end long after the time budget.
        return _fork.Queue(maxsize=max(2, capacity // (size + 8)))

    def close(self, channel: multiprocessing.queues.Queue[bytes]) -> None:
        channel.close()
        channel.join_thread()

    def producer(self, channel: multiprocessing.queues.Queue[bytes], index: int) -> Endpoint:
        return Endpoint(put=channel.put)

    def consumer(self, channel: multiprocessing.queues.Queue[bytes], index: int, size: int
                 ) -> Endpoint:
        return Endpoint(put=channel.put, get=channel.get)


class MPPipe(Transport):
    """multiprocessing.Pipe(duplex=False) with send_bytes/recv_bytes (no
    pickling). Not safe for several writers or readers: 1→1 only."""

    key = "mp-pipe"
    label = "multiprocessing.Pipe"
    max_producers = 1
    max_consumers = 1

    def open(self, size: int, capacity: int, producers: int, consumers: int
             ) -> tuple[Connection, Connection]:
        return _fork.Pipe(duplex=False)

    def close(self, channel: tuple[Connection, Connection]) -> None:
        for connection in channel:
            connection.close()

    def producer(self, channel: tuple[Connection, Connection], index: int) -> Endpoint:
        return Endpoint(put=channel[1].send_bytes)

    def consumer(self, channel: tuple[Connection, Connection], index: int, size: int
                 ) -> Endpoint:
        return Endpoint(get=channel[0].recv_bytes)


def _retry_empty(get: Callable[[], Any]) -> Callable[[], Any]:
    """faster-fifo's blocking get raises Empty when several consumers race
    for one message (and after its default 10 s timeout): wait on, as its
    users have to."""
    def patient_get() -> Any:
        while True:
            try:
                return get()
            except queue.Empty:
                pass
    return patient_get


class FasterFifo(Transport):
    """faster-fifo with bytes in and out (loads=bytes copies the message out
    of its buffer, as ringshm's get() does; dumps=bytes is a no-op on bytes)."""

    key = "faster-fifo"
    label = "faster-fifo put/get"

    def missing(self) -> Optional[str]:
        try:
            import faster_fifo  # noqa: F401
        except ImportError:
            return "faster-fifo is not installed (pip install faster-fifo)"
        return None

    def open(self, size: int, capacity: int, producers: int, consumers: int
             ) -> tuple[faster_fifo.Queue, int]:
        import faster_fifo
        return faster_fifo.Queue(max_size_bytes=capacity, loads=bytes, dumps=bytes), consumers

    def producer(self, channel: tuple[faster_fifo.Queue, int], index: int) -> Endpoint:
        fifo, _ = channel
        return Endpoint(put=fifo.put, put_many=fifo.put_many)

    def consumer(self, channel: tuple[faster_fifo.Queue, int], index: int, size: int
                 ) -> Endpoint:
        fifo, consumers = channel
        get_many = functools.partial(fifo.get_many, max_messages_to_get=GET_MANY_LIMIT)
        if consumers == 1:  # no race: faster-fifo as it is, no wrapper to pay for
            return Endpoint(put=fifo.put, get=fifo.get, get_many=get_many)
        return Endpoint(put=fifo.put, get=_retry_empty(fifo.get),
                        get_many=_retry_empty(get_many))


class FasterFifoBatch(BatchMixin, FasterFifo):
    key = "faster-fifo-batch"
    label = "faster-fifo put_many/get_many"


def _mqueue_limit(name: str, default: int) -> int:
    """A Linux limit from /proc/sys/fs/mqueue (msg_max, msgsize_max)."""
    try:
        with open(f"/proc/sys/fs/mqueue/{name}") as limit:
            return int(limit.read())
    except (OSError, ValueError):
        return default


class PosixMQ(Transport):
    """posix_ipc.MessageQueue: a system call per message. The kernel caps a
    message at fs.mqueue.msgsize_max and a queue at fs.mqueue.msg_max
    messages (8 KiB and 10 by default) for an unprivileged process."""

    key = "posix-mq"
    label = "posix_ipc.MessageQueue"

    def missing(self) -> Optional[str]:
        import posix_ipc
        if not posix_ipc.MESSAGE_QUEUES_SUPPORTED:
            return "POSIX message queues are not supported here"
        return None

    def check(self, size: int, producers: int, consumers: int) -> None:
        super().check(size, producers, consumers)
        largest = _mqueue_limit("msgsize_max", 8192)
        if size > largest:
            raise Unsupported(f"{size} B > fs.mqueue.msgsize_max {largest} B")

    def open(self, size: int, capacity: int, producers: int, consumers: int
             ) -> posix_ipc.MessageQueue:
        import posix_ipc
        depth = max(1, min(_mqueue_limit("msg_max", 10), capacity // max(size, 1)))
        try:
            return posix_ipc.MessageQueue(None, posix_ipc.O_CREX, max_messages=depth,
                                          max_message_size=max(size, 1))
        except (OSError, ValueError, posix_ipc.Error) as exc:
            raise Unsupported(str(exc)) from exc

    def close(self, channel: posix_ipc.MessageQueue) -> None:
        channel.close()
        channel.unlink()

    def producer(self, channel: posix_ipc.MessageQueue, index: int) -> Endpoint:
        return Endpoint(put=channel.send)

    def consumer(self, channel: posix_ipc.MessageQueue, index: int, size: int) -> Endpoint:
        receive: Callable[[], tuple[bytes, int]] = channel.receive

        def get() -> bytes:
            return receive()[0]  # (message, priority)
        return Endpoint(put=channel.send, get=get)


#: Zmq's channel: (temporary directory, one ipc:// address per consumer,
#: high-water mark in messages, zero-copy sends and receives).
ZmqChannel = tuple[str, list[str], int, bool]


class ZmqPushEnd(Endpoint):
    """A Zmq producer: its end() sends a sentinel down each PUSH socket."""

    sockets: list[zmq.Socket[bytes]]


class Zmq(Transport):
    """pyzmq PUSH/PULL over ipc:// in a temporary directory.

    Each consumer binds its own PULL socket; a producer has one PUSH socket
    per consumer and takes them in turn. (One PUSH connected to all would
    round-robin inside libzmq, but then the end-of-stream sentinels could not
    be addressed to each consumer behind its data.) With one consumer this is
    plain PUSH → PULL.
    """

    key = "zmq"
    label = "pyzmq PUSH/PULL ipc"

    def missing(self) -> Optional[str]:
        try:
            import zmq  # noqa: F401
        except ImportError:
            return "pyzmq is not installed (pip install pyzmq)"
        return None

    def open(self, size: int, capacity: int, producers: int, consumers: int) -> ZmqChannel:
        directory = tempfile.mkdtemp(prefix="ringshm-bench-zmq-")
        endpoints = [f"ipc://{os.path.join(directory, str(i))}" for i in range(consumers)]
        # High-water marks in messages, set to the ring's bytes in flight.
        return directory, endpoints, max(2, capacity // (size + 8)), size >= ZMQ_COPY_THRESHOLD

    def close(self, channel: ZmqChannel) -> None:
        shutil.rmtree(channel[0], ignore_errors=True)

    def producer(self, channel: ZmqChannel, index: int) -> Endpoint:
        import zmq
        _, endpoints, hwm, zero_copy = channel
        context = zmq.Context()
        sockets: list[zmq.Socket[bytes]] = []
        for endpoint in endpoints:
            socket = context.socket(zmq.PUSH)
            socket.setsockopt(zmq.SNDHWM, hwm)
            socket.setsockopt(zmq.LINGER, -1)  # deliver everything before exit
            # The consumer may bind a moment after this connect: retry fast
            # rather than after libzmq's default 100 ms.
            socket.setsockopt(zmq.RECONNECT_IVL, 1)
            socket.connect(endpoint)
            sockets.append(socket)
        sends = [functools.partial(socket.send, copy=not zero_copy) for socket in sockets]
        put: Callable[[bytes], object]
        if len(sends) == 1:
            put = sends[0]
        else:
            turn = itertools.cycle(sends)

            def put(message: bytes) -> None:
                next(turn)(message)

        def close() -> None:
            for socket in sockets:
                socket.close()
            context.term()
        return ZmqPushEnd(close, put=put, sockets=sockets)

    def end(self, endpoint: Endpoint, consumers: int) -> None:
        # Only this producer()'s ZmqPushEnd comes here.
        for socket in cast(ZmqPushEnd, endpoint).sockets:
            socket.send(b"")

    def consumer(self, channel: ZmqChannel, index: int, size: int) -> Endpoint:
        import zmq
        _, endpoints, hwm, zero_copy = channel
        context = zmq.Context()
        socket = context.socket(zmq.PULL)
        socket.setsockopt(zmq.RCVHWM, hwm)
        socket.bind(endpoints[index])

        def close() -> None:
            socket.close(linger=0)
            context.term()
        return Endpoint(close, get=functools.partial(socket.recv, copy=not zero_copy))


#: Iceoryx2's channel: (service name, message size, subscriber buffer depth,
#: producers, the "publisher made" pipe, the "subscriber connected" pipe).
Iceoryx2Channel = tuple[str, int, int, int, tuple[int, int], tuple[int, int]]


class Iceoryx2(Transport):
    """iceoryx2 publish-subscribe of u8 slices: put copies the message into a
    loaned sample, get copies it out of the received one (as ringshm's get
    makes a bytes object). Lossless: no safe overflow, publishers retry until
    delivered. A subscriber gets every sample (publish-subscribe, not a
    queue): one consumer. No blocking receive: get polls with sched_yield.
    Samples sent before the subscriber has connected to a publisher are
    dropped, so a publisher's first put waits for a handshake over two pipes:
    it says it exists, the subscriber's first get connects (has_samples())
    once every publisher exists and answers."""

    key = "iceoryx2"
    label = "iceoryx2 publish-subscribe"
    max_consumers = 1

    def missing(self) -> Optional[str]:
        try:
            import iceoryx2  # noqa: F401
        except ImportError:
            return "iceoryx2 is not installed (pip install iceoryx2)"
        return None

    def open(self, size: int, capacity: int, producers: int, consumers: int
             ) -> Iceoryx2Channel:
        depth = max(2, min(1024, capacity // (size + 64)))
        return (f"ringshm-bench-{os.getpid()}-{next(_iceoryx2_names)}", size, depth, producers,
                os.pipe(), os.pipe())

    def close(self, channel: Iceoryx2Channel) -> None:
        for fd in (*channel[4], *channel[5]):
            os.close(fd)
        iox2_sandbox.remove(channel[0])

    @staticmethod
    def _service(channel: Iceoryx2Channel) -> tuple[ModuleType, Any, Any]:
        import ctypes

        import iceoryx2 as iox2
        name, _, depth, producers = channel[:4]
        iox2.set_log_level(iox2.LogLevel.Error)
        node = iox2_sandbox.node(iox2, name)
        service = (node.service_builder(iox2.ServiceName.new(name))
                   .publish_subscribe(iox2.Slice[ctypes.c_uint8])
                   .enable_safe_overflow(False).subscriber_max_buffer_size(depth)
                   .max_publishers(max(producers, 1)).max_subscribers(1)
                   .open_or_create())
        return iox2, node, service

    def producer(self, channel: Iceoryx2Channel, index: int) -> Endpoint:
        import ctypes
        iox2, node, service = self._service(channel)
        publisher = (service.publisher_builder().initial_max_slice_len(max(channel[1], 1))
                     .backpressure_strategy(iox2.BackpressureStrategy.RetryUntilDelivered)
                     .create())
        ports = [node, service, publisher]   # alive until close()
        memmove = ctypes.memmove
        made, connected = channel[4], channel[5]
        first = [True]

        def put(message: bytes) -> None:
            if first[0]:   # the first send: the subscriber connects first
                os.write(made[1], b"!")
                os.read(connected[0], 1)
                publisher.update_connections()
                first[0] = False
            sample = publisher.loan_slice_uninit(len(message))
            memmove(sample.payload_ptr, message, len(message))
            sample.assume_init().send()
        def close() -> None:
            publisher.delete()
            ports.clear()
        return Endpoint(close, put=put)

    def consumer(self, channel: Iceoryx2Channel, index: int, size: int) -> Endpoint:
        import ctypes
        _, node, service = self._service(channel)
        subscriber = service.subscriber_builder().buffer_size(channel[2]).create()
        ports = [node, service]   # alive until close()
        string_at = ctypes.string_at
        yield_cpu = os.sched_yield
        producers, made, connected = channel[3], channel[4], channel[5]
        first = [True]

        def get() -> bytes:
            if first[0]:   # the first get: connect once every publisher exists
                for _ in range(producers):
                    os.read(made[0], 1)
                subscriber.has_samples()
                os.write(connected[1], b"!" * producers)
                first[0] = False
            while True:
                sample = subscriber.receive()
                if sample is not None:
                    break
                yield_cpu()
            message = string_at(sample.payload_ptr, sample.payload().number_of_elements)
            sample.delete()
            return message

        def close() -> None:
            subscriber.delete()
            ports.clear()
        return Endpoint(close, get=get)


_iceoryx2_names = itertools.count()

TRANSPORTS = (MPQueue(), MPPipe(), FasterFifo(), FasterFifoBatch(), PosixMQ(), Zmq(), Iceoryx2())
