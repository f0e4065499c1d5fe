"""fork() inside a zero-copy block (SPEC.md, "Additions for 0.2"): a child
forked inside ``with ring.reserve(n):`` or ``with ring.view():`` that leaves
the block (normally, by an exception, by sys.exit or os._exit) neither
publishes, nor consumes, nor unlocks anything; only the process that opened
the block does.

Each case runs tests/fork_in_block.py: the child leaves its copy of the
block, then another thread of the parent takes its turn (it must wait for
the parent's block), then the parent ends its block.  Before the fix, the
child's exit published or consumed the parent's record and let the lock go:
the other thread's message was lost (the head moved backwards), len() went
wrong, or a message was delivered twice.  (os._exit runs no Python code,
so that case passed before too: it is the control that the helper itself
is sound.)
"""

import os
import subprocess
import sys

import pytest

from ringshm import Empty

pytestmark = pytest.mark.multiprocess

HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fork_in_block.py")
WAYS_OUT = ["normally", "raise", "sys.exit", "os._exit"]


def run_helper(ring, block, how):
    done = subprocess.run([sys.executable, HELPER, ring.name, block, how],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    printed, child_status = done.stdout.split()
    return printed, int(child_status)


def assert_counters(ring, messages, nbytes):
    stats = ring.stats()
    assert (stats["messages_put"], stats["messages_got"]) == messages
    assert (stats["bytes_put"], stats["bytes_got"]) == nbytes
    assert len(ring) == messages[0] - messages[1]


@pytest.mark.parametrize("how", WAYS_OUT)
def test_child_of_a_reserve_block_publishes_nothing(make_ring, how):
    ring = make_ring(capacity=4096)
    printed, child_status = run_helper(ring, "reserve", how)
    assert printed == "ok"
    assert child_status == (1 if how == "raise" else 0)
    # The parent's message first (its block held the lock), then the other
    # thread's, each once; the counters agree.
    assert_counters(ring, (2, 0), (13, 0))
    assert ring.get_nowait() == b"parent!!"
    assert ring.get_nowait() == b"other"
    with pytest.raises(Empty):
        ring.get_nowait()
    assert_counters(ring, (2, 2), (13, 13))


@pytest.mark.parametrize("how", WAYS_OUT)
def test_child_of_a_view_block_consumes_nothing(make_ring, how):
    ring = make_ring(capacity=4096)
    ring.put(b"first")
    ring.put(b"second")
    printed, child_status = run_helper(ring, "view", how)
    assert child_status == (1 if how == "raise" else 0)
    # The parent consumed "first" when its block ended; the other thread
    # waited for it and got "second"; nothing is left, nothing came twice.
    assert printed == "second"
    with pytest.raises(Empty):
        ring.get_nowait()
    assert_counters(ring, (2, 2), (11, 11))


def test_child_can_use_the_ring_after_leaving_an_inherited_block(make_ring):
    # The child's copy of the block is forgotten: its own reserve() and
    # view() then work, waiting for the parent's lock like anyone else.
    ring = make_ring(capacity=4096)
    code = f"""
import os, sys
from ringshm import Ring
ring = Ring.open({ring.name!r})
with ring.reserve(6) as mv:
    mv[:] = b"parent"
    pid = os.fork()
    if pid == 0:
        try:
            with ring.reserve(5) as mine:
                mine[:] = b"child"
            with ring.view() as seen:
                assert bytes(seen) == b"parent", bytes(seen)
            os._exit(0)
        except BaseException:
            import traceback; traceback.print_exc(); os._exit(1)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert ring.get_nowait() == b"child"
    with pytest.raises(Empty):
        ring.get_nowait()
    assert_counters(ring, (2, 2), (11, 11))
