"""The ringshm benchmark suite: ``ringshm bench`` (see bench/README.md)."""

from __future__ import annotations

from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmarks; returns the exit status (see ``ringshm bench --help``)."""
    from .cli import main as run
    return run(argv)
