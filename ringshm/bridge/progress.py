"""``--progress``: a live line with a bridge's rate and backlog (rich)."""

from __future__ import annotations

import asyncio
import time

from rich.console import Console
from rich.live import Live
from rich.text import Text

from ringshm.ring import Ring

REFRESH = 0.5   # seconds between updates


def _line(role: str, ring: Ring, rate: float) -> Text:
    stats = ring.stats()
    if role == "out":
        done = stats["bridge_acked"]
        text = (f"out: {stats['bridge_sent']:,} sent, {done:,} acknowledged, "
                f"{rate:,.0f} msg/s, backlog {stats['messages']:,} in the ring")
    else:
        text = (f"in: {stats['bridge_received']:,} fetched, {stats['bridge_put']:,} put, "
                f"{stats['bridge_redelivered']:,} redelivered dropped, {rate:,.0f} msg/s, "
                f"{stats['messages']:,} waiting in the ring")
    return Text(text)


def _done(role: str, ring: Ring) -> int:
    stats = ring.stats()
    return int(stats["bridge_acked"] if role == "out" else stats["bridge_put"])


async def show_progress(role: str, ring: Ring) -> None:
    """Redraw the line every REFRESH seconds on stderr until cancelled."""
    console = Console(stderr=True)
    before, since = _done(role, ring), time.monotonic()
    with Live(_line(role, ring, 0.0), console=console, transient=False) as live:
        while True:
            await asyncio.sleep(REFRESH)
            now, done = time.monotonic(), _done(role, ring)
            live.update(_line(role, ring, (done - before) / max(now - since, 1e-9)))
            before, since = done, now
