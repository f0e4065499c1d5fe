"""The out bridge: a ring to a JetStream stream, each message once.

A session (one connection, see connection.py) first **reconciles**: it reads
the stream's last message and, if its id names this ring (ids.py), consumes
from the ring every message up to it without sending it again: a bridge
killed after JetStream stored a message but before consuming it, or a
connection lost with acknowledgements in the air, resumes exactly after what
is stored.  Then it publishes a **window** of messages it looked at without
consuming them (``Ring._peek_many``), many in flight at once, and consumes
each prefix of the window whose acknowledgements came (``Ring._consume``).

**Order.**  Each message carries ``Nats-Expected-Last-Sequence``: the stream
sequence of the message before it (the stream's last one at reconcile, plus
its place since); every message but a session's first also carries
``Nats-Expected-Last-Msg-Id``: the id of the message sent before it.  The
server stores a message only if the stream's last message is exactly that,
so when message k is lost in a dead socket, k+1 and what follows are refused
instead of being stored ahead of it; the session starts over at reconcile,
which finds k-1 last and sends k again.  The id matters when another
publisher slips one message in between reconcile and our first: k is
refused (the sequence moved by one) and k+1, which expects the sequence k
would have had, would otherwise be stored after the intruder, so that
reconcile found k+1 last and took k for stored.  Duplicates never get in
either: a message already stored is dropped by its message id within the
duplicate window (the server looks at the id before the expectations).
The price: the bridge must be the stream's only publisher (a stream per out
bridge: the default stream is made for the subject alone); another
publisher costs restarts, never a message.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass
from typing import Any, Optional, Union

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import APIError, NotFoundError

from ringshm.bridge.connection import (
    BridgeError,
    NatsOptions,
    SessionLost,
    ensure_stream,
    notice,
    run_sessions,
)
from ringshm.bridge.ids import default_stream, msg_id, parse_msg_id
from ringshm.bridge.rings import as_ring
from ringshm.errors import RingError
from ringshm.ring import Ring

#: Messages and payload bytes in flight (published, not yet acknowledged).
WINDOW_MESSAGES = 512
WINDOW_BYTES = 8 << 20
#: An acknowledgement that has not come after this many seconds ends the
#: window: the session reconciles and sends again from what is stored.
ACK_TIMEOUT = 5.0
#: The pause before a window starts over, so that a stream refusing every
#: message costs a few round trips a second, not a busy loop.
RESTART_PAUSE = 0.05
#: How long one wait for data in the ring lasts before looking at the
#: connection and the ring's shutdown again.
DATA_SLICE = 0.2


class _Restart(Exception):
    """The window is void (a refused or missing acknowledgement): reconcile."""


@dataclass
class _InFlight:
    sequence: int                  # the message's number in the ring
    stream_sequence: int           # where the stream must store it
    size: int                      # payload bytes
    ack: "asyncio.Future[PubAck]"


async def bridge_out(ring: Union[Ring, str], options: Union[NatsOptions, str], subject: str, *,
                     stream: Optional[str] = None, window: int = WINDOW_MESSAGES,
                     window_bytes: int = WINDOW_BYTES, wait_at_start: bool = False) -> None:
    """Publish every message of `ring` to `subject` and consume it once
    JetStream has stored it; return when the ring is shut down and drained.

    Args:
        ring: a Ring, or the name of one.  The bridge must be its only
            consumer.
        options: a NatsOptions, or the server's URL.
        subject: the subject to publish on.
        stream: the JetStream stream (created for the subject when missing;
            default ``ringshm_<subject>``).  The bridge must be its only
            publisher.
        window, window_bytes: at most this many messages (and payload
            bytes, but at least one message) published and not acknowledged.
        wait_at_start: if the server is not there at start, wait for it
            (with back-off) instead of failing.

    Raises:
        BridgeError: no server at start (without `wait_at_start`), a server
            without JetStream ("JetStream is not enabled on ..."), a stream
            that does not take the subject, or a stream whose last message
            names this ring but a message it never had.
        RingError: another consumer took messages from the ring.
    """
    source = as_ring(ring)
    if isinstance(options, str):
        options = NatsOptions(options)
    bridge = _OutBridge(source, subject, stream or default_stream(subject), window,
                        window_bytes)
    await run_sessions("out", options, bridge.session, wait_at_start)


def run_out(ring: Union[Ring, str], url: Union[NatsOptions, str], subject: str,
            **kwargs: object) -> None:
    """bridge_out() on an event loop of its own (blocks until the ring is
    shut down and drained).

    Raises:
        as bridge_out().
    """
    asyncio.run(bridge_out(ring, url, subject, **kwargs))  # type: ignore[arg-type]


class _OutBridge:
    def __init__(self, ring: Ring, subject: str, stream: str, window: int,
                 window_bytes: int) -> None:
        if not any(ring._identity()):
            raise BridgeError("the ring has no identity (made by a ringshm before 0.2): "
                              "make it again to bridge it")
        self.ring = ring
        self.identity = ring.identity
        self.subject = subject
        self.stream = stream
        self.window = window
        self.window_bytes = window_bytes

    async def session(self, client: Client, lost: asyncio.Event) -> bool:
        js = client.jetstream(publish_async_max_pending=self.window + 1)
        self.max_payload = client.max_payload
        await ensure_stream(js, self.stream, self.subject)
        while True:
            last = await self._reconcile(js)
            try:
                return await self._publish(js, lost, last)
            except _Restart as why:
                notice("out", f"{why}; resending from the last message stored")
            await asyncio.sleep(RESTART_PAUSE)
            await ensure_stream(js, self.stream, self.subject)

    async def _reconcile(self, js: JetStreamContext) -> int:
        """Consume what the stream already holds of this ring; return the
        stream's last sequence (the one the next message must follow)."""
        try:
            stored = await js.get_last_msg(self.stream, self.subject)
        except NotFoundError:
            info = await js.stream_info(self.stream)
            return int(info.state.last_seq)
        named = parse_msg_id((stored.headers or {}).get("Nats-Msg-Id"))
        if named is not None and named[0] == self.identity:
            first, _ = self.ring._peek_many(0, 1)
            count = named[1] + 1 - first
            if count > 0:
                try:
                    self.ring._consume(count, first)
                except RingError as exc:
                    raise BridgeError(f"the stream's last message is message {named[1]} of "
                                      f"this ring, which has not got it: {exc}") from None
                self.ring._bridge_count("acked", count)
        return int(stored.seq or 0)   # a stored message has a sequence

    async def _publish(self, js: JetStreamContext, lost: asyncio.Event, last: int) -> bool:
        inflight: collections.deque[_InFlight] = collections.deque()
        lost_wait: asyncio.Future[bool] = asyncio.ensure_future(lost.wait())
        refused = asyncio.Event()
        refused_wait: asyncio.Future[bool] = asyncio.ensure_future(refused.wait())

        def note_refusal(ack: "asyncio.Future[PubAck]") -> None:
            if not ack.cancelled() and ack.exception() is not None:
                refused.set()

        self.inflight_bytes = 0
        previous_id: Optional[str] = None   # of the message sent last in this window
        try:
            while True:
                if lost.is_set():
                    raise SessionLost("connection closed")
                room = self.window - len(inflight)
                if room > 0:
                    first, messages = self.ring._peek_many(
                        len(inflight), room, max(1, self.window_bytes - self.inflight_bytes))
                    sent = 0
                    for offset, payload in enumerate(messages):
                        sequence = first + offset
                        if len(payload) > self.max_payload and inflight:
                            break   # let the window before it settle first
                        if len(payload) > self.max_payload:
                            raise BridgeError(
                                f"message {sequence} of the ring has {len(payload)} bytes, more "
                                f"than the server's max_payload ({self.max_payload}); it stays "
                                "in the ring")
                        last += 1
                        this_id = msg_id(self.identity, sequence)
                        headers = {"Nats-Msg-Id": this_id,
                                   "Nats-Expected-Last-Sequence": str(last - 1)}
                        if previous_id is not None:
                            headers["Nats-Expected-Last-Msg-Id"] = previous_id
                        previous_id = this_id
                        ack = await js.publish_async(
                            self.subject, payload, headers=headers)
                        ack.add_done_callback(note_refusal)
                        inflight.append(_InFlight(sequence, last, len(payload), ack))
                        self.inflight_bytes += len(payload)
                        sent += 1
                    if sent:
                        self.ring._bridge_count("sent", sent)
                if not inflight:
                    if self.ring.is_shutdown and len(self.ring) == 0:
                        return True
                    await asyncio.get_running_loop().run_in_executor(
                        None, self.ring._wait_data, DATA_SLICE)
                    continue
                await self._settle(inflight, lost_wait, refused_wait)
        finally:
            lost_wait.cancel()
            refused_wait.cancel()
            for entry in inflight:
                entry.ack.cancel()

    async def _settle(self, inflight: collections.deque[_InFlight],
                      lost_wait: "asyncio.Future[bool]",
                      refused_wait: "asyncio.Future[bool]") -> None:
        """Wait for the oldest acknowledgement (or any refusal: the ones
        before it may never come), then consume the prefix of the window
        that is acknowledged."""
        waits: list[asyncio.Future[Any]] = [inflight[0].ack, lost_wait, refused_wait]
        done, _ = await asyncio.wait(waits, timeout=ACK_TIMEOUT,
                                     return_when=asyncio.FIRST_COMPLETED)
        if lost_wait in done:
            raise SessionLost("connection closed")
        if not done:
            raise _Restart(f"no acknowledgement in {ACK_TIMEOUT:g} s")
        count = 0
        first = inflight[0].sequence
        while inflight and inflight[0].ack.done():
            entry = inflight[0]
            try:
                ack = entry.ack.result()
            except APIError as exc:
                self._consume(first, count)
                raise _Restart(f"JetStream refused message {entry.sequence}: "
                               f"{exc.description or exc}") from None
            if ack.seq != entry.stream_sequence and not ack.duplicate:
                self._consume(first, count)
                raise _Restart(f"message {entry.sequence} stored at {ack.seq}, not "
                               f"{entry.stream_sequence}: is another publisher on the stream?")
            inflight.popleft()
            self.inflight_bytes -= entry.size
            count += 1
        self._consume(first, count)
        if refused_wait.done():
            raise _Restart("JetStream refused a message in the window")

    def _consume(self, first: int, count: int) -> None:
        if count:
            self.ring._consume(count, first)
            self.ring._bridge_count("acked", count)
