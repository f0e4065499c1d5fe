"""Pull requests of the in bridge's own, the replies gathered by a
subscription callback.

nats-py's ``fetch()`` waits for each message of a batch with an
``asyncio.wait_for`` of its own (two tasks a message): a third of the in
bridge's time with 64 B messages (docs/PERFORMANCE.md).  Here one request
asks for a batch (``no_wait``: what is there now, then a 404 status), the
callback appends each message, and the batch ends at its size or at the
status; when nothing was there, a second request waits (``expires``) for
the first message.  A reply to an earlier request that comes late is a
message of the consumer like any other, delivered in order: it joins the
batch in progress.
"""

from __future__ import annotations

import asyncio
import json
from typing import Optional

from nats.aio.client import Client
from nats.aio.msg import Msg

# A reply without data and with a Status header ends the request (404 no
# messages, 408 expired, 409 consumer deleted or too many requests), except
# an idle heartbeat.
_HEARTBEAT = "100"


class Puller:
    """Batches of a durable pull consumer, as ``fetch()`` returns them."""

    def __init__(self, client: Client, stream: str, durable: str) -> None:
        self._client = client
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = client.new_inbox()
        self._batch: list[Msg] = []
        self._wanted = 0
        self._ended = asyncio.Event()
        self._subscription: Optional[object] = None

    async def start(self) -> Puller:
        """Subscribe to the replies (before the first request)."""
        self._subscription = await self._client.subscribe(self._inbox, cb=self._reply,
                                                          pending_msgs_limit=-1)
        return self

    async def stop(self) -> None:
        """Unsubscribe (the consumer keeps whatever was not acknowledged)."""
        if self._subscription is not None:
            await self._subscription.unsubscribe()  # type: ignore[attr-defined]
            self._subscription = None

    async def _reply(self, message: Msg) -> None:
        status = (message.headers or {}).get("Status") if not message.data else None
        if status is not None:
            if status != _HEARTBEAT:
                self._ended.set()
            return
        self._batch.append(message)
        if len(self._batch) >= self._wanted:
            self._ended.set()

    async def fetch(self, batch: int, wait: float) -> list[Msg]:
        """Up to `batch` messages: those there now, else the first to come
        within `wait` seconds (and any that come with it); [] if none came."""
        messages = await self._request(batch, {"batch": batch, "no_wait": True}, wait)
        if messages:
            return messages
        return await self._request(batch, {"batch": batch, "expires": int(wait * 1e9)},
                                   wait + 0.1)

    async def _request(self, batch: int, request: dict[str, object],
                       wait: float) -> list[Msg]:
        self._wanted = batch
        self._ended.clear()
        if len(self._batch) < batch:
            await self._client.publish(self._next, json.dumps(request).encode(),
                                       reply=self._inbox)
            try:
                await asyncio.wait_for(self._ended.wait(), wait)
            except asyncio.TimeoutError:
                pass
        messages, self._batch = self._batch[:batch], self._batch[batch:]
        return messages
