"""`ringshm stress`: a 20-second run with a SIGKILL every half second must
account for every message; the accounting itself must catch a ring that
loses or duplicates messages; Ctrl-C must leave nothing behind.

Each run is a subprocess (the stress supervisor forks its workers; forking
the test runner would copy it), so the leak guard of conftest.py also sees
a segment a run failed to remove."""

import os
import re
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import default_sigint

import ringshm

pytestmark = [pytest.mark.fault, pytest.mark.multiprocess, pytest.mark.slow]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(ringshm.__file__)))
ENV = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
# Only to turn a hang into a failure: a run takes its --seconds plus a drain.
HANG = 120


def run_stress(*args, prelude=""):
    """Run the stress command (after `prelude`, code that may patch ringshm
    to simulate a broken ring); returns (exit status, stdout, the table)."""
    code = textwrap.dedent(prelude) + "\nimport sys, ringshm.stress\n" \
        "sys.exit(ringshm.stress.main(sys.argv[1:]))\n"
    result = subprocess.run([sys.executable, "-c", code, "--quiet", *args],
                            check=False, capture_output=True, text=True, env=ENV,
                            timeout=HANG)
    table = {}
    for line in result.stdout.splitlines():
        match = re.match(r"^  (\S.*?)\s{2,}(\S+(?: s)?)(?:\s+\((.*)\))?$", line)
        if match:
            table[match.group(1)] = match.group(2)
    return result.returncode, result.stdout + result.stderr, table


def test_twenty_seconds_with_kills():
    status, output, table = run_stress(
        "--producers", "2", "--consumers", "2", "--seconds", "20",
        "--kill-every", "500", "--sizes", "1:512")
    print("\n" + output)
    assert status == 0, output
    assert table["lost"] == "0", output
    assert table["order violations"] == "0", output
    assert table["corrupt or phantom"] == "0", output
    assert table["result"] == "PASS", output
    assert int(table["kills"]) >= 30, output        # the kills did happen
    assert int(table["messages put (committed)"]) > 0, output
    # Not asserted: "lock recoveries" > 0.  Since waits hold no lock (0.2) a
    # worker holds one only for a copy, so whether any of ~40 random kills
    # lands inside one is chance; test_faults.py kills holders on purpose.


LOSSY_GET = """
    from ringshm.ring import Ring
    real_get = Ring.get
    calls = [0]
    def get(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] % 1000 == 0:
            real_get(self, *args, **kwargs)   # this message vanishes
        return real_get(self, *args, **kwargs)
    Ring.get = get
"""

REPEATING_GET = """
    from ringshm import Full
    from ringshm.ring import Ring
    real_get = Ring.get
    calls = [0]
    def get(self, *args, **kwargs):
        calls[0] += 1
        message = real_get(self, *args, **kwargs)
        if calls[0] % 1000 == 0:
            try:
                self.put_nowait(message)   # delivered again, later
            except Full:
                calls[0] -= 1
        return message
    Ring.get = get
"""


@pytest.mark.parametrize("prelude, broken", [
    (LOSSY_GET, "lost"), (REPEATING_GET, "duplicated")])
def test_the_accounting_catches_a_broken_ring(prelude, broken):
    """Without kills, a ring whose get() drops (or repeats) one message in a
    thousand must fail the run: the table's figures are not vacuous."""
    status, output, table = run_stress(
        "--seconds", "3", "--kill-every", "0", "--consume", "get", prelude=prelude)
    assert status == 1, output
    assert table.get("result") == "FAIL", output
    assert int(table[broken]) > 0, output
    if broken == "duplicated":
        assert int(table["order violations"]) > 0, output


def test_ctrl_c_cleans_up():
    """SIGINT to the whole process group (what a terminal's Ctrl-C does):
    status 130, the ring removed, no worker left."""
    child = subprocess.Popen(
        [sys.executable, "-m", "ringshm.stress", "--seconds", "60", "--kill-every", "200"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
        start_new_session=True, preexec_fn=default_sigint)
    try:
        ready, _, _ = select.select([child.stderr], [], [], 30)
        assert ready, "no output from the stress command"
        first = child.stderr.readline()
        name = re.match(r"ring (\S+),", first).group(1)
        assert os.path.exists(f"/dev/shm/ringshm.{name}")
        time.sleep(2)                      # workers running, kills happening
        os.killpg(child.pid, signal.SIGINT)
        assert child.wait(timeout=30) == 130
        assert not os.path.exists(f"/dev/shm/ringshm.{name}")
        time.sleep(0.5)
        with pytest.raises(ProcessLookupError):
            os.killpg(child.pid, 0)        # no process of the group is left
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        child.stdout.close()
        child.stderr.close()
