"""Run by tests/test_fork_blocks.py: fork inside a zero-copy block of the
ring NAME and let the child leave the block its way; then, while the parent
still holds the block, another thread of the parent takes its turn (a put
after a reserve(), a get after a view()), and finally the parent leaves its
block normally.

    python tests/fork_in_block.py NAME reserve|view normally|raise|sys.exit|os._exit

The child is a real process leaving through the interpreter as a user's
program would (sys.exit runs atexit handlers and finalizers).  The parent
prints one line: what the other thread got (view), or "ok".
"""

import os
import sys
import threading
import time

from ringshm import Ring

HOLD = 0.3   # how long the parent keeps its block after its child left


def leave(how):
    if how == "raise":
        raise RuntimeError("the child leaves the block by an exception")
    if how == "sys.exit":
        sys.exit(0)
    if how == "os._exit":
        os._exit(0)


def main(name, block, how):
    ring = Ring.open(name)
    got = []
    other = Ring.open(name)

    def take_turn():
        if block == "reserve":
            other.put(b"other", timeout=10)
        else:
            got.append(other.get(timeout=10))

    opened = ring.reserve(8) if block == "reserve" else ring.view()
    with opened as mv:
        if block == "reserve":
            mv[:] = b"parent!!"
        pid = os.fork()
        if pid == 0:
            leave(how)
        else:
            _, status = os.waitpid(pid, 0)
            turn = threading.Thread(target=take_turn)
            turn.start()
            time.sleep(HOLD)
    if pid == 0:
        sys.exit(0)   # the child, having left the block normally
    turn.join()
    print(got[0].decode() if got else "ok", os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main(*sys.argv[1:])
