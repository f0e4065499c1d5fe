"""`ringshm stress --topic`: a bounded slice of kills (and stops) must keep
every subscriber's account; the accounting itself must catch a subscription
that drops or repeats messages.

Each run is a subprocess (the supervisor forks its workers), so the leak
guard of conftest.py also sees a segment a run failed to remove."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

import ringshm

pytestmark = [pytest.mark.fault, pytest.mark.multiprocess, pytest.mark.slow]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(ringshm.__file__)))
ENV = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
# Only to turn a hang into a failure: a run takes its --seconds plus a drain.
HANG = 120


def run_topic_stress(*args, prelude=None):
    """Run `ringshm stress --topic --json` (through the command line, or
    after `prelude`, code that patches ringshm to simulate a broken topic);
    returns (exit status, output, the JSON result)."""
    if prelude is None:
        command = [sys.executable, "-m", "ringshm", "stress", "--topic"]
    else:
        code = textwrap.dedent(prelude) + "\nimport sys, ringshm.stress_topic\n" \
            "sys.exit(ringshm.stress_topic.main(sys.argv[1:]))\n"
        command = [sys.executable, "-c", code]
    result = subprocess.run([*command, "--quiet", "--json", *args], check=False,
                            capture_output=True, text=True, env=ENV, timeout=HANG)
    output = result.stdout + result.stderr
    try:
        account = json.loads(result.stdout)
    except ValueError:
        pytest.fail(f"no JSON result:\n{output}")
    return result.returncode, output, account


def test_a_slice_of_kills_and_stops():
    """2 publishers, 3 tethered and 1 untethered subscribers, a SIGKILL
    every 100 ms for 15 s (over 100 kills) and a SIGSTOP of 300 ms every
    700 ms: nothing lost or repeated, every Lagged count accounted for, no
    publish stalled past the (generous) limit."""
    status, output, r = run_topic_stress(
        "--publishers", "2", "--tethered", "3", "--untethered", "1", "--seconds", "15",
        "--kill-every", "100", "--stop-every", "700", "--stop-for", "300",
        "--stall-timeout", "0.5")
    print("\n" + output)
    assert status == 0, output
    assert r["result"] == "PASS" and r["broken"] == [], output
    assert r["lost"] == 0 and r["duplicated"] == 0 and r["corrupt"] == 0, output
    assert r["unexplained"] == 0 and r["tethered_lagged"] == 0, output
    assert r["exact"] + r["bounded"] >= 1, output   # an untethered account was checked
    assert sum(r["kills"].values()) >= 100, output   # the kills did happen
    assert r["kills"]["publisher"] > 0 and r["kills"]["tethered"] > 0, output
    assert r["stops"] > 0, output
    assert r["published"] > 0 and r["received"] > 0, output
    assert r["survivors"] == 4 and r["not_whole"] == 0, output
    assert r["whole"] >= 1, output   # a survivor's first message was numbered, its account exact


# Every 500th get() of a tethered subscription takes one message more and
# drops it.
LOSSY_GET = """
    from ringshm.topic import Subscription
    real_get = Subscription.get
    calls = [0]
    def get(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] % 500 == 0 and self.tethered:
            real_get(self, *args, **kwargs)   # this message vanishes
        return real_get(self, *args, **kwargs)
    Subscription.get = get
"""

# Every 500th get() returns the message before again.
REPEATING_GET = """
    from ringshm.topic import Subscription
    real_get = Subscription.get
    last = [None]
    calls = [0]
    def get(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] % 500 == 0 and last[0] is not None:
            return last[0]
        last[0] = real_get(self, *args, **kwargs)
        return last[0]
    Subscription.get = get
"""


@pytest.mark.parametrize("prelude, broken", [
    (LOSSY_GET, "lost"), (REPEATING_GET, "duplicated")])
def test_the_accounting_catches_a_broken_subscription(prelude, broken):
    """Without kills, a subscription whose get() drops (or repeats) a
    message now and then must fail the run: the figures are not vacuous."""
    status, output, r = run_topic_stress("--seconds", "3", "--kill-every", "0",
                                         prelude=prelude)
    assert status == 1, output
    assert r["result"] == "FAIL", output
    assert r[broken] > 0, output


def test_an_untethered_loss_without_lagged_fails():
    """An untethered subscriber that misses messages with no Lagged to say
    so: its account does not add up."""
    prelude = LOSSY_GET.replace("and self.tethered", "and not self.tethered")
    status, output, r = run_topic_stress("--seconds", "3", "--kill-every", "0",
                                         "--tethered", "1", "--untethered", "2",
                                         prelude=prelude)
    assert status == 1, output
    assert r["unexplained"] > 0, output
