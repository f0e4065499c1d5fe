"""A separate program (not a multiprocessing child: nothing pickled, nothing
inherited) attaches by name or path and talks with the test both ways."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-c", PEER, kind, requests_at, replies_at],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


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
