"""``ringshm bench``: argument parsing and the order of work.

Exit status: 0 when every measured run delivered every message, 1 when one
lost messages or failed (a bug, never a slow result), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any, Optional, Sequence

from ringshm.cli import parse_count, parse_size

from . import arrays, futex, pubsub, report, suite, targets


def _keys(text: str) -> list[str]:
    keys = [key.strip() for key in text.split(",") if key.strip()]
    unknown = [key for key in keys if key not in suite.BY_KEY]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown transport(s) {', '.join(unknown)}; known: {', '.join(suite.BY_KEY)}")
    return keys


def _sizes(text: str) -> tuple[int, ...]:
    return tuple(parse_size(part) for part in text.split(","))


def _topologies(text: str) -> tuple[tuple[int, ...], ...]:
    try:
        pairs: tuple[tuple[int, ...], ...] = tuple(
            tuple(int(n) for n in part.lower().split("x")) for part in text.split(","))
    except ValueError:
        pairs = ()
    if not pairs or any(len(p) != 2 or min(p) < 1 for p in pairs):
        raise argparse.ArgumentTypeError(f"expected e.g. 1x1,4x1 (producers x consumers), "
                                         f"not {text!r}")
    return pairs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ringshm bench",
        description="Throughput and ping-pong latency of ringshm against multiprocessing, "
                    "faster-fifo, posix_ipc, pyzmq and a C reference ring. Without options: "
                    "a short run (64 B and 1 MiB, 1→1 and 4→1, ping-pong; under a minute).")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--full", action="store_true",
                      help="the whole matrix: 8 B..4 MiB, 1→1, 4→1, 1→4, 4→4 (~15 min)")
    mode.add_argument("--smoke", action="store_true",
                      help="every code path in seconds; the numbers mean nothing")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    parser.add_argument("--plot", metavar="DIR", help="write PNG plots (needs matplotlib)")
    parser.add_argument("--transports", type=_keys, metavar="KEY,...",
                        help=f"only these ({', '.join(suite.BY_KEY)})")
    parser.add_argument("--sizes", type=_sizes, metavar="SIZE,...", help="e.g. 64,4K,1M")
    parser.add_argument("--topologies", type=_topologies, metavar="PxC,...", help="e.g. 1x1,4x1")
    parser.add_argument("--seconds", type=float, help="time budget of one run")
    parser.add_argument("--repeats", type=parse_count, help="runs per case; the best counts")
    parser.add_argument("--no-pingpong", action="store_true", help="skip the ping-pong")
    parser.add_argument("--arrays", action="store_true",
                        help="also the arrays workload: a 1920x1080x3 uint8 frame and 64 KiB "
                             "float32 through ringshm, iceoryx2, py-sharedmemory, pyshmem, "
                             "multiprocessing.Queue and faster-fifo (always with --full/--smoke)")
    parser.add_argument("--pubsub", action="store_true",
                        help="also the publish/subscribe workload: 1 publisher → 1, 2, 4 "
                             "subscribers, 64 B and the 1080p frame, through ringshm's Topic, "
                             "N ringshm Rings, iceoryx2 and pyzmq PUB/SUB; and a ping-pong "
                             "through a topic (always with --full/--smoke)")
    parser.add_argument("--futex", nargs="?", const=1_000_000, type=parse_count,
                        metavar="MESSAGES",
                        help="also count futex calls over MESSAGES (default 1M) 64 B messages "
                             "1→1 under strace")
    parser.add_argument("--futex-transport", type=_keys, default=["ringshm"], metavar="KEY,...",
                        help="transports for --futex (default ringshm)")
    parser.add_argument("--asyncio", action="store_true",
                        help="also the asyncio table: ringshm.asyncio beside zmq.asyncio")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def _plan(args: argparse.Namespace) -> suite.Plan:
    plan = suite.FULL if args.full else suite.SMOKE if args.smoke else suite.SHORT
    changes = {"sizes": args.sizes, "topologies": args.topologies, "seconds": args.seconds,
               "repeats": args.repeats}
    plan = dataclasses.replace(plan, **{k: v for k, v in changes.items() if v is not None})
    return dataclasses.replace(plan, pingpong=plan.pingpong and not args.no_pingpong)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``ringshm bench``; returns the exit status.

    Raises:
        SystemExit: from argparse on bad usage (status 2) or --help (status 0).
    """
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.seconds is not None and not args.seconds > 0:
        parser.error(f"--seconds must be positive, not {args.seconds}")
    transports = tuple(suite.BY_KEY[k] for k in args.transports) if args.transports \
        else suite.TRANSPORTS

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    plan = _plan(args)
    results: dict[str, Any] = suite.run(plan, transports, log)
    if args.arrays or args.full or args.smoke:
        results["arrays"] = arrays.run(plan.seconds * 2, plan.repeats, log=log)
    if args.pubsub or args.full or args.smoke:
        if args.smoke:
            results["pubsub"] = pubsub.run(counts=(2_000, 4), subscribers=(1, 2), repeats=1,
                                           log=log, pingpong=200)
        else:
            results["pubsub"] = pubsub.run(repeats=plan.repeats, log=log)
    if args.futex:
        results["futex"] = []
        for key in args.futex_transport:
            try:
                count = futex.count_futex(key, args.futex)
            except (RuntimeError, OSError) as exc:
                log(f"futex count for {key} skipped: {exc}")
                continue
            results["futex"].append(count)
    if args.asyncio:
        from . import asyncio_bench
        results["asyncio"] = asyncio_bench.run(log=log)
    print(report.format_report(results))
    if "arrays" in results:
        print()
        print(arrays.format_table(results["arrays"]))
        print()
        print("\n".join(report.targets_table(
            "Targets (arrays)", targets.evaluate_arrays(results["arrays"], results["results"]),
            judged=not args.smoke)))
    if "pubsub" in results:
        print()
        print(pubsub.format_table(results["pubsub"]))
        print()
        print("\n".join(report.targets_table("Targets (publish/subscribe)",
                                              pubsub.targets(results["pubsub"]),
                                              judged=not args.smoke)))
    if args.asyncio:
        print(asyncio_bench.format_table(results["asyncio"]))
    for count in results.get("futex", []):
        print(futex.format_count(count))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=1)
        log(f"wrote {args.json}")
    if args.plot:
        try:
            from .plot import write_plots
            for path in write_plots(results, args.plot):
                log(f"wrote {path}")
        except ImportError:
            log("plots skipped: matplotlib is not installed (pip install matplotlib)")
    bad = report.failures(results)
    bad += [r for r in results.get("arrays", []) if not r["skipped"] and not r["ok"]]
    bad += [r for r in results.get("pubsub", []) if not r["ok"]]
    bad += [c for c in results.get("futex", []) if not c["ok"]]
    return 1 if bad else 0
