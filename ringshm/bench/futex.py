"""Count the futex system calls of one 1→1 exchange (``--futex``).

The design promises that a busy ring makes no system call at all: a futex
wake happens only when the other side sleeps. This runs a fixed number of
messages through one producer and one consumer under
``strace -f -c -e trace=futex`` and reports the count, minus a baseline run
of the same program with 1,024 messages (process start-up, the barrier and
the result queue use futexes too). strace slows every system call down, so
the count is meaningful, the time is not.

    python -m ringshm.bench.futex --child KEY MESSAGES SIZE   (what strace runs)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

BASELINE_MESSAGES = 1  # the producer sends one clock-check block: 1,024 at 64 B


def _parse(summary: str) -> tuple[int, int]:
    """(calls, errors) of futex in strace -c output."""
    for line in summary.splitlines():
        fields = line.split()
        if fields and fields[-1] == "futex":
            # % time, seconds, usecs/call, calls, [errors,] syscall
            return int(fields[3]), int(fields[4]) if len(fields) == 6 else 0
    return 0, 0


def _traced(strace: str, key: str, messages: float, size: int, timeout: float
            ) -> tuple[int, int, int, int]:
    import ringshm
    root = os.path.dirname(os.path.dirname(os.path.abspath(ringshm.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [root, os.environ.get("PYTHONPATH")])))
    with tempfile.TemporaryDirectory(prefix="ringshm-bench-futex-") as directory:
        summary = os.path.join(directory, "strace.txt")
        done = subprocess.run(
            [strace, "-f", "-c", "-e", "trace=futex", "-o", summary, sys.executable,
             "-m", "ringshm.bench.futex", "--child", key, str(messages), str(size)],
            check=False, capture_output=True, text=True, timeout=timeout, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"traced run failed: {done.stderr.strip()[-300:]}")
        with open(summary) as out:
            calls, errors = _parse(out.read())
    sent, received = map(int, done.stdout.split())
    return calls, errors, sent, received


def count_futex(key: str = "ringshm", messages: int = 1_000_000, size: int = 64,
                timeout: float = 600) -> dict[str, Any]:
    """Returns {"transport", "messages", "futex_calls", "futex_errors",
    "baseline_calls", "calls_per_message", "ok"}.

    Raises:
        RuntimeError: strace is missing or the traced run failed.
    """
    strace = shutil.which("strace")
    if strace is None:
        raise RuntimeError("strace not found (apt-get install strace)")
    calls, errors, sent, received = _traced(strace, key, messages, size, timeout)
    baseline, _, _, _ = _traced(strace, key, BASELINE_MESSAGES, size, timeout)
    return {"transport": key, "size": size, "messages": sent, "futex_calls": calls,
            "futex_errors": errors, "baseline_calls": baseline,
            "calls_per_message": max(0, calls - baseline) / max(sent, 1),
            "ok": sent == received}


def format_count(count: dict[str, Any]) -> str:
    return (f"futex calls, {count['transport']}, {count['messages']:,} messages of "
            f"{count['size']} B 1→1: {count['futex_calls']:,} "
            f"({count['futex_errors']:,} errors; {count['baseline_calls']:,} in a run of "
            f"~1,024 messages), {count['calls_per_message']:.4f} per message"
            + ("" if count["ok"] else "  LOST MESSAGES"))


def _child(key: str, messages: int, size: int) -> None:
    from . import runner
    from .suite import BY_KEY
    run = runner.throughput(BY_KEY[key], size, 1, 1, seconds=3600.0, limit=messages)
    print(run["sent"], run["received"])


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        _child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit("usage: python -m ringshm.bench.futex --child KEY MESSAGES SIZE")
