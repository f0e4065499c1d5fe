"""The publish/subscribe workload on its own (ringshm/bench/pubsub.py):
every case, median of 3, the table, the targets, and the results in
bench/results/pubsub.json and pubsub.txt (and pubsub.png with matplotlib).

    .venv/bin/python bench/pubsub.py [--repeats N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ringshm.bench import pubsub, report

HERE = os.path.dirname(os.path.abspath(__file__))


def plot(records: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, payload in zip(axes, ("64 B", "frame")):
        rows = [r for r in records if r.get("payload") == payload and "deliveries_per_s" in r]
        for key in dict.fromkeys(r["transport"] for r in rows):
            mine = sorted((r["subscribers"], r["deliveries_per_s"]) for r in rows
                          if r["transport"] == key)
            label = next(r["label"] for r in rows if r["transport"] == key)
            ax.plot([n for n, _ in mine], [v for _, v in mine], marker="o", label=label)
        ax.set_yscale("log")
        ax.set_xticks([1, 2, 4])
        ax.set_xlabel("subscribers")
        ax.set_ylabel("deliveries/s (summed)")
        shown = "1080p frame" if payload == "frame" else payload
        ax.set_title(f"1 publisher → N subscribers, {shown}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small counts, one repeat")
    args = parser.parse_args()
    if args.quick:
        records = pubsub.run(counts=(20_000, 20), repeats=1, log=print, pingpong=2_000)
    else:
        records = pubsub.run(repeats=args.repeats, log=print)
    text = "\n".join([pubsub.format_table(records), "",
                      *report.targets_table("Targets (publish/subscribe)",
                                            pubsub.targets(records))])
    print(text)
    out = os.path.join(HERE, "results")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "pubsub.json"), "w") as f:
        json.dump(records, f, indent=1)
    with open(os.path.join(out, "pubsub.txt"), "w") as f:
        f.write(text + "\n")
    try:
        plot(records, os.path.join(out, "pubsub.png"))
    except ImportError:
        print("no plot: matplotlib is not installed", file=sys.stderr)
    return 0 if all(r["ok"] for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
