"""POSIX semaphores against the core's futex wait queue (``--semaphore``).

The core sleeps on raw futex words, not on the process-shared ``sem_t`` the
original design asked for (docs/DESIGN.md, "Departure: raw futexes"). This
runs the three measurements behind that choice, in one run, with the C
program semaphore.c (compiled against the core's own _futex.h/_atomic.h):

(a) the sleeping ping-pong round trip (both sides always sleep);
(b) the cost of a post after a sleeper was SIGKILLed inside the wait;
(c) what waiting on a damaged semaphore / wait queue does to the process
    (each run in a child process; a signal or an abort is reported).

    python -m ringshm.bench.semaphore [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from typing import Any, Optional, Sequence

from .cref import compile_program

KINDS = ("sem", "futex")
DAMAGE_PATTERNS = ("ff", "a5", "flags")
PATTERN_LABELS = {
    "ff": "every byte 0xff",
    "a5": "every byte 0xa5",
    "flags": "count 0, garbage after it",
}


def _program() -> str:
    executable, why = compile_program("semaphore.c", include_core_headers=True)
    if executable is None:
        raise RuntimeError(why)
    return executable


def run_case(*args: object, timeout: float = 120) -> dict[str, Any]:
    """Run one case of semaphore.c; returns its JSON, or for a process that
    died, {"died": "SIGABRT", "stderr": ...}."""
    done = subprocess.run([_program(), *map(str, args)], check=False, capture_output=True,
                          text=True, timeout=timeout)
    if done.returncode < 0:
        return {"died": signal.Signals(-done.returncode).name,
                "stderr": done.stderr.strip()}
    if done.returncode != 0:
        raise RuntimeError(f"semaphore {' '.join(map(str, args))}: exit {done.returncode}: "
                           f"{done.stderr.strip()}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _median_pingpongs(round_trips: int, repeats: int) -> dict[str, dict[str, Any]]:
    """{kind: the run with the median p50 of ``repeats``}. The kinds take
    turns, so a noisy neighbour on this shared machine hits both alike."""
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    for _ in range(repeats):
        for kind in KINDS:
            runs[kind].append(run_case("pingpong", kind, round_trips))
    return {kind: sorted(found, key=lambda run: run["p50_ns"])[len(found) // 2]
            for kind, found in runs.items()}


def measure(round_trips: int = 20_000, posts: int = 1_000_000, repeats: int = 5
            ) -> dict[str, Any]:
    """All three measurements for both kinds: {"pingpong": {kind: ...},
    "killed": {kind: ...}, "damaged": {kind: {pattern: ...}}}."""
    return {
        "pingpong": _median_pingpongs(round_trips, repeats),
        "killed": {kind: run_case("killed", kind, posts) for kind in KINDS},
        "damaged": {kind: {pattern: run_case("damaged", kind, pattern)
                           for pattern in DAMAGE_PATTERNS} for kind in KINDS},
    }


def _damage_outcome(result: dict[str, Any]) -> str:
    if "died" in result:
        return f"killed by {result['died']} ({result['stderr'] or 'no message'})"
    if result["returned"] == 0:
        return "returned at once as if posted (a phantom wake-up)"
    return f"timed out after {result['ms']:.0f} ms, as asked"


def format_table(results: dict[str, Any]) -> str:
    """The table of docs/DESIGN.md, as Markdown."""
    ping, killed, damaged = results["pingpong"], results["killed"], results["damaged"]
    label = {"sem": "`sem_t` (pshared)", "futex": "futex wait queue (the core's)"}
    lines = ["| | " + " | ".join(label[k] for k in KINDS) + " |",
             "|---|" + "---|" * len(KINDS)]

    def row(name: str, cells: list[str]) -> None:
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    row("(a) sleeping ping-pong round trip, p50 / p99",
        [f"{ping[k]['p50_ns'] / 1000:.1f} / {ping[k]['p99_ns'] / 1000:.1f} µs" for k in KINDS])
    row("(b) post with no sleeper, before a sleeper was SIGKILLed in the wait",
        [f"{killed[k]['ns_per_post_before']:.0f} ns" for k in KINDS])
    row("(b) the same after the kill",
        [f"{killed[k]['ns_per_post_after']:.0f} ns" for k in KINDS])
    row("(b) sleepers still recorded after 1 M posts",
        [f"{killed[k]['sleepers_recorded_after_posts']}" for k in KINDS])
    for pattern in DAMAGE_PATTERNS:
        row(f"(c) wait on a damaged one: {PATTERN_LABELS[pattern]}",
            [_damage_outcome(damaged[k][pattern]) for k in KINDS])
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ringshm.bench.semaphore",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    try:
        results = measure()
    except RuntimeError as exc:
        print(f"semaphore benchmark: {exc}", file=sys.stderr)
        return 1
    print(format_table(results))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
