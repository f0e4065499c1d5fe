#!/usr/bin/env python3
"""Run the full benchmark suite and keep its results.

    .venv/bin/python bench/run.py [more ringshm-bench options]

Writes bench/results/latest.json (every figure, every repeat, the machine),
bench/results/latest.txt (the printed report) and the PNG plots into
bench/results/. The same as ``ringshm bench --full --futex`` with those
outputs; extra options are passed on (e.g. ``--transports ringshm,zmq``).
"""

import contextlib
import io
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")


def run(argv):
    # Works from a checkout with the core built in place (make build) as
    # well as against an installed ringshm.
    sys.path.insert(0, os.path.dirname(HERE))
    from ringshm.bench import main

    os.makedirs(RESULTS, exist_ok=True)
    report = io.StringIO()
    with contextlib.redirect_stdout(report):
        status = main(["--full", "--futex", "--json", os.path.join(RESULTS, "latest.json"),
                       "--plot", RESULTS, *argv])
    with open(os.path.join(RESULTS, "latest.txt"), "w") as out:
        out.write(report.getvalue())
    print(report.getvalue(), end="")
    return status


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
