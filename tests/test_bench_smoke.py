"""The benchmark suite runs end to end and counts right.

A smoke run (``ringshm bench --smoke``: tiny time budgets, one repeat) in a
subprocess, so its forks start from a clean interpreter. Only correctness is
checked: every measured run delivered exactly what was sent, and the report
has its tables. Timings are never asserted: they belong to bench/, not tests.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import child_env, ringshm_home

pytestmark = pytest.mark.multiprocess


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    env = child_env()
    with subprocess.Popen(
            [sys.executable, "-m", "ringshm.bench", "--smoke", "--quiet", "--json", str(out)],
            cwd=ringshm_home(), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True) as bench:
        try:
            stdout, stderr = bench.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            bench.kill()
            raise
    done = subprocess.CompletedProcess(bench.args, bench.returncode, stdout, stderr)
    done.pid = bench.pid
    return done, json.loads(out.read_text()) if out.exists() else None


def test_smoke_run_succeeds(smoke):
    done, results = smoke
    assert done.returncode == 0, done.stdout + done.stderr
    assert results is not None


def test_report_has_every_table(smoke):
    done, _ = smoke
    for heading in ("1→1, 64 B", "1→1, 1 MiB", "4→1, 64 B", "4→1, 1 MiB",
                    "Ping-pong round trip, 64 B", "Targets (messages)", "Targets (the C library)"):
        assert heading in done.stdout
    assert "ringshm put/get" in done.stdout


def test_a_smoke_run_judges_no_target(smoke):
    # Its own help says smoke figures mean nothing: no "met", no "MISSED".
    done, _ = smoke
    targets = done.stdout[done.stdout.index("Targets (messages)"):]
    assert "not judged (smoke)" in targets
    assert "MISSED" not in done.stdout
    assert " met" not in targets


def test_every_measured_run_delivered_every_message(smoke):
    _, results = smoke
    measured = [r for r in results["results"] if not r["skipped"]]
    assert measured
    for record in measured:
        assert record["error"] is None, record
        assert record["ok"], record
        if record["kind"] == "throughput":
            assert record["sent"] == record["received"] > 0, record
        else:
            assert record["received"] == record["count"] > 0, record


def test_ringshm_rows_are_measured(smoke):
    _, results = smoke
    rows = {(r["transport"], r["kind"], r["size"], r["producers"]): r
            for r in results["results"]}
    for case in (("ringshm", "throughput", 64, 1), ("ringshm", "throughput", 1 << 20, 1),
                 ("ringshm", "throughput", 64, 4), ("ringshm", "pingpong", 64, 1)):
        assert case in rows and not rows[case]["skipped"], case


def test_c_library_rows_are_measured(smoke):
    # libringshm from C (beside the C reference ring, per message and
    # batched) and C with Python both ways; skipped only without a compiler.
    _, results = smoke
    rows = {(r["transport"], r["kind"]): r for r in results["results"]
            if r["size"] == 64 and r["producers"] == 1}
    # $CC only if it runs (`make wheel-check` sets CC=false, which is not on its PATH).
    compiler = shutil.which(os.environ.get("CC") or "cc") or shutil.which("gcc")
    for key in ("c-ring-batch", "c-lib", "c-lib-batch", "c-lib-to-py", "py-to-c-lib"):
        record = rows[(key, "throughput")]
        assert bool(record["skipped"]) == (not compiler), record
    assert bool(rows[("c-lib", "pingpong")]["skipped"]) == (not compiler)


def test_skips_say_why(smoke):
    _, results = smoke
    pipe_4x1 = [r for r in results["results"]
                if r["transport"] == "mp-pipe" and r["producers"] == 4]
    assert pipe_4x1 and all(r["skipped"] for r in pipe_4x1)


def test_arrays_workload_counts_every_array(smoke):
    # Peers that are not installed are skipped with a reason, never failed.
    done, results = smoke
    assert "Arrays, 1→1" in done.stdout
    rows = results["arrays"]
    assert {r["key"] for r in rows} >= {"ringshm-queue", "ringshm-ring", "c-ref"}
    assert "Targets (arrays)" in done.stdout
    for record in rows:
        if record["skipped"]:
            assert record["skipped"].strip()
            continue
        assert record["error"] is None, record
        assert record["ok"] and record["lost"] == 0 and record["bad"] == 0, record
        assert record["received"] > 0


def test_peers_leave_nothing_behind(smoke):
    # iceoryx2 keeps a node's management segment in /dev/shm and directories
    # in /tmp after the node is gone: each channel has its own namespace,
    # named after the bench process, which it removes (bench/iox2_sandbox.py).
    done, results = smoke
    if importlib.util.find_spec("iceoryx2") is not None:
        # Installed: its rows ran, so the look below means something.
        iceoryx2_rows = [r for r in results["arrays"] if r["key"] == "iceoryx2"]
        assert iceoryx2_rows and not any(r["skipped"] for r in iceoryx2_rows)
    ours = f"ringshm-bench-{done.pid}-"
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(ours)]
    assert not [n for n in os.listdir("/tmp") if n.startswith(ours)]
