"""The in bridge: a JetStream stream into a ring, each message once.

A durable pull consumer delivers batches; the bridge puts each batch into
the ring with ``put_many(..., tag=S)``, S the stream sequence of the batch's
last message, and acknowledges the batch only after the put returned.  The
tag is stored atomically with the put (docs/DESIGN.md, "Tagged puts"), so
the ring itself says which stream message it holds last, even after the
bridge was killed between a put and its acknowledgements: JetStream then
delivers those messages again, and the bridge acknowledges and drops every
one whose sequence is not above the tag.

**Order.**  The bridge puts stream sequence T+1 after T, nothing else.  A
redelivery can come after newer messages (a consumer restarted with
messages pending, an acknowledgement lost): a sequence above T+1 is a gap,
and the bridge makes the consumer again, starting at T+1, rather than put
out of order.  The stream must hold the subject alone (as the stream made
by a bridge does), so that its sequences follow each other; the first
message a fresh consumer delivers above T+1 is taken as the next only when
the stream holds nothing before it any more (its limits dropped the rest),
else it is a gap like any other; one at or below T never is, from any
consumer.  A stream that ends below T was
made again: the bridge stops with a BridgeError rather than drop it all.
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional, Union

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from ringshm._ring import RECORD_HEADER
from ringshm.bridge.connection import (
    BridgeError,
    NatsOptions,
    SessionLost,
    ensure_stream,
    notice,
    run_sessions,
)
from ringshm.bridge.ids import default_durable, default_stream
from ringshm.bridge.pull import Puller
from ringshm.bridge.rings import as_ring
from ringshm.errors import Full, ShutDown
from ringshm.ring import Ring

#: Messages asked for per fetch, and how long a fetch waits for the first.
BATCH = 256
FETCH_WAIT = 0.5
#: After a fetch that brought less than a quarter of a batch, the next one
#: waits this long: messages trickling in one by one would otherwise cost a
#: fetch round trip each (20,000 fetches for 20,000 64 B messages, and a
#: third of the throughput; docs/PERFORMANCE.md).
TRICKLE_PAUSE = 0.005
#: The consumer's ack_wait: a message not acknowledged (nor reported in
#: progress) within this many seconds is delivered again.
ACK_WAIT = 30.0
#: A put that waits for room reports the batch in progress this often, so
#: that a full ring slows the stream instead of making it deliver again.
PROGRESS_EVERY = ACK_WAIT / 4


async def bridge_in(options: Union[NatsOptions, str], subject: str, ring: Union[Ring, str], *,
                    stream: Optional[str] = None, durable: Optional[str] = None,
                    batch: int = BATCH, wait_at_start: bool = False) -> None:
    """Put every message of `subject` into `ring`, once, in stream order;
    return when the ring is shut down.

    Args:
        options: a NatsOptions, or the server's URL.
        subject: the subject to take.
        ring: a Ring, or the name of one.  The bridge must be the only one
            that puts into it with a tag (one in bridge per ring).
        stream: the stream (created for the subject when missing; default
            ``ringshm_<subject>``).
        durable: the durable consumer's name (default ``<stream>_in``).
        batch: messages per fetch.
        wait_at_start: wait for a server that is not there at start.

    Raises:
        BridgeError: no server at start (without `wait_at_start`), a server
            without JetStream ("JetStream is not enabled on ..."), a stream
            that does not take the subject, a message larger than the ring
            takes.
    """
    destination = as_ring(ring)
    if isinstance(options, str):
        options = NatsOptions(options)
    name = stream or default_stream(subject)
    bridge = _InBridge(destination, subject, name, durable or default_durable(name), batch)
    await run_sessions("in", options, bridge.session, wait_at_start)


def run_in(url: Union[NatsOptions, str], subject: str, ring: Union[Ring, str],
           **kwargs: object) -> None:
    """bridge_in() on an event loop of its own (blocks until the ring is
    shut down).

    Raises:
        as bridge_in().
    """
    asyncio.run(bridge_in(url, subject, ring, **kwargs))  # type: ignore[arg-type]


class _InBridge:
    def __init__(self, ring: Ring, subject: str, stream: str, durable: str, batch: int) -> None:
        self.ring = ring
        self.subject = subject
        self.stream = stream
        self.durable = durable
        self.batch = batch

    async def session(self, client: Client, lost: asyncio.Event) -> bool:
        js = client.jetstream()
        await ensure_stream(js, self.stream, self.subject)
        loop = asyncio.get_running_loop()
        last = await loop.run_in_executor(None, self.ring._last_tag)
        stored = (await js.stream_info(self.stream)).state.last_seq
        if stored < last:
            raise BridgeError(f"the ring holds stream message {last} already, and stream "
                              f"{self.stream} ends at {stored}: it was made again (a new "
                              "stream needs a new ring, or one whose tag is not above it)")
        fresh = await self._consumer(js, last, recreate=False)
        pull = await Puller(client, self.stream, self.durable).start()
        while True:
            if lost.is_set():
                raise SessionLost("connection closed")
            if self.ring.is_shutdown:
                return True
            messages = await pull.fetch(self.batch, FETCH_WAIT)
            if not messages:
                continue
            self.ring._bridge_count("received", len(messages))
            accepted: list[Msg] = []
            stale: list[Msg] = []
            gap = None
            for message in messages:
                sequence = message.metadata.sequence.stream
                if sequence <= last:
                    # In the ring already, its tag says so: even from a
                    # consumer taken for fresh (one the server had and did
                    # not show while it recovered delivers from its own
                    # ack floor, below the tag).
                    stale.append(message)
                elif sequence == last + 1 or (fresh and await self._gone_before(js, sequence)):
                    fresh = False
                    accepted.append(message)
                    last = sequence
                else:
                    gap = sequence
                    break
            if stale:
                self.ring._bridge_count("redelivered", len(stale))
                for message in stale:
                    await message.ack()
            if not await self._put(accepted, lost):
                return True
            if len(messages) < self.batch // 4:
                await asyncio.sleep(TRICKLE_PAUSE)
            if gap is not None:
                notice("in", f"stream message {gap} came before {last + 1}: making the "
                             f"consumer again from {last + 1}")
                await pull.stop()
                fresh = await self._consumer(js, last, recreate=True)
                pull = await Puller(client, self.stream, self.durable).start()

    async def _gone_before(self, js: JetStreamContext, sequence: int) -> bool:
        """True if the stream no longer holds any message before `sequence`
        (its limits dropped them): only then may a fresh consumer's first
        delivery skip past the tag.  A consumer taken for fresh may be an
        older one, which delivers new messages first and the ones it had
        handed to a killed bridge only after ack_wait: skipping to its first
        delivery would lose those (seen once in the kill test, 20 messages)."""
        first: int = (await js.stream_info(self.stream)).state.first_seq
        return first >= sequence

    async def _consumer(self, js: JetStreamContext, last: int, recreate: bool) -> bool:
        """Make sure the durable consumer exists (made again, starting after
        `last`, if `recreate`); True if it was made now (its first delivery
        is the next message whatever its sequence)."""
        try:
            await js.consumer_info(self.stream, self.durable)
            if not recreate:
                # A consumer of an earlier run: it may deliver anything; the
                # checks of session() keep the order.  With no tag yet it is
                # taken for fresh, and its first delivery is the next only if
                # the stream holds nothing before it (_gone_before): else the
                # consumer is made again from the stream's start, since what
                # it handed to a killed bridge is not in the ring.
                return last == 0
            await js.delete_consumer(self.stream, self.durable)
        except NotFoundError:
            pass
        config: dict[str, Any] = {}
        if last > 0:
            config = {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE,
                      "opt_start_seq": last + 1}
        await js.add_consumer(self.stream, ConsumerConfig(
            durable_name=self.durable, filter_subject=self.subject,
            ack_policy=AckPolicy.EXPLICIT, ack_wait=ACK_WAIT, max_ack_pending=self.batch * 4,
            **config))
        return True

    async def _put(self, messages: list[Msg], lost: asyncio.Event) -> bool:
        """Put `messages` (with the last one's sequence as the tag), in
        chunks the ring takes, then acknowledge them; False when the ring
        was shut down (nothing more is acknowledged)."""
        loop = asyncio.get_running_loop()
        waiting = len(messages)   # fetched, not yet acknowledged: messages[-waiting:]
        reported = loop.time()    # when JetStream last heard they are in progress
        for chunk in self._chunks(messages):
            payloads = [message.data for message in chunk]
            tag = chunk[-1].metadata.sequence.stream
            while True:
                if loop.time() - reported >= PROGRESS_EVERY:
                    # A slow ring: the whole rest of the batch waits, not
                    # only this chunk, and each put may be quick.
                    for message in messages[-waiting:]:
                        await message.in_progress()
                    reported = loop.time()
                try:
                    await loop.run_in_executor(None, self._put_chunk, payloads, tag)
                    break
                except Full:
                    if lost.is_set():
                        raise SessionLost("connection closed") from None
                except ShutDown:
                    return False
            self.ring._bridge_count("put", len(chunk))
            for message in chunk:
                await message.ack()
            waiting -= len(chunk)
        return True

    def _put_chunk(self, payloads: list[bytes], tag: int) -> None:
        self.ring.put_many(payloads, timeout=PROGRESS_EVERY, tag=tag)

    def _chunks(self, messages: list[Msg]) -> list[list[Msg]]:
        """`messages` cut where a put_many() would exceed half the ring or
        its max_messages (each part is put and tagged alone)."""
        limit = self.ring.capacity // 2
        count_limit = self.ring.stats()["max_messages"] or len(messages) or 1
        chunks: list[list[Msg]] = []
        current: list[Msg] = []
        span = 0
        for message in messages:
            size = len(message.data)
            if size > self.ring.max_message_size:
                raise BridgeError(f"stream message {message.metadata.sequence.stream} has "
                                  f"{size} bytes, more than the ring takes "
                                  f"({self.ring.max_message_size})")
            need = RECORD_HEADER + (size + 7) // 8 * 8   # the record's span
            if current and (span + need > limit or len(current) >= count_limit):
                chunks.append(current)
                current, span = [], 0
            current.append(message)
            span += need
        if current:
            chunks.append(current)
        return chunks

