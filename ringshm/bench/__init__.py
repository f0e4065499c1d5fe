"""The ringshm benchmark suite: ``ringshm bench`` (see bench/README.md)."""


def main(argv=None):
    """Run the benchmarks; returns the exit status (see ``ringshm bench --help``)."""
    from .cli import main as run
    return run(argv)
