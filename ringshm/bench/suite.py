"""What to measure (the plans) and the loop that measures it.

Repeats are the outer loop: every case runs once, then every case again, so
a burst of noise from the rest of the machine lands on one repeat of many
cases rather than on every repeat of one case. Each case reports its best
repeat (the least disturbed); every repeat must deliver every message.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import sys
from typing import Any, Callable, Optional, Sequence

from . import clib, cref, peers, rings, runner
from .transport import Transport, Unsupported, capacity_for

TRANSPORTS: tuple[Transport, ...] = (rings.TRANSPORTS + cref.TRANSPORTS + clib.TRANSPORTS
                                     + peers.TRANSPORTS)
BY_KEY = {transport.key: transport for transport in TRANSPORTS}
PINGPONG_SIZE = 64


@dataclasses.dataclass(frozen=True)
class Plan:
    name: str
    sizes: tuple[int, ...]
    topologies: tuple[tuple[int, int], ...]         # (producers, consumers)
    seconds: float             # time budget of one throughput run
    repeats: int
    pingpong: bool = True
    round_trips: int = 20000   # per ping-pong run, after the warm-up
    warmup: int = 1000
    pingpong_seconds: float = 1.0  # a slow transport stops early


SHORT = Plan("short", sizes=(64, 1 << 20), topologies=((1, 1), (4, 1)), seconds=0.2, repeats=3)
FULL = Plan("full", sizes=(8, 64, 512, 4 << 10, 32 << 10, 256 << 10, 1 << 20, 4 << 20),
            topologies=((1, 1), (4, 1), (1, 4), (4, 4)), seconds=0.5, repeats=3,
            round_trips=100000, warmup=2000, pingpong_seconds=3.0)
# For the smoke test: every code path, no meaningful numbers.
SMOKE = Plan("smoke", sizes=(64, 1 << 20), topologies=((1, 1), (4, 1)), seconds=0.02, repeats=1,
             round_trips=200, warmup=20, pingpong_seconds=0.5)


def _cases(plan: Plan, transports: Sequence[Transport]
           ) -> list[tuple[str, Transport, int, int, int]]:
    """(kind, transport, size, producers, consumers) in table order."""
    cases: list[tuple[str, Transport, int, int, int]] = []
    for producers, consumers in plan.topologies:
        for size in plan.sizes:
            cases += [("throughput", t, size, producers, consumers) for t in transports]
    if plan.pingpong:
        # Only transports whose get returns the message can echo it.
        cases += [("pingpong", t, PINGPONG_SIZE, 1, 1) for t in transports if t.pingpong]
    return cases


def _record(kind: str, transport: Transport, size: int, producers: int, consumers: int
            ) -> dict[str, Any]:
    return {"kind": kind, "transport": transport.key, "label": transport.label,
            "size": size, "producers": producers, "consumers": consumers,
            "skipped": None, "error": None, "ok": True, "repeats": []}


def _measure_once(plan: Plan, record: dict[str, Any], transport: Transport) -> str:
    """One repeat into record; returns a line for the progress log."""
    kind, size = record["kind"], record["size"]
    if kind == "pingpong":
        run = runner.round_trips(transport, size, plan.round_trips, plan.warmup,
                                 plan.pingpong_seconds)
        record["ok"] &= run["received"] == run["count"]
        record["repeats"].append(run)
        if "p50_us" not in record or run["p50_us"] < record["p50_us"]:
            record.update(run)
        return f"p50 {run['p50_us']:.2f} µs, p99 {run['p99_us']:.2f} µs"
    run = runner.throughput(transport, size, record["producers"], record["consumers"],
                            plan.seconds)
    rate = run["received"] / run["seconds"]
    record["ok"] &= run["sent"] == run["received"]
    record["repeats"].append(rate)
    if rate >= max(record["repeats"]):
        record.update(run, msgs_per_s=rate, mb_per_s=rate * size / 1e6)
    lost = "" if run["sent"] == run["received"] else f"  LOST {run['sent'] - run['received']}"
    return f"{rate / 1e6:.3f} M msg/s, {rate * size / 1e6:,.0f} MB/s{lost}"


def describe(record: dict[str, Any]) -> str:
    topology = f"{record['producers']}→{record['consumers']}"
    return f"{record['label']}, {record['size']} B, {topology}, {record['kind']}"


def run(plan: Plan, transports: Sequence[Transport] = TRANSPORTS,
        log: Optional[Callable[[str], object]] = None) -> dict[str, Any]:
    """Measure plan over transports. Returns {"meta": ..., "results": [...]}."""
    log = log or (lambda line: None)
    records: list[dict[str, Any]] = []
    missing = {t.key: t.missing() for t in transports}
    for note in sorted({why for why in missing.values() if why}):
        log(f"skipped: {note}")
    pending: list[tuple[dict[str, Any], Transport]] = []
    for kind, transport, size, producers, consumers in _cases(plan, transports):
        record = _record(kind, transport, size, producers, consumers)
        records.append(record)
        try:
            if missing[transport.key]:
                raise Unsupported(missing[transport.key])
            transport.check(size, producers, consumers)
            pending.append((record, transport))
        except Unsupported as exc:
            record["skipped"] = str(exc)
    for repeat in range(plan.repeats):
        for number, (record, transport) in enumerate(pending, 1):
            if record["error"]:
                continue
            try:
                line = _measure_once(plan, record, transport)
            except Unsupported as exc:
                record["skipped"] = str(exc)
                line = f"skipped: {exc}"
            except Exception as exc:  # noqa: BLE001 -- one broken case must not end the suite
                record["error"], record["ok"] = str(exc), False
                line = f"ERROR: {exc}"
            log(f"[{repeat + 1}/{plan.repeats} {number}/{len(pending)}] {describe(record)}: {line}")
    return {"meta": _meta(plan), "results": records}


def _meta(plan: Plan) -> dict[str, Any]:
    from ringshm._version import __version__
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo
                        if line.startswith("model name")), platform.processor())
    except OSError:
        cpu = platform.processor()
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "ringshm": __version__, "python": sys.version.split()[0],
            "platform": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(),
            "load_average": os.getloadavg(), "plan": dataclasses.asdict(plan),
            "capacity_64B": capacity_for(64), "capacity_1MiB": capacity_for(1 << 20)}
