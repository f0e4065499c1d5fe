"""No name outlives its creator (issue 8, item 6): the name of a ring made
with persist=False goes within 1 s of its creator's death, however it died;
processes that have it open keep working; a name somebody else re-created
is never touched; the watcher itself may die (ringshm/watcher.py)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import (
    child_env,
    remove_segment,
    remove_sysv,
    shm_path,
    sysv_companion,
    sysv_segments,
    unique_ring_name,
    unique_sysv_key,
)
from faultkit import process_state, wait_until

from ringshm import Ring

GONE_WITHIN = 1.0      # the promise
pytestmark = [pytest.mark.fault, pytest.mark.multiprocess]


class Creator:
    """A Python script running `code` in a process of its own; in `code`,
    ``report(**facts)`` tells the test what it made, ``wait_word()`` waits
    for the test's tell(), ``sleep()`` waits to be killed.  Always reaped."""

    PRELUDE = textwrap.dedent("""
        import json, os, sys, time
        from ringshm import Ring, Queue
        def report(**facts):
            print(json.dumps(facts), flush=True)
        def wait_word():
            return sys.stdin.readline()
        def sleep():
            time.sleep(3600)
    """)

    def __init__(self, code, where):
        script = os.path.join(where, f"creator{time.monotonic_ns()}.py")
        with open(script, "w") as f:
            f.write(self.PRELUDE + textwrap.dedent(code))
        self.process = subprocess.Popen(
            [sys.executable, script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, env=child_env())
        self.pid = self.process.pid

    def facts(self):
        line = self.process.stdout.readline()
        assert line, "the creator died before it reported"
        return json.loads(line)

    def tell(self, word="go"):
        self.process.stdin.write(word + "\n")
        self.process.stdin.flush()

    def kill(self, signum=signal.SIGKILL):
        """Send `signum`, reap; returns when it died (monotonic)."""
        self.process.send_signal(signum)
        self.process.wait(timeout=30)
        return time.monotonic()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if self.process.poll() is None:
            self.kill()
        self.process.stdin.close()
        self.process.stdout.close()


def gone_after(path, since, bound=GONE_WITHIN):
    """True once `path` no longer exists, waiting until `since` + `bound`."""
    while os.path.exists(path):
        if time.monotonic() > since + bound:
            return False
        time.sleep(0.01)
    return True


def watcher_pids(creator_pid):
    """Pids of the watchers whose creator is `creator_pid` (not counting
    the creator's own short-lived child, which forks the watcher and ends)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().rstrip(b"\0").split(b"\0")
                with open(f"/proc/{entry}/stat", "rb") as f:
                    parent = int(f.read().rpartition(b")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if (len(argv) >= 2 and argv[-2].endswith(b"watcher.py")
                    and argv[-1] == str(creator_pid).encode() and parent != creator_pid):
                found.append(int(entry))
    return found


def the_watcher_of(creator_pid, timeout=10.0):
    """The one watcher of `creator_pid`, once it runs."""
    give_up = time.monotonic() + timeout
    while True:
        found = watcher_pids(creator_pid)
        if len(found) == 1 or time.monotonic() > give_up:
            assert len(found) == 1, found
            return found[0]
        time.sleep(0.01)


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGSEGV])
@pytest.mark.parametrize("kind", ["name", "sysv_key"])
def test_a_killed_creators_ring_name_goes(ring_name, signum, tmp_path, kind):
    """A name, or a System V segment (the watcher's IPC_RMID) and its lock
    file."""
    where = {kind: ring_name if kind == "name" else unique_sysv_key()}
    with Creator(f"""
        ring = Ring.create(**{where!r}, capacity=4096)
        ring.put(b"left by the creator")
        report(pid=os.getpid())
        sleep()
    """, tmp_path) as creator:
        creator.facts()
        opened = Ring.open(**where)
        try:
            died = creator.kill(signum)
            if kind == "name":
                assert gone_after(shm_path(ring_name), died)
            else:
                assert gone_after(sysv_companion(where[kind]), died)
                assert not any(key == where[kind] for key, _ in sysv_segments())
            # The one who had it open keeps working.
            assert opened.get_nowait() == b"left by the creator"
            opened.put(b"after")
            assert opened.get_nowait() == b"after"
        finally:
            opened.close()
            remove_segment(ring_name)
            if kind == "sysv_key":
                remove_sysv(where[kind])


def test_a_killed_creators_queue_goes(ring_name, tmp_path):
    with Creator(f"""
        q = Queue(name={ring_name!r}, capacity=4096)
        q.put({{"job": 1}})
        report(pid=os.getpid())
        sleep()
    """, tmp_path) as creator:
        creator.facts()
        opened = Ring.open(ring_name)
        try:
            died = creator.kill()
            assert gone_after(shm_path(ring_name), died)
            assert opened.get_nowait()   # the pickled item is still there
        finally:
            opened.close()
            remove_segment(ring_name)


def test_an_unnamed_ring_and_a_file_ring_go(tmp_path):
    path = str(tmp_path / "ring")
    with Creator(f"""
        ring = Ring.create(capacity=4096)
        file_ring = Ring.create(path={path!r}, capacity=4096)
        report(name=ring.name)
        sleep()
    """, str(tmp_path)) as creator:
        name = creator.facts()["name"]
        died = creator.kill()
        try:
            assert gone_after(shm_path(name), died)
            assert gone_after(path, died)
        finally:
            remove_segment(name)


def test_persistent_rings_and_closed_rings_are_left_alone(ring_name, tmp_path):
    other = unique_ring_name()
    with Creator(f"""
        Ring.create({ring_name!r}, capacity=4096, persist=True).close()
        ring = Ring.create({other!r}, capacity=4096)
        ring.unlink()
        Ring.create({other!r}, capacity=4096, persist=True).close()
        report(pid=os.getpid())
        sleep()
    """, tmp_path) as creator:
        creator.facts()
        creator.kill()
        time.sleep(0.5)
        try:
            assert os.path.exists(shm_path(ring_name))
            assert os.path.exists(shm_path(other))
        finally:
            remove_segment(ring_name)
            remove_segment(other)


def test_a_name_recreated_by_somebody_else_is_never_removed(ring_name, tmp_path):
    """Our ring's name was removed behind our back and made again by
    another process: when our creator dies, the new ring stays."""
    with Creator(f"""
        ring = Ring.create({ring_name!r}, capacity=4096)
        report(pid=os.getpid())
        sleep()
    """, tmp_path) as creator:
        creator.facts()
        os.unlink(shm_path(ring_name))
        theirs = Ring.create(ring_name, capacity=4096, persist=True)
        try:
            creator.kill()
            time.sleep(0.5)
            assert os.path.exists(shm_path(ring_name))
            theirs.put(b"still mine")
            assert Ring.open(ring_name).get_nowait() == b"still mine"
        finally:
            theirs.close()
            remove_segment(ring_name)


def test_a_forked_childs_ring_goes_with_the_child_not_the_parent(ring_name, tmp_path):
    """A forked child registers its own rings with a watcher of its own; its
    copy of the parent's registration does nothing."""
    child_ring = unique_ring_name()
    with Creator(f"""
        ring = Ring.create({ring_name!r}, capacity=4096)
        pid = os.fork()
        if pid == 0:
            mine = Ring.create({child_ring!r}, capacity=4096)
            report(child=os.getpid())
            sleep()
        os.waitpid(pid, 0)
        report(parent_done=True)
        sleep()
    """, tmp_path) as creator:
        child = creator.facts()["child"]
        os.kill(child, signal.SIGKILL)
        died = time.monotonic()
        try:
            assert creator.facts() == {"parent_done": True}
            assert gone_after(shm_path(child_ring), died)
            assert os.path.exists(shm_path(ring_name))   # the parent lives
            died = creator.kill()
            assert gone_after(shm_path(ring_name), died)
        finally:
            remove_segment(ring_name)
            remove_segment(child_ring)


def test_a_killed_watcher_is_replaced(ring_name, tmp_path):
    """The watcher is SIGKILLed: the creator goes on (even with SIGPIPE's
    default action restored, as command-line tools do), starts another at
    its next registration, which learns every name still registered."""
    second = unique_ring_name()
    with Creator(f"""
        import signal
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        first = Ring.create({ring_name!r}, capacity=4096)
        report(made=1)
        wait_word()
        second = Ring.create({second!r}, capacity=4096)
        first.put(b"fine")
        report(made=2, got=first.get_nowait().decode())
        sleep()
    """, tmp_path) as creator:
        creator.facts()
        watcher = the_watcher_of(creator.pid)
        os.kill(watcher, signal.SIGKILL)
        # Not our child: wait until it is dead (a zombie, or reaped by init).
        wait_until(lambda: process_state(watcher) in ("Z", "X", None), what="the watcher dies")
        creator.tell()
        assert creator.facts() == {"made": 2, "got": "fine"}
        assert the_watcher_of(creator.pid) != watcher
        died = creator.kill()
        try:
            assert gone_after(shm_path(ring_name), died)
            assert gone_after(shm_path(second), died)
        finally:
            remove_segment(ring_name)
            remove_segment(second)


def test_a_spawned_child_has_a_watcher_of_its_own(ring_name, tmp_path):
    with Creator(f"""
        import multiprocessing
        def make(name, ready):
            q = Queue(name=name, capacity=4096)
            ready.send(True)
            sleep()
        if __name__ == "__main__":
            ctx = multiprocessing.get_context("spawn")
            ready, theirs = ctx.Pipe()   # no semaphore to leak when it is killed
            child = ctx.Process(target=make, args=({ring_name!r}, theirs))
            child.start()
            ready.recv()
            report(child=child.pid)
            sleep()
    """, tmp_path) as creator:
        child = creator.facts()["child"]
        os.kill(child, signal.SIGKILL)
        died = time.monotonic()
        try:
            assert gone_after(shm_path(ring_name), died)
        finally:
            remove_segment(ring_name)


def test_the_watcher_is_no_child_to_wait_for(tmp_path):
    """A creator that waits for all of its children (until ECHILD) does not
    wait for its watcher."""
    with Creator("""
        ring = Ring.create(capacity=4096)
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        codes = []
        while True:
            try:
                codes.append(os.waitstatus_to_exitcode(os.wait()[1]))
            except ChildProcessError:
                break
        report(codes=sorted(codes))
    """, tmp_path) as creator:
        codes = creator.facts()["codes"]
        assert 7 in codes and set(codes) <= {0, 7}   # 0: the watcher's first process
