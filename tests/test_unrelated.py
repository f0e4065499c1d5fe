"""A separate program (not a multiprocessing child: nothing pickled, nothing
inherited) attaches by name or path and talks with the test both ways."""

import os
import subprocess
import sys

import pytest
from conftest import child_env, remove_segment, ringshm_home, shm_path

from ringshm import Ring

# argv: "name" or "path", then where the requests ring and the replies ring
# are (two rings: on one, each side could take back its own message). The
# program announces itself, then answers each request until it gets b"bye".
PEER = r"""
import sys
from ringshm import Ring
kind, requests_at, replies_at = sys.argv[1:]
attach = Ring.open if kind == "name" else (lambda where: Ring.open(path=where))
requests, replies = attach(requests_at), attach(replies_at)
replies.put(b"hello from %d" % requests.capacity)
while True:
    message = requests.get(timeout=20)
    if message == b"bye":
        break
    replies.put(message[::-1])
requests.close()
replies.close()
"""


def run_peer(kind, requests_at, replies_at):
    env = child_env()
    return subprocess.Popen([sys.executable, "-c", PEER, kind, requests_at, replies_at],
                            cwd=ringshm_home(), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def talk(requests, replies, peer):
    try:
        assert replies.get(timeout=20) == b"hello from %d" % requests.capacity
        for size in (0, 1, 100, requests.max_message_size // 2):
            message = bytes(range(256)) * (size // 256) + bytes(size % 256)
            requests.put(message)
            assert replies.get(timeout=20) == message[::-1]
        requests.put(b"bye")
        out, err = peer.communicate(timeout=20)
    finally:
        if peer.poll() is None:
            peer.kill()
            peer.communicate()
    assert peer.returncode == 0, err.decode()


@pytest.mark.parametrize("capacity", [4096, 1 << 16])
def test_unrelated_process_by_name(make_ring, capacity):
    requests, replies = make_ring(capacity=capacity), make_ring(capacity=capacity)
    talk(requests, replies, run_peer("name", requests.name, replies.name))


def test_unrelated_process_by_path(make_ring, tmp_path):
    requests = make_ring(path=str(tmp_path / "requests.ring"))
    replies = make_ring(path=str(tmp_path / "replies.ring"))
    talk(requests, replies, run_peer("path", requests.path, replies.path))


# A program that creates a ring and exits without closing it: the name goes
# with it, unless persist=True kept it on purpose.
CREATE_AND_EXIT = r"""
import sys
from ringshm import Ring
ring = Ring.create(sys.argv[1], capacity=4096, persist=sys.argv[2] == "persist")
ring.put(b"left behind")
print(ring.name)
"""


@pytest.mark.parametrize("persist", [False, True])
def test_interpreter_exit_unlinks_unless_persist(ring_name, persist):
    env = child_env()
    try:
        done = subprocess.run(
            [sys.executable, "-c", CREATE_AND_EXIT, ring_name, "persist" if persist else "-"],
            cwd=ringshm_home(), env=env, capture_output=True, text=True, timeout=30)
        assert (done.returncode, done.stdout) == (0, ring_name + "\n"), done.stderr
        assert os.path.exists(shm_path(ring_name)) == persist
        if persist:
            with Ring.open(ring_name) as ring:
                assert ring.get_nowait() == b"left behind"
                assert ring.stats()["creator_alive"] is False
    finally:
        remove_segment(ring_name)
