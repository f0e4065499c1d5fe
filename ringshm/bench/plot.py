"""PNG plots of a suite's results (matplotlib is optional: without it the
plots are skipped with a note).

- throughput-PxC.png: msg/s and MB/s against message size, one line per
  transport, for P producers and C consumers;
- pingpong.png: round-trip p50 and p99 per transport.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

from .report import human_size
from .suite import TRANSPORTS

# One fixed colour per transport, the same in every figure: matplotlib's ten
# distinct colours for the Python transports, black for the C limit.
_PYTHON_ROWS = [t.key for t in TRANSPORTS if t.key != "c-ring"]
_COLOURS = {key: f"C{index % 10}" for index, key in enumerate(_PYTHON_ROWS)}
_COLOURS["c-ring"] = "black"
#: One suite record (JSON-like: see suite._record).
Record = dict[str, Any]


def _pyplot() -> ModuleType:
    import matplotlib
    matplotlib.use("Agg")  # files only; no display needed
    from matplotlib import pyplot
    module: ModuleType = pyplot   # Any where matplotlib is missing (mypy)
    return module


def _measured(results: list[Record], kind: str, field: str) -> list[Record]:
    return [r for r in results if r["kind"] == kind and field in r and not r["skipped"]]


def _throughput(pyplot: ModuleType, records: list[Record], producers: int, consumers: int,
                path: str) -> None:
    figure, (by_count, by_bytes) = pyplot.subplots(1, 2, figsize=(15, 5.5))
    lines: dict[str, list[Record]] = {}
    for record in records:
        lines.setdefault(record["label"], []).append(record)
    for label, points in lines.items():
        points.sort(key=lambda r: r["size"])
        sizes = [r["size"] for r in points]
        key = points[0]["transport"]
        # ringshm solid and thick, the C limit dotted, the peers dashed.
        style = {"linestyle": "-" if key.startswith("ringshm") else ":" if key == "c-ring"
                 else "--", "linewidth": 2.2 if key.startswith("ringshm") else 1.4,
                 "color": _COLOURS.get(key, "grey"), "marker": "o", "label": label}
        by_count.plot(sizes, [r["msgs_per_s"] for r in points], **style)
        by_bytes.plot(sizes, [r["mb_per_s"] for r in points], **style)
    ticks = sorted({r["size"] for r in records})
    for axes, unit in ((by_count, "messages/s"), (by_bytes, "MB/s (10^6 B)")):
        axes.set_xscale("log", base=2)
        axes.set_yscale("log")
        axes.set_xticks(ticks, [human_size(s) for s in ticks], rotation=45)
        axes.set_xlabel("message size")
        axes.set_ylabel(unit)
        axes.grid(True, which="both", alpha=0.3)
    by_bytes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1))
    figure.suptitle(f"throughput, {producers} producer(s) → {consumers} consumer(s), best of runs")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


def _pingpong(pyplot: ModuleType, records: list[Record], path: str) -> None:
    records = sorted(records, key=lambda r: r["p50_us"])
    labels = [r["label"] for r in records]
    positions = range(len(records))
    figure, axes = pyplot.subplots(figsize=(9, 0.5 * len(records) + 1.5))
    axes.barh([p + 0.2 for p in positions], [r["p50_us"] for r in records], 0.4, label="p50")
    axes.barh([p - 0.2 for p in positions], [r["p99_us"] for r in records], 0.4, label="p99")
    axes.set_yticks(list(positions), labels)
    axes.set_xscale("log")
    axes.set_xlabel("round trip, µs (log scale; lower is better)")
    axes.set_title("ping-pong, 64-byte message, one process each way")
    axes.legend()
    axes.grid(True, axis="x", which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


def write_plots(suite: dict[str, Any], directory: str) -> list[str]:
    """Writes the PNGs into directory; returns their paths.

    Raises:
        ImportError: matplotlib is not installed.
    """
    pyplot = _pyplot()
    os.makedirs(directory, exist_ok=True)
    results = suite["results"]
    paths = []
    throughput = _measured(results, "throughput", "msgs_per_s")
    for producers, consumers in sorted({(r["producers"], r["consumers"]) for r in throughput}):
        path = os.path.join(directory, f"throughput-{producers}x{consumers}.png")
        _throughput(pyplot, [r for r in throughput if (r["producers"], r["consumers"])
                             == (producers, consumers)], producers, consumers, path)
        paths.append(path)
    pingpong = _measured(results, "pingpong", "p50_us")
    if pingpong:
        path = os.path.join(directory, "pingpong.png")
        _pingpong(pyplot, pingpong, path)
        paths.append(path)
    measured = [r for r in suite.get("arrays", []) if r.get("repeats")]
    if measured:
        path = os.path.join(directory, "arrays.png")
        _arrays(pyplot, measured, path)
        paths.append(path)
    return paths


def _array_colour(record: Record) -> str:
    """ringshm blue, the C reference (the two copies alone) black, peers grey."""
    if record["key"].startswith("ringshm"):
        return "tab:blue"
    return "black" if record["key"] == "c-ref" else "tab:gray"


def _arrays(pyplot: ModuleType, records: list[Record], path: str) -> None:
    """Arrays/s and GB/s per peer, one pair of bar charts per array case."""
    cases = list(dict.fromkeys(r["case"] for r in records))
    figure, axes = pyplot.subplots(len(cases), 2, figsize=(12, 3.2 * len(cases)), squeeze=False)
    for row, case in zip(axes, cases):
        rows = [r for r in records if r["case"] == case]
        labels = [r["label"] for r in rows]
        for ax, field, unit in zip(row, ("arrays_per_s", "gb_per_s"), ("arrays/s", "GB/s")):
            ax.barh(labels, [r[field] for r in rows], color=[_array_colour(r) for r in rows])
            ax.set_title(f"{case}: {unit}")
            ax.invert_yaxis()
            ax.tick_params(axis="y", labelsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
