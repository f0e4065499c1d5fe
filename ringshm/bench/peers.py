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

from .transport import GET_MANY_LIMIT, BatchMixin, Endpoint, Transport, Unsupported

_fork = multiprocessing.get_context("fork")

# Above this size zmq sends and receives without copying (pyzmq's advice:
# copying is cheaper for small frames).
ZMQ_COPY_THRESHOLD = 64 << 10


class MPQueue(Transport):
    """multiprocessing.Queue: pickles every item (it cannot do otherwise) and
    writes it to a pipe from a feeder thread."""

    key = "mp-queue"
    label = "multiprocessing.Queue"

    def open(self, size, capacity, producers, consumers):
        # Bounded like the ring; unbounded, the producer's deque grows
        # without limit and the run would end long after the time budget.
        return _fork.Queue(maxsize=max(2, capacity // (size + 8)))

    def close(self, channel):
        channel.close()
        channel.join_thread()

    def producer(self, channel, index):
        return Endpoint(put=channel.put)

    def consumer(self, channel, index, size):
        return Endpoint(put=channel.put, get=channel.get)


class MPPipe(Transport):
    """multiprocessing.Pipe(duplex=False) with send_bytes/recv_bytes (no
    pickling). Not safe for several writers or readers: 1→1 only."""

    key = "mp-pipe"
    label = "multiprocessing.Pipe"
    max_producers = 1
    max_consumers = 1

    def open(self, size, capacity, producers, consumers):
        return _fork.Pipe(duplex=False)

    def close(self, channel):
        for connection in channel:
            connection.close()

    def producer(self, channel, index):
        return Endpoint(put=channel[1].send_bytes)

    def consumer(self, channel, index, size):
        return Endpoint(get=channel[0].recv_bytes)


def _retry_empty(get):
    """faster-fifo's blocking get raises Empty when several consumers race
    for one message (and after its default 10 s timeout): wait on, as its
    users have to."""
    def patient_get():
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

    def missing(self):
        try:
            import faster_fifo  # noqa: F401
        except ImportError:
            return "faster-fifo is not installed (pip install faster-fifo)"
        return None

    def open(self, size, capacity, producers, consumers):
        import faster_fifo
        return faster_fifo.Queue(max_size_bytes=capacity, loads=bytes, dumps=bytes), consumers

    def producer(self, channel, index):
        fifo, _ = channel
        return Endpoint(put=fifo.put, put_many=fifo.put_many)

    def consumer(self, channel, index, size):
        fifo, consumers = channel
        get_many = functools.partial(fifo.get_many, max_messages_to_get=GET_MANY_LIMIT)
        if consumers == 1:  # no race: faster-fifo as it is, no wrapper to pay for
            return Endpoint(put=fifo.put, get=fifo.get, get_many=get_many)
        return Endpoint(put=fifo.put, get=_retry_empty(fifo.get),
                        get_many=_retry_empty(get_many))


class FasterFifoBatch(BatchMixin, FasterFifo):
    key = "faster-fifo-batch"
    label = "faster-fifo put_many/get_many"


def _mqueue_limit(name, default):
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

    def missing(self):
        import posix_ipc
        if not posix_ipc.MESSAGE_QUEUES_SUPPORTED:
            return "POSIX message queues are not supported here"
        return None

    def check(self, size, producers, consumers):
        super().check(size, producers, consumers)
        largest = _mqueue_limit("msgsize_max", 8192)
        if size > largest:
            raise Unsupported(f"{size} B > fs.mqueue.msgsize_max {largest} B")

    def open(self, size, capacity, producers, consumers):
        import posix_ipc
        depth = max(1, min(_mqueue_limit("msg_max", 10), capacity // max(size, 1)))
        try:
            return posix_ipc.MessageQueue(None, posix_ipc.O_CREX, max_messages=depth,
                                          max_message_size=max(size, 1))
        except (OSError, ValueError, posix_ipc.Error) as exc:
            raise Unsupported(str(exc)) from exc

    def close(self, channel):
        channel.close()
        channel.unlink()

    def producer(self, channel, index):
        return Endpoint(put=channel.send)

    def consumer(self, channel, index, size):
        receive = channel.receive

        def get():
            return receive()[0]  # (message, priority)
        return Endpoint(put=channel.send, get=get)


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

    def missing(self):
        try:
            import zmq  # noqa: F401
        except ImportError:
            return "pyzmq is not installed (pip install pyzmq)"
        return None

    def open(self, size, capacity, producers, consumers):
        directory = tempfile.mkdtemp(prefix="ringshm-bench-zmq-")
        endpoints = [f"ipc://{os.path.join(directory, str(i))}" for i in range(consumers)]
        # High-water marks in messages, set to the ring's bytes in flight.
        return directory, endpoints, max(2, capacity // (size + 8)), size >= ZMQ_COPY_THRESHOLD

    def close(self, channel):
        shutil.rmtree(channel[0], ignore_errors=True)

    def producer(self, channel, index):
        import zmq
        _, endpoints, hwm, zero_copy = channel
        context = zmq.Context()
        sockets = []
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
        if len(sends) == 1:
            put = sends[0]
        else:
            turn = itertools.cycle(sends)

            def put(message):
                next(turn)(message)

        def close():
            for socket in sockets:
                socket.close()
            context.term()
        return Endpoint(close, put=put, sockets=sockets)

    def end(self, endpoint, consumers):
        for socket in endpoint.sockets:
            socket.send(b"")

    def consumer(self, channel, index, size):
        import zmq
        _, endpoints, hwm, zero_copy = channel
        context = zmq.Context()
        socket = context.socket(zmq.PULL)
        socket.setsockopt(zmq.RCVHWM, hwm)
        socket.bind(endpoints[index])

        def close():
            socket.close(linger=0)
            context.term()
        return Endpoint(close, get=functools.partial(socket.recv, copy=not zero_copy))


TRANSPORTS = (MPQueue(), MPPipe(), FasterFifo(), FasterFifoBatch(), PosixMQ(), Zmq())
