"""The ``ringshm`` command, run as a user would: ``python -m ringshm ...`` in a
subprocess. Exit status 0 / 1 (ring or OS error, one line on stderr) / 2 (bad
usage), never a traceback; shell pipelines with backpressure.
"""

import json
import os
import shlex
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest
from conftest import remove_segment, shm_path, unique_ring_name

from ringshm import Ring, cli
from ringshm.census import escape_name, human_size

PYTHON = shlex.quote(sys.executable)
RUN_TIMEOUT = 120   # seconds any one command may take before the test fails
LINES = 100_000


def ringshm(*args, stdin=None, timeout=RUN_TIMEOUT):
    """Run ``python -m ringshm ARGS``; return the CompletedProcess (bytes)."""
    return subprocess.run([sys.executable, "-m", "ringshm", *map(str, args)], input=stdin,
                          capture_output=True, timeout=timeout)


def assert_error(result, status, *words):
    """Exit ``status`` with one line on stderr, no traceback, mentioning ``words``."""
    stderr = result.stderr.decode()
    assert result.returncode == status, (result.returncode, stderr)
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1 or status == 2, stderr
    for word in words:
        assert word in stderr, stderr


@pytest.fixture
def name():
    """A unique ring name whose segment is removed after the test, whatever it did."""
    ring_name = unique_ring_name()
    yield ring_name
    remove_segment(ring_name)


@pytest.fixture
def ring4k(name):
    """A persistent 4 KiB ring made by ``ringshm create``."""
    result = ringshm("create", name, "--capacity", "4K")
    assert result.returncode == 0, result.stderr
    return name


def start_receiver(name):
    """``ringshm recv NAME`` in the background, its output in pipes."""
    return subprocess.Popen([sys.executable, "-m", "ringshm", "recv", name],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def stop(process):
    """Make sure a child process is gone, and reaped."""
    if process.poll() is None:
        process.kill()
    process.wait(RUN_TIMEOUT)


# -- usage -------------------------------------------------------------------------

def test_help_lists_every_command():
    result = ringshm("--help")
    assert result.returncode == 0
    for command in ("create", "ls", "info", "rm", "send", "recv", "demo", "bench", "stress"):
        assert command in result.stdout.decode()


@pytest.mark.parametrize("args", [
    [],
    ["frobnicate"],
    ["create"],
    ["create", "x", "--capacity", "12Q"],
    ["create", "x", "--capacity", "-4K"],
    ["create", "x", "--mode", "999"],
    ["recv", "x", "--count", "0"],
    ["recv", "x", "--timeout", "soon"],
    ["create", "a/b"],            # the core rejects the name: still bad usage
])
def test_bad_usage_exits_2(args):
    assert_error(ringshm(*args), 2)


@pytest.mark.parametrize("text, size", [
    ("4096", 4096), ("4K", 4096), ("64M", 64 << 20), ("1G", 1 << 30), ("1.5k", 1536),
    ("2MB", 2 << 20), ("2MiB", 2 << 20),
])
def test_sizes_accept_suffixes(text, size):
    assert cli.parse_size(text) == size


# -- create, info, ls, rm ------------------------------------------------------------

def test_create_info_ls_rm(name):
    result = ringshm("create", name, "--capacity", "64K", "--mode", "640")
    assert result.returncode == 0, result.stderr
    assert os.stat(shm_path(name)).st_mode & 0o777 == 0o640

    assert_error(ringshm("create", name), 1, "exists")

    result = ringshm("info", name, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["name"] == name
    assert info["capacity"] == 64 << 10
    assert info["messages"] == 0
    assert info["creator_alive"] is False       # `ringshm create` has exited

    text = ringshm("info", name).stdout.decode()
    assert "capacity" in text and "messages_put" in text

    listing = ringshm("ls").stdout.decode().splitlines()
    assert listing[0].split()[:6] == ["NAME", "CAPACITY", "USED", "MESSAGES", "CREATOR", "ALIVE"]
    row = next(line.split() for line in listing if line.split()[0] == name)
    assert row[1:4] == ["64K", "0", "0"]
    assert row[5] == "no"

    assert ringshm("rm", name).returncode == 0
    assert not os.path.exists(shm_path(name))
    assert_error(ringshm("info", name), 1, name)
    assert_error(ringshm("rm", name), 1, name)


def test_ls_shows_use_and_a_live_creator(make_ring):
    ring = make_ring(capacity=8192)
    ring.put_many([b"a" * 10, b"b" * 10, b"c"])
    result = ringshm("ls", "--json")
    assert result.returncode == 0
    row = next(r for r in json.loads(result.stdout) if r["name"] == ring.name)
    assert row["messages"] == 3
    assert row["used_bytes"] > 0
    assert row["creator_alive"] is True
    assert row["creator_pid"] == os.getpid()


def test_ls_lists_a_corrupt_segment_and_rm_removes_it(name):
    with open(shm_path(name), "wb") as f:
        f.write(b"not a ring at all" * 1000)
    result = ringshm("ls")
    assert result.returncode == 0, result.stderr
    row = next(line.split() for line in result.stdout.decode().splitlines()
               if line.split()[0] == name)
    assert row[-1] == "corrupt"
    assert_error(ringshm("info", name), 1)
    assert ringshm("rm", name).returncode == 0
    assert not os.path.exists(shm_path(name))


def test_ls_names_a_ring_of_another_layout_version_and_rm_removes_it(name):
    # A 0.1 ring (layout 1): the magic, then version 1, then 0.1's header.
    Ring.create(name, capacity=4096, persist=True).close()
    with open(shm_path(name), "r+b") as f:
        f.seek(8)
        f.write(struct.pack("<I", 1))
    result = ringshm("ls", "--json")
    assert result.returncode == 0, result.stderr
    (row,) = [r for r in json.loads(result.stdout) if r["name"] == name]
    assert row["state"] == "layout 1"
    assert "version 1" in row["error"]
    assert_error(ringshm("info", name), 1)
    # (Not `gc` here: in the real /dev/shm it would remove idle rings that
    # are not this test's; test_gc runs it in a private one.)
    assert ringshm("rm", name).returncode == 0
    assert not os.path.exists(shm_path(name))


def test_rm_several_and_a_missing_one(name):
    other = unique_ring_name()
    try:
        assert ringshm("create", name, "--capacity", "4K").returncode == 0
        assert ringshm("create", other, "--capacity", "4K").returncode == 0
        missing = unique_ring_name()
        result = ringshm("rm", name, missing, other)
        assert_error(result, 1, missing)
        assert not os.path.exists(shm_path(name))
        assert not os.path.exists(shm_path(other))
    finally:
        remove_segment(other)


# -- send and recv -------------------------------------------------------------------

def test_send_then_recv_lines(ring4k):
    assert ringshm("send", ring4k, stdin=b"one\n\nthree\nno newline at the end").returncode == 0
    result = ringshm("recv", ring4k, "--timeout", "0")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"one\n\nthree\nno newline at the end\n"


def test_send_null_and_files(ring4k, tmp_path):
    assert ringshm("send", ring4k, "--null", stdin=b"a\nb\0c\0").returncode == 0
    first, second = tmp_path / "first", tmp_path / "second"
    first.write_bytes(b"line 1\nline 2\n")
    second.write_bytes(b"")
    assert ringshm("send", ring4k, "--file", first, second).returncode == 0
    with Ring.open(ring4k) as ring:
        assert ring.get_many(10, block=False) == [b"a\nb", b"c", b"line 1\nline 2\n", b""]


def test_recv_count_and_timeout(ring4k):
    assert ringshm("send", ring4k, stdin=b"1\n2\n3\n").returncode == 0
    result = ringshm("recv", ring4k, "--count", "2")
    assert (result.returncode, result.stdout) == (0, b"1\n2\n")
    start = time.monotonic()
    result = ringshm("recv", ring4k, "--count", "2", "--timeout", "0.3")
    assert result.stdout == b"3\n"
    assert_error(result, 1, "1 of 2")
    assert time.monotonic() - start >= 0.3
    result = ringshm("recv", ring4k, "--timeout", "0.3", "--null")
    assert (result.returncode, result.stdout) == (0, b"")


def test_recv_ends_at_shutdown(ring4k):
    receiver = start_receiver(ring4k)
    try:
        assert ringshm("send", ring4k, "--shutdown", stdin=b"last words\n").returncode == 0
        out, err = receiver.communicate(timeout=RUN_TIMEOUT)
        assert (receiver.returncode, out, err) == (0, b"last words\n", b"")
        assert_error(ringshm("send", ring4k, stdin=b"too late\n"), 1, "shut")
    finally:
        stop(receiver)


def test_shutdown_command_ends_a_waiting_recv(ring4k):
    receiver = start_receiver(ring4k)
    try:
        assert ringshm("shutdown", ring4k).returncode == 0
        assert receiver.wait(RUN_TIMEOUT) == 0
    finally:
        stop(receiver)


def test_ctrl_c_exits_130_without_traceback(ring4k):
    receiver = start_receiver(ring4k)
    try:
        with Ring.open(ring4k) as ring:     # wait until recv is attached and waiting
            deadline = time.monotonic() + RUN_TIMEOUT
            while ring.stats()["get_waits"] == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
        receiver.send_signal(signal.SIGINT)
        out, err = receiver.communicate(timeout=RUN_TIMEOUT)
        assert receiver.returncode == 130
        assert b"Traceback" not in err
    finally:
        stop(receiver)


def test_a_line_too_large_for_the_ring_is_an_error(ring4k):
    assert_error(ringshm("send", ring4k, stdin=b"x" * 5000 + b"\n"), 1)
    assert_error(ringshm("send", ring4k, stdin=b"y" * 100_000), 1)


def test_send_and_recv_of_a_missing_ring(name):
    assert_error(ringshm("send", name, stdin=b"x\n"), 1, name)
    assert_error(ringshm("recv", name, "--timeout", "0"), 1, name)


# -- the shell pipeline, with backpressure -------------------------------------------

def start_sender(name):
    """``seq LINES | ringshm send NAME --shutdown`` in a shell."""
    return subprocess.Popen(f"seq {LINES} | {PYTHON} -m ringshm send {name} --shutdown",
                            shell=True, stderr=subprocess.PIPE)


def wait_until_full(name, sender):
    """Wait until the ring is full and the sender is stuck in put; return its stats."""
    with Ring.open(name) as ring:
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline:
            stats = ring.stats()
            if stats["put_waits"] > 0 and stats["used_bytes"] > ring.capacity // 2:
                return stats
            assert sender.poll() is None, sender.stderr.read()
            time.sleep(0.02)
    pytest.fail("the sender never filled the ring")


@pytest.mark.multiprocess
def test_pipeline_backpressure_every_line_in_order(ring4k):
    sender = start_sender(ring4k)
    receiver = None
    try:
        stats = wait_until_full(ring4k, sender)
        # Nobody reads: the sender must stay blocked, with nearly all of its input unsent.
        time.sleep(0.5)
        assert sender.poll() is None
        with Ring.open(ring4k) as ring:
            assert ring.stats()["messages_put"] == stats["messages_put"] < LINES

        receiver = start_receiver(ring4k)
        out, err = receiver.communicate(timeout=RUN_TIMEOUT)
        assert receiver.returncode == 0, err
        assert sender.wait(RUN_TIMEOUT) == 0
        assert out.decode().splitlines() == [str(i) for i in range(1, LINES + 1)]
    finally:
        stop(sender)
        if receiver is not None:
            stop(receiver)


@pytest.mark.multiprocess
def test_pipeline_into_wc_with_a_slow_reader(ring4k):
    """``ringshm recv jobs | wc -l`` while ``seq | ringshm send jobs`` runs: the
    reader takes the lines in slow slices, so the sender waits again and again."""
    sender = start_sender(ring4k)
    try:
        wait_until_full(ring4k, sender)
        slices = [ringshm("recv", ring4k, "--count", 500).stdout for _ in range(3)]
        assert b"".join(slices).decode().splitlines() == [str(i) for i in range(1, 1501)]
        counted = subprocess.run(f"{PYTHON} -m ringshm recv {ring4k} | wc -l", shell=True,
                                 capture_output=True, timeout=RUN_TIMEOUT)
        assert counted.returncode == 0, counted.stderr
        assert int(counted.stdout) == LINES - 1500
        assert sender.wait(RUN_TIMEOUT) == 0
        with Ring.open(ring4k) as ring:
            stats = ring.stats()
        assert stats["messages_got"] == stats["messages_put"] == LINES
        assert stats["put_waits"] > 1
    finally:
        stop(sender)


# -- demo, bench, stress -------------------------------------------------------------

@pytest.mark.multiprocess
def test_demo_runs_and_prints_a_summary():
    result = ringshm("demo", "--messages", 20000, "--compare-messages", 2000, "--workers", 2)
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    assert "summary" in out
    assert "msg/s" in out
    assert "multiprocessing.Queue" in out
    assert "20,000" in out


def test_bench_and_stress_delegate_their_arguments(monkeypatch):
    seen = []

    class Fake:
        @staticmethod
        def main(argv):
            seen.append(argv)
            return 3

    monkeypatch.setitem(sys.modules, "ringshm.bench", Fake)
    monkeypatch.setitem(sys.modules, "ringshm.stress", Fake)
    assert cli.main(["bench", "--quick", "-x"]) == 3
    assert cli.main(["stress", "--help"]) == 3
    assert seen == [["--quick", "-x"], ["--help"]]


def test_a_missing_bench_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ringshm.stress", None)   # import fails
    assert cli.main(["stress"]) == 1
    assert "ringshm.stress" in capsys.readouterr().err


# -- odd input (issue 8, item 9) -----------------------------------------------------

def test_version():
    from ringshm import __version__
    result = ringshm("--version")
    assert result.returncode == 0
    assert result.stdout.decode().strip() == f"ringshm {__version__}"


@pytest.fixture
def planted():
    """plant(kind) -> name: a FIFO, directory, socket or symbolic link
    named like a ring in /dev/shm; removed after the test."""
    made = []

    def plant(kind):
        name = unique_ring_name()
        path = shm_path(name)
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "directory":
            os.mkdir(path)
        elif kind == "socket":
            sock = socket.socket(socket.AF_UNIX)
            sock.bind(path)
            sock.close()
        else:
            os.symlink("/etc/passwd", path)
        made.append(path)
        return name

    yield plant
    for path in made:
        if os.path.isdir(path) and not os.path.islink(path):
            os.rmdir(path)
        elif os.path.lexists(path):
            os.unlink(path)


def test_ls_never_blocks_on_entries_that_are_not_rings(planted):
    """Issue 8: each planted FIFO cost `ls` a second (ten: 10.3 s)."""
    fifos = [planted("fifo") for _ in range(10)]
    others = [planted(kind) for kind in ("directory", "socket", "symlink")]
    started = time.monotonic()
    result = ringshm("ls", "--json")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 5.0   # a bound, not a speed test: was 10.3 s
    states = {row["name"]: row["state"] for row in json.loads(result.stdout)}
    assert all(states[name] == "not a ring" for name in fifos + others)


def test_ls_escapes_control_characters_in_names(name):
    """A planted name with ESC and a newline must not forge a row."""
    evil = name + "\x1b[2J\nforged 64K 0 0 1 yes ok"
    with open(shm_path(evil), "wb") as f:
        f.write(b"x" * 100)
    try:
        result = ringshm("ls")
        assert result.returncode == 0, result.stderr
        out = result.stdout.decode()
        assert "\x1b" not in out
        assert not any(line.startswith("forged") for line in out.splitlines())
        assert name + "\\x1b[2J\\x0aforged" in out
    finally:
        os.unlink(shm_path(evil))


@pytest.mark.parametrize("tail", ["\x1b[2J\nx", "\\x41\x7f", "\udcff\udc80"],
                         ids=["escape-newline", "backslash-del", "not-utf8"])
def test_rm_escaped_removes_a_planted_name_as_ls_prints_it(name, tail):
    evil = name + tail
    with open(shm_path(evil), "wb") as f:
        f.write(b"x" * 100)
    try:
        out = ringshm("ls").stdout.decode()
        (printed,) = [line.split()[0] for line in out.splitlines() if line.startswith(name)]
        assert_error(ringshm("rm", printed), 1)      # as printed, it names nothing
        assert os.path.lexists(shm_path(evil))
        assert ringshm("rm", "--escaped", printed).returncode == 0
        assert not os.path.lexists(shm_path(evil))
    finally:
        if os.path.lexists(shm_path(evil)):
            os.unlink(shm_path(evil))


def test_rm_escaped_refuses_what_ls_never_prints_and_names_outside_dev_shm(name):
    for bad in (name + "\\", name + "\\x4", name + "\\q", "..", "a\\x2fb"):
        assert_error(ringshm("rm", "--escaped", bad), 1)


@pytest.mark.parametrize("command", ["info", "rm"])
def test_info_and_rm_of_a_planted_directory_are_clear_errors(planted, command):
    name = planted("directory")
    assert_error(ringshm(command, name), 1, "not a ring", "directory")
    assert os.path.isdir(shm_path(name))


def test_create_refuses_control_characters(name):
    for bad in (name + "\x1b[31m", name + "\nx", name + "\x7f"):
        assert_error(ringshm("create", bad), 2, "control characters")
        with pytest.raises(ValueError, match="control characters"):
            Ring.create(bad, capacity=4096)
        assert not os.path.lexists(shm_path(bad))


def test_create_says_the_capacity_it_made(name):
    result = ringshm("create", name, "--capacity", "5000")
    assert result.returncode == 0, result.stderr
    assert "capacity 8192" in result.stdout.decode()
    assert "5000" in result.stdout.decode()
    other = unique_ring_name()
    try:
        result = ringshm("create", other, "--capacity", "8K")
        assert result.returncode == 0 and result.stdout == b""
    finally:
        remove_segment(other)


def test_create_past_the_free_room_says_the_rounding_and_no_reserve_makes_it(name):
    free = os.statvfs("/dev/shm").f_bavail * os.statvfs("/dev/shm").f_frsize
    asked = (1 << free.bit_length()) + 1          # more than free, not a power of two
    made = 1 << (free.bit_length() + 1)
    result = ringshm("create", name, "--capacity", asked)
    assert_error(result, 1, "no room", name, f"rounded up to {human_size(made)}",
                 "--no-reserve")
    assert "reserve=False" not in result.stderr.decode()
    assert not os.path.exists(shm_path(name))
    result = ringshm("create", name, "--capacity", asked, "--no-reserve")
    assert result.returncode == 0, result.stderr
    assert f"capacity {made} bytes" in result.stdout.decode()
    assert os.stat(shm_path(name)).st_blocks * 512 < 1 << 20   # sparse
    with Ring.open(name) as ring:
        ring.put(b"fits")
        assert ring.get() == b"fits"


def test_missing_rings_are_one_message_for_every_command(name):
    for command in ("info", "rm", "shutdown", "send", "recv"):
        assert_error(ringshm(command, name, stdin=b""), 1, f"no such ring: '{name}'")


def test_info_of_a_file_that_is_no_ring_names_it_escaped(name):
    odd = name + "\\é"
    with open(shm_path(odd), "wb") as f:
        f.write(b"garbage")
    try:
        result = ringshm("info", odd)
        assert_error(result, 1, f"'{escape_name(odd)}': ", "truncated")
        assert escape_name(odd) != odd
    finally:
        remove_segment(odd)


def fill_with(name, count):
    with Ring.open(name) as ring:
        for i in range(count):
            ring.put(b"message %d" % i)


def test_recv_to_a_full_disk_loses_nothing(name):
    assert ringshm("create", name, "--capacity", "64K").returncode == 0
    fill_with(name, 200)
    with open("/dev/full", "wb") as full:
        result = subprocess.run([sys.executable, "-m", "ringshm", "recv", name, "--count", "200"],
                                stdout=full, stderr=subprocess.PIPE, timeout=RUN_TIMEOUT)
    assert_error(result, 1, "No space left")
    with Ring.open(name) as ring:
        assert [ring.get_nowait() for _ in range(200)] == [b"message %d" % i
                                                            for i in range(200)]


def test_recv_to_a_closed_pipe_loses_nothing(name):
    assert ringshm("create", name, "--capacity", "64K").returncode == 0
    fill_with(name, 200)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run([sys.executable, "-m", "ringshm", "recv", name],
                                stdout=write_end, stderr=subprocess.PIPE, timeout=RUN_TIMEOUT)
    finally:
        os.close(write_end)
    assert result.returncode == 128 + signal.SIGPIPE
    assert result.stderr == b""
    with Ring.open(name) as ring:
        assert len(ring) == 200
        assert ring.get_nowait() == b"message 0"

