"""The text report: one table per (topology, size), the ping-pong table and
the project's targets, with every peer's ratio to ringshm and to the C ring.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from . import targets
from .suite import BY_KEY

NAME_WIDTH = 32
#: One suite record (JSON-like: see suite._record).
Record = dict[str, Any]


def human_size(size: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


def _rate(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f} M"
    if value >= 1e3:
        return f"{value / 1e3:.1f} k"
    return f"{value:.0f}"


def _times(value: Optional[float]) -> str:
    return "" if value is None else f"{value:,.1f}×" if value < 100 else f"{value:,.0f}×"


def _is_reference(record: Record) -> bool:
    """ringshm's own rows and the C rings are not compared with ringshm."""
    transport: str = record["transport"]
    return transport.startswith("ringshm") or transport.startswith("c-ring")


def _status(record: Record) -> str:
    if record["error"]:
        return f"ERROR {record['error'][:60]}"
    return "" if record["ok"] else f"LOST {record['sent'] - record['received']} messages"


def _table(header: str, group: list[Record], field: str, columns: Callable[[Record], str]
           ) -> list[str]:
    """header, then one row per measured record: its label, columns(record)
    (the figures) and its status; then the skipped ones."""
    lines = [header]
    for record in group:
        if record["skipped"]:
            continue
        figures = columns(record) if field in record else ""
        lines.append(f"  {record['label']:<{NAME_WIDTH - 2}} {figures} {_status(record)}".rstrip())
    return lines + [f"  skipped {r['label']}: {r['skipped']}" for r in group if r["skipped"]]


def _throughput_table(title: str, group: list[Record]) -> list[str]:
    by_key = {r["transport"]: r for r in group if "msgs_per_s" in r}
    c_ring = by_key.get("c-ring")

    def columns(record: Record) -> str:
        rate = record["msgs_per_s"]
        of_c = f"{100 * rate / c_ring['msgs_per_s']:.0f}%" if c_ring else ""
        counterpart = by_key.get(BY_KEY[record["transport"]].counterpart)
        gain = (None if _is_reference(record) or not counterpart
                else counterpart["msgs_per_s"] / rate)
        return f"{_rate(rate):>10} {record['mb_per_s']:>10,.1f} {of_c:>7} {_times(gain):>10}"
    header = f"{title:<{NAME_WIDTH}} {'msg/s':>10} {'MB/s':>10} {'% of C':>7} {'ringshm ×':>10}"
    return _table(header, group, "msgs_per_s", columns)


def _pingpong_table(group: list[Record]) -> list[str]:
    by_key = {r["transport"]: r for r in group if "p50_us" in r}
    c_ring, ours = by_key.get("c-ring"), by_key.get("ringshm")

    def columns(record: Record) -> str:
        p50 = record["p50_us"]
        of_c = _times(p50 / c_ring["p50_us"]) if c_ring else ""
        gain = None if _is_reference(record) or not ours else p50 / ours["p50_us"]
        return f"{p50:>10.2f} {record['p99_us']:>10.2f} {of_c:>8} {_times(gain):>10}"
    header = (f"{'Ping-pong round trip, 64 B':<{NAME_WIDTH}} {'p50 µs':>10} {'p99 µs':>10} "
              f"{'× C p50':>8} {'ringshm ×':>10}")
    return _table(header, group, "p50_us", columns)


def targets_table(title: str, verdicts: list[targets.Verdict], judged: bool = True) -> list[str]:
    """Lines of a targets table: measured, goal and verdict per target.
    `judged=False` (a smoke run, whose figures mean nothing) shows the
    figures but no verdict."""
    lines = [f"{title:<40} {'measured':>10} {'goal':>10}  verdict"]
    for name, value, goal, verdict, unit in verdicts:
        shown = "—" if value is None else f"{value:,.2f}{unit}"
        word = {True: "met", False: "MISSED", None: "n/a (not measured)"}[verdict]
        if not judged and verdict is not None:
            word = "not judged (smoke)"
        if goal == "reported":
            word = "" if value is not None else word
        lines.append(f"  {name:<38} {shown:>10} {goal:>10}  {word}")
    return lines


def format_report(suite: dict[str, Any]) -> str:
    """The whole report as text."""
    results = suite["results"]
    meta = suite["meta"]
    header = (f"ringshm {meta['ringshm']} bench ({meta['plan']['name']}), "
              f"Python {meta['python']}, {meta['cpus']} CPUs ({meta['cpu']}), "
              f"load {meta['load_average'][0]:.2f}")
    method = ("Best of {repeats} runs of {seconds:g} s each, fresh processes per run; "
              "MB = 10^6 bytes. 'ringshm ×': how many times the matching ringshm row is faster."
              .format(**meta["plan"]))
    lines = [header, method, ""]
    groups: dict[tuple[int, int, int], list[Record]] = {}
    for record in results:
        if record["kind"] == "throughput":
            key = (record["producers"], record["consumers"], record["size"])
            groups.setdefault(key, []).append(record)
    for (producers, consumers, size), group in groups.items():
        lines += _throughput_table(f"{producers}→{consumers}, {human_size(size)}", group) + [""]
    pingpong = [r for r in results if r["kind"] == "pingpong"]
    if pingpong:
        lines += _pingpong_table(pingpong) + [""]
    judged = meta["plan"]["name"] != "smoke"
    lines += targets_table("Targets (messages)", targets.evaluate(results), judged)
    lines += [""] + targets_table("Targets (the C library)", targets.evaluate_clib(results),
                                  judged)
    return "\n".join(lines)


def failures(suite: dict[str, Any]) -> list[Record]:
    """Records that lost messages or failed: a bug, not a slow transport."""
    return [r for r in suite["results"] if r["error"] or not r["ok"]]
