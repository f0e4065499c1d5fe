"""The C examples (examples/c/): built with their Makefile into a temporary
directory (-Wall -Wextra -Werror), then each run against its Python peer
(examples/c/peer.py), both ways, and C against C.

The receiving side checks every message against the bytes the sender must
have made (producer and index in the header, a filler whose length and
letter follow from them): a lost, duplicated, reordered or damaged message
fails it, and so does a count that differs at the end of the stream
(the producer's shutdown).  The test checks both exit codes, the count each
side reports, and that the creator removed its name, file or System V
segment.  The tests at the end show that the checking is not vacuous: a
missing message or a stranger's messages make the receiver fail.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    needs_checkout,
    remove_segment,
    remove_sysv,
    shm_path,
    sysv_companion,
    sysv_segments,
    unique_ring_name,
    unique_sysv_key,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "c"
PEER = EXAMPLES / "peer.py"
CC = os.environ.get("CC", "cc")
COUNT = 5000
WAIT = 120          # seconds: only a guard against a hang, never a measurement

pytestmark = [
    pytest.mark.skipif(shutil.which(CC) is None or shutil.which("make") is None,
                       reason=f"no C compiler ({CC}) or make to build examples/c"),
    pytest.mark.multiprocess,
    needs_checkout("examples/c", "libringshm"),
]


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    """The directory of the five built programs (and their libringshm.a)."""
    build = tmp_path_factory.mktemp("c-examples")
    done = subprocess.run(["make", "-C", str(EXAMPLES), f"BUILD={build}", f"CC={CC}"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return build


def peer(*args):
    return [sys.executable, str(PEER), *map(str, args)]


def finish(procs):
    """Wait for each process (a hang guard); kill whatever is still running
    (also when the test failed first); (returncode, stdout, stderr) of each."""
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=WAIT)
            results.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return results


def run_pair(consumer, producer):
    """Start the consumer, wait for its "ready" (the ring exists), start the
    producer; both results, the consumer's first."""
    procs = [subprocess.Popen(consumer, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)]
    try:
        first = procs[0].stdout.readline()
        if first == "ready\n":
            procs.append(subprocess.Popen(producer, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
    finally:
        results = finish(procs)
    assert first == "ready\n", f"the consumer did not start: {first!r} {results[0]}"
    return results


class Target:
    """Where a ring is found, for the C program (its argument) and for the
    peer (its option); gone() says the creator removed it; remove() cleans
    up after a failure."""

    def __init__(self, kind, tmp_path):
        self.kind = kind
        if kind == "file":
            self.program, self.value = "unrelated_file", str(tmp_path / "ring")
            self.option = "--path"
        elif kind == "name":
            self.program, self.value = "shm_open", unique_ring_name()
            self.option = "--name"
        else:
            self.program, self.value = "sysv", f"0x{unique_sysv_key():08x}"
            self.option = "--sysv-key"

    def c(self, programs, role, count):
        return [str(programs / self.program), role, self.value, str(count)]

    def py(self, role, count, *extra):
        return peer(role, self.option, self.value, "--count", count, *extra)

    def gone(self):
        if self.kind == "file":
            return not os.path.exists(self.value)
        if self.kind == "name":
            return not os.path.exists(shm_path(self.value))
        key = int(self.value, 16)
        return (all(k != key for k, _ in sysv_segments())
                and not os.path.exists(sysv_companion(key)))

    def remove(self):
        if self.kind == "name":
            remove_segment(self.value)
        elif self.kind == "sysv":
            remove_sysv(int(self.value, 16))


@pytest.fixture(params=["file", "name", "sysv"])
def target(request, tmp_path):
    where = Target(request.param, tmp_path)
    yield where
    where.remove()


@pytest.mark.parametrize("consumer,producer", [("c", "python"), ("python", "c"), ("c", "c")])
def test_unrelated_processes_exchange_every_message(programs, target, consumer, producer):
    """unrelated_file.c (a path), shm_open.c (a name), sysv.c (a key), each
    with Python on the other side, and with itself."""
    make = {"c": lambda role: target.c(programs, role, COUNT),
            "python": lambda role: target.py(role, COUNT)}
    (crc, cout, cerr), (prc, pout, perr) = run_pair(make[consumer]("consume"),
                                                    make[producer]("produce"))
    assert crc == 0 and prc == 0, (cerr, perr)
    assert f"consumed {COUNT}" in cout
    assert f"produced {COUNT}" in pout
    assert target.gone(), "the consumer created the ring and should have removed it"


def test_parent_and_forked_child_share_a_file(programs, tmp_path):
    path = tmp_path / "ring"
    [(rc, out, err)] = finish([subprocess.Popen(
        [str(programs / "parent_child_file"), str(path), str(COUNT)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)])
    assert rc == 0, err
    assert f"{COUNT} messages from the forked child, in order" in out
    assert not path.exists()


def test_parent_and_a_python_child_share_a_file(programs, tmp_path):
    """The child the C parent forks execs the Python peer, which attaches
    to the file by path and produces."""
    path = tmp_path / "ring"
    [(rc, out, err)] = finish([subprocess.Popen(
        [str(programs / "parent_child_file"), str(path), str(COUNT), "--",
         *peer("produce", "--path", path, "--count", COUNT)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)])
    assert rc == 0, err
    assert f"produced {COUNT}" in out
    assert f"{COUNT} messages from the exec'd child, in order" in out
    assert not path.exists()


def test_anonymous_ring_between_forked_children(programs):
    """No Python peer: an anonymous ring reaches only forked children, and
    a Python program is always exec'd (see anonymous.c)."""
    [(rc, out, err)] = finish([subprocess.Popen(
        [str(programs / "anonymous"), str(COUNT), "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)])
    assert rc == 0, err
    assert f"{3 * COUNT} messages from 3 forked children, each in order" in out


# The checks check: a receiver told to expect one more message than comes,
# or given messages that are not the ones it expects, fails.

def test_a_c_consumer_notices_a_missing_message(programs, tmp_path):
    where = Target("file", tmp_path)
    (crc, _, cerr), (prc, _, perr) = run_pair(where.c(programs, "consume", COUNT + 1),
                                              where.py("produce", COUNT))
    assert prc == 0, perr
    assert crc == 1 and f"received {COUNT} messages, expected {COUNT + 1}" in cerr


def test_a_python_consumer_notices_a_missing_message(programs, tmp_path):
    where = Target("file", tmp_path)
    (crc, _, cerr), (prc, _, perr) = run_pair(where.py("consume", COUNT + 1),
                                              where.c(programs, "produce", COUNT))
    assert prc == 0, perr
    assert crc == 1 and f"received {COUNT} messages, expected {COUNT + 1}" in cerr


def test_a_c_consumer_notices_messages_it_did_not_expect(programs, tmp_path):
    # 20: they fit in the ring, so the producer need not wait for a
    # consumer that stopped at the first one.
    where = Target("file", tmp_path)
    (crc, _, cerr), (prc, _, perr) = run_pair(where.c(programs, "consume", 20),
                                              where.py("produce", 20, "--producer", 1))
    assert prc == 0, perr
    assert crc == 1 and "message 0: not from producer 0 to 0: 1.0:" in cerr
