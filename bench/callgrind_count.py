"""Instructions a bench script's child run executes, counted by callgrind:
the harness that queue_instructions.py and ring_instructions.py share.

A script counts its loop by running itself as a child under
``valgrind --tool=callgrind`` (``SCRIPT --child ROW N``) twice, with N and
2N iterations; the difference divided by N is the loop's cost per
iteration, start-up and teardown cancelled out.
"""

import os
import re
import subprocess
import sys


def instructions(script: str, row: str, iterations: int, out_file: str = "/dev/null") -> int:
    """Instructions of ``script --child row iterations`` under callgrind.

    Raises:
        RuntimeError: callgrind printed no total.
        subprocess.CalledProcessError: the child failed.
    """
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}", sys.executable,
         script, "--child", row, str(iterations)],
        check=True, capture_output=True, text=True,
        # One hash seed: the dicts' layout (and their probes) the same in
        # every run.
        env={**os.environ, "PYTHONHASHSEED": "0"})
    match = re.search(r"Collected : (\d+)", done.stderr)
    if match is None:
        raise RuntimeError(f"no callgrind total in: {done.stderr[-300:]}")
    return int(match.group(1))
