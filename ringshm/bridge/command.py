"""``ringshm bridge out|in``: the command line's arguments to a bridge."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Any, Coroutine

from ringshm.bridge.connection import NatsOptions
from ringshm.bridge.in_ import bridge_in
from ringshm.bridge.out import bridge_out
from ringshm.bridge.progress import show_progress
from ringshm.ring import Ring


def run_bridge(args: argparse.Namespace) -> int:
    """Run the bridge `args` describe until its ring is shut down: 0.

    Raises:
        BridgeError, RingError, OSError: as bridge_out()/bridge_in() (the
            command prints one line and exits 1).
    """
    options = NatsOptions(args.url, creds=args.creds, tls_ca=args.tls_ca,
                          tls_cert=args.tls_cert, tls_key=args.tls_key,
                          tls_hostname=args.tls_hostname)
    ring = Ring.open(args.ring)
    try:
        if args.direction == "out":
            work = bridge_out(ring, options, args.subject, stream=args.stream,
                              window=args.window, wait_at_start=args.wait)
        else:
            work = bridge_in(options, args.subject, ring, stream=args.stream,
                             durable=args.durable, batch=args.batch, wait_at_start=args.wait)
        asyncio.run(_with_progress(work, args.direction, ring if args.progress else None))
    finally:
        ring.close()
    return 0


async def _with_progress(work: Coroutine[Any, Any, None], role: str, ring: Ring | None) -> None:
    if ring is None:
        await work
        return
    shown = asyncio.ensure_future(show_progress(role, ring))
    try:
        await work
    finally:
        shown.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await shown
