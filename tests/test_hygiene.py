"""Resource hygiene (issue #3, part B): rings made and dropped by the
thousand leave no file descriptor, mapping or segment behind; a mapping
lives as long as a view of it; the creating object unlinks its name when it
is closed or collected, unless persist=True, and never from a forked child.
"""

import gc
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import warnings

import pytest
from conftest import (
    SHM_DIR,
    SHM_PREFIX,
    child_env,
    remove_segment,
    ringshm_home,
    shm_path,
    sysv_companion,
    sysv_segments,
    unique_ring_name,
)

import ringshm
from ringshm import Ring

CYCLES = 10_000
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fd_count():
    return len(os.listdir("/proc/self/fd"))


def ring_mappings(marker=SHM_PREFIX):
    """Lines of /proc/self/maps that map a ring segment (or, with
    `marker`, that mention it: a ring file's path)."""
    with open("/proc/self/maps") as maps:
        return [line for line in maps if marker in line or SHM_DIR + "/" in line]


def shm_entries():
    return sorted(e for e in os.listdir(SHM_DIR) if e.startswith(SHM_PREFIX))


class Snapshot:
    """Descriptors, ring mappings and /dev/shm entries of this process now;
    assert_same() compares with a later look."""

    def __init__(self, marker=SHM_PREFIX):
        # The watcher's pipe is one descriptor per process, opened at the
        # first persist=False create and kept: open it before counting.
        Ring.create(capacity=4096).close()
        gc.collect()
        self.marker = marker
        self.fds = fd_count()
        self.maps = ring_mappings(marker)
        self.entries = shm_entries()

    def assert_same(self, mine):
        """`mine`: the /dev/shm entries that may be ours (others' test runs
        come and go in /dev/shm meanwhile)."""
        later = Snapshot(self.marker)
        assert later.fds == self.fds, (self.fds, later.fds)
        assert later.maps == self.maps, later.maps
        assert [e for e in later.entries if mine(e)] == [e for e in self.entries if mine(e)]


def test_create_close_cycles_leave_nothing():
    name = unique_ring_name()
    before = Snapshot()
    try:
        with Ring.create(name, capacity=4096):
            # What the counts look for is there while a ring is open: its
            # mapping, and one descriptor (whose OFD lock says we live).
            assert fd_count() == before.fds + 1
            assert len(ring_mappings()) == len(before.maps) + 1
            assert SHM_PREFIX + name in shm_entries()
        for _ in range(CYCLES):
            Ring.create(name, capacity=4096).close()
    finally:
        remove_segment(name)
    before.assert_same(lambda e: e == SHM_PREFIX + name)


def test_open_close_cycles_leave_nothing(make_ring):
    ring = make_ring()
    ring.put(b"kept")
    before = Snapshot()
    for _ in range(CYCLES):
        Ring.open(ring.name).close()
    before.assert_same(lambda e: e == SHM_PREFIX + ring.name)
    assert len(ring) == 1 and ring.get_nowait() == b"kept"


def test_dropping_opened_rings_leaves_nothing(make_ring):
    """Opened rings dropped without close(): the mapping goes with the
    object (and a ResourceWarning says so)."""
    ring = make_ring()
    before = Snapshot()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        for _ in range(CYCLES // 10):
            Ring.open(ring.name)
    before.assert_same(lambda e: e == SHM_PREFIX + ring.name)


def test_file_create_open_close_cycles_leave_nothing(tmp_path):
    path = str(tmp_path / "cycled.ring")
    before = Snapshot(marker=path)
    with Ring.create(path=path, capacity=4096):
        assert len(ring_mappings(path)) == len(before.maps) + 1
    for _ in range(CYCLES // 5):
        Ring.create(path=path, capacity=4096).close()
    ring = Ring.create(path=path, capacity=4096)
    try:
        for _ in range(CYCLES // 5):
            Ring.open(path=path).close()
    finally:
        ring.close()
    assert not os.path.exists(path)
    before.assert_same(lambda e: False)


def test_anonymous_cycles_leave_nothing():
    def anonymous_maps():
        # An anonymous ring is a shared mapping of a memfd, which has no name.
        with open("/proc/self/maps") as maps:
            return sum(" rw-s " in line and "/memfd:ringshm-anonymous" in line for line in maps)

    before, fds = anonymous_maps(), fd_count()
    with Ring.anonymous(capacity=4096):
        assert (anonymous_maps(), fd_count()) == (before + 1, fds + 1)
    for _ in range(CYCLES // 5):
        Ring.anonymous(capacity=4096).close()
    assert (anonymous_maps(), fd_count()) == (before, fds)


# ---------------------------------------------------------------- views


def test_a_view_that_outlives_its_block_keeps_the_mapping(make_ring):
    """A slice of view()'s memoryview kept past the block (and past
    close()) still reads the message: the mapping stays until the slice is
    gone, then goes."""
    ring = make_ring()
    name = ring.name
    ring.put(b"hello, mapping")
    with pytest.raises(BufferError), ring.view() as mv:
        kept = mv[7:]
    ring.close()
    assert not os.path.exists(shm_path(name))     # the creator unlinked it
    assert any(name in line for line in ring_mappings())
    assert bytes(kept) == b"mapping"
    del kept, mv
    gc.collect()
    assert not any(name in line for line in ring_mappings())


def test_a_reservation_that_outlives_its_block_keeps_the_mapping(make_ring):
    ring = make_ring()
    name = ring.name
    with pytest.raises(BufferError), ring.reserve(8) as mv:
        kept = mv[:]
    assert len(ring) == 0                          # discarded, not published
    ring.close()
    assert any(name in line for line in ring_mappings())
    kept[:] = b"harmless"                          # still mapped: no fault
    del kept, mv
    gc.collect()
    assert not any(name in line for line in ring_mappings())


def run_script(script, name, timeout=30):
    """Run `script` (with NAME set) in a fresh interpreter; the segment
    NAME is removed afterwards whatever happened."""
    env = child_env()
    code = f"NAME = {name!r}\n" + textwrap.dedent(script)
    try:
        return subprocess.run([sys.executable, "-c", code], cwd=ringshm_home(), env=env,
                              check=False,
                              capture_output=True, text=True, timeout=timeout)
    finally:
        remove_segment(name)


# Regression: close() inside a view()/reserve() block once detached while the
# block held the lock, and leaving the block dereferenced NULL (SIGSEGV).
@pytest.mark.parametrize("block", ["view", "reserve"])
def test_close_inside_a_zero_copy_block(block):
    """close() inside the block must not crash the process (an exception
    is fine), and must not leave the ring locked for everybody else."""
    script = """
        import subprocess, sys
        from ringshm import Ring
        ring = Ring.create(NAME, capacity=4096, persist=True)
        ring.put(b"one")
        try:
            with getattr(ring, BLOCK)(*ARGS) as mv:
                ring.close()
                bytes(mv)
        except Exception as e:
            print("block raised", type(e).__name__)
        # Another process must find the lock free.
        other = "from ringshm import Ring; r = Ring.open(%r); "
        other += "r.get(timeout=2) if %r == 'view' else r.put(b'two', timeout=2); print('ok')"
        out = subprocess.run([sys.executable, "-c", other % (NAME, BLOCK)],
                             capture_output=True, text=True)
        print("other:", out.stdout.strip(), out.stderr.strip()[-300:])
    """
    script = f"BLOCK = {block!r}\nARGS = {(() if block == 'view' else (3,))!r}\n" + \
        textwrap.dedent(script)
    result = run_script(script, unique_ring_name())
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert "other: ok" in result.stdout, result.stdout


# Regression: close() from one thread while another waited in get()/put()
# once unmapped the segment under the waiter (SIGSEGV).
@pytest.mark.parametrize("call", ["get", "put"])
def test_close_while_another_thread_waits(call):
    """The waiting call must end (an exception is fine) by its timeout."""
    script = """
        import threading, time
        from ringshm import Ring, Full
        ring = Ring.create(NAME, capacity=4096)
        if CALL == "put":
            while True:
                try:
                    ring.put_nowait(b"x")
                except Full:
                    break
        def wait():
            started = time.monotonic()
            try:
                ring.get(timeout=3) if CALL == "get" else ring.put(b"y", timeout=3)
                print("waiter returned")
            except Exception as e:
                print("waiter raised", type(e).__name__)
            print("waited %.1f" % (time.monotonic() - started))
        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.3)
        ring.close()
        waiter.join(10)
        print("joined", not waiter.is_alive())
    """
    result = run_script(f"CALL = {call!r}\n" + textwrap.dedent(script), unique_ring_name())
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert "joined True" in result.stdout, result.stdout
    # The waiter is told at once that its ring was closed, not at its timeout.
    assert "waiter raised ValueError" in result.stdout, result.stdout
    waited = float(re.search(r"waited ([0-9.]+)", result.stdout).group(1))
    assert waited < 2.5, result.stdout


# ---------------------------------------------------------------- unlinking


def test_creator_dropped_without_close_unlinks_when_collected():
    name = unique_ring_name()
    try:
        ring = Ring.create(name, capacity=4096)
        ring.cycle = ring        # only the cycle collector can free it
        del ring
        assert os.path.exists(shm_path(name))
        gc.collect()
        assert not os.path.exists(shm_path(name))
    finally:
        remove_segment(name)


def test_file_creator_dropped_without_close_unlinks_when_collected(tmp_path):
    path = str(tmp_path / "dropped.ring")
    ring = Ring.create(path=path, capacity=4096)
    del ring
    gc.collect()
    assert not os.path.exists(path)


def test_opened_ring_dropped_never_unlinks(make_ring):
    ring = make_ring()
    opened = [Ring.open(ring.name)]
    with pytest.warns(ResourceWarning):
        opened.clear()                             # the only reference
    assert os.path.exists(shm_path(ring.name))


@pytest.mark.parametrize("how", ["close", "collect"])
def test_persist_survives(how):
    name = unique_ring_name()
    try:
        ring = Ring.create(name, capacity=4096, persist=True)
        ring.put(b"left for later")
        if how == "close":
            ring.close()
        del ring
        gc.collect()
        assert os.path.exists(shm_path(name))
        with Ring.open(name) as again:
            assert again.get_nowait() == b"left for later"
        assert os.path.exists(shm_path(name))
    finally:
        assert remove_segment(name)


@pytest.mark.parametrize("how", ["close", "collect", "with"])
def test_forked_child_never_unlinks(how):
    """A forked child's copy of the creating ring detaches, never unlinks:
    the parent's ring keeps its name and keeps working."""
    name = unique_ring_name()
    ring = Ring.create(name, capacity=4096)
    try:
        ring.put(b"before the fork")
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                if how == "close":
                    ring.close()
                elif how == "with":
                    with ring:
                        pass
                else:
                    del ring             # the child's only reference
                    gc.collect()
                code = 0
            finally:
                os._exit(code)
        assert wait_for(pid) == 0
        assert os.path.exists(shm_path(name))
        with Ring.open(name) as other:
            assert other.get_nowait() == b"before the fork"
        ring.put(b"after")
        assert ring.get_nowait() == b"after"
    finally:
        ring.close()
        assert not remove_segment(name), "the creator did not unlink on close()"


def wait_for(pid, timeout=20.0):
    """Reap child `pid` (killed if it takes longer than `timeout`); its exit code."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail(f"child {pid} did not exit in {timeout} s")
        time.sleep(0.01)


# ---------------------------------------------------------------- the test run itself

INNER_TESTS = '''
import os, subprocess, sys, uuid
from conftest import unique_ring_name, unique_sysv_key
from ringshm import Ring

def test_a_user_makes_a_ring_meanwhile():
    name = os.environ["FOREIGN_RING"]
    subprocess.run([sys.executable, "-m", "ringshm", "create", name, "--capacity", "4K"],
                   check=True)

def test_that_leaks():
    if os.environ.get("LEAK"):
        Ring.create(unique_ring_name(), capacity=4096, persist=True).close()

def test_that_leaks_a_sysv_ring():
    if os.environ.get("LEAK_SYSV"):
        key = unique_sysv_key()
        Ring.create(sysv_key=key, capacity=4096, persist=True).close()
        print(f"LEAKED 0x{key:08x}")
'''


def run_inner_session(tmp_path, **env):
    """pytest on INNER_TESTS with a copy of our conftest, in a process of
    its own (a session of its own, so the leak guard runs as in a real run)."""
    shutil.copy(os.path.join(ROOT, "tests", "conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_inner.py").write_text(INNER_TESTS)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env=child_env(**env))


def test_the_leak_guard_leaves_a_users_ring_alone(tmp_path):
    """Issue 8: a ring that the user's application creates while the tests
    run (`ringshm create myapp-jobs`) was unlinked by the guard, and the run
    failed.  It is not the run's: it survives and the run passes."""
    foreign = f"myapp-jobs-{os.getpid()}-{time.monotonic_ns()}"
    try:
        result = run_inner_session(tmp_path, FOREIGN_RING=foreign)
        assert result.returncode == 0, result.stdout + result.stderr
        assert os.path.exists(shm_path(foreign))
    finally:
        remove_segment(foreign)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="python -P (no working directory "
                    "on sys.path) is new in 3.11")
def test_a_run_from_a_folder_with_another_ringshm_stops_with_the_reason(tmp_path):
    # pytest run from a checkout's root while the tests import another
    # ringshm (an installed one): child processes that inherit the working
    # directory would import the checkout's.  (-P: pytest itself does not
    # import from the working directory, as with the `pytest` script.)
    (tmp_path / "ringshm").mkdir()
    (tmp_path / "ringshm" / "__init__.py").write_text("")
    (tmp_path / "tests").mkdir()
    shutil.copy(os.path.join(os.path.dirname(os.path.abspath(__file__)), "conftest.py"),
                tmp_path / "tests" / "conftest.py")
    (tmp_path / "tests" / "test_inner.py").write_text("def test_nothing():\n    pass\n")
    result = subprocess.run(
        [sys.executable, "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=child_env())
    assert result.returncode == 4, result.stdout + result.stderr
    assert "holds a ringshm/ that is not the ringshm under test" in result.stdout + result.stderr


def test_the_leak_guard_still_catches_a_leak_of_the_run(tmp_path):
    foreign = f"myapp-jobs-{os.getpid()}-{time.monotonic_ns()}"
    try:
        result = run_inner_session(tmp_path, FOREIGN_RING=foreign, LEAK="1")
        assert result.returncode != 0
        leaked = re.findall(r"tests left ringshm segments in /dev/shm: \[([^]]*)\]",
                            result.stdout)
        assert leaked, result.stdout
        names = [entry.strip(" '") for entry in leaked[0].split(",")]
        assert len(names) == 1 and names[0].startswith(SHM_PREFIX + "t")
        assert not os.path.exists(os.path.join(SHM_DIR, names[0]))   # removed
        assert os.path.exists(shm_path(foreign))
    finally:
        remove_segment(foreign)


def test_the_leak_guard_catches_a_sysv_segment_and_its_lock_file(tmp_path):
    result = run_inner_session(tmp_path, LEAK_SYSV="1")
    assert result.returncode != 0
    leaked = re.findall(r"tests left System V segments or their lock files: keys (0x[0-9a-f]{8})",
                        result.stdout)
    assert leaked, result.stdout
    key = int(leaked[0], 16)
    assert key >> 24 == 0x52
    assert not any(k == key for k, _ in sysv_segments())   # removed, with its lock file
    assert not os.path.exists(sysv_companion(key))


def test_a_script_run_from_an_unbuilt_checkout_says_what_to_do(tmp_path):
    """Issue 8: after a non-editable `pip install .`, a script run from the
    checkout's root imports the source folder, which has no compiled core.
    That fails with a message that says what to do.  (A copy of the
    package without its .so stands for the checkout.)"""
    shutil.copytree(os.path.dirname(os.path.abspath(ringshm.__file__)), tmp_path / "ringshm",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    # -S: no site, so no editable install's finder; the folder is found first.
    result = subprocess.run([sys.executable, "-S", "-c", "import ringshm"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60,
                            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: ringshm's compiled core (ringshm._ring) is missing")
    assert "pip install -e ." in last and "build_ext --inplace" in last
    assert "run from another directory" in last
