"""A lock holder for tests/test_namespaces.py, meant to run in a PID
namespace of its own (``unshare --pid --fork --mount-proc``).

    python namespace_holder.py NAME put|get SECONDS [COMMITTED]

Opens ring NAME, puts COMMITTED messages b"c0", b"c1", ..., then holds the
put lock inside ``reserve(8)`` (writing b"reserved") or the get lock inside
``view()`` for SECONDS, printing ``ready PID TOKEN`` (its pid as its own
namespace sees it, its lock token) once it holds the lock.  Then it commits
the reservation (or consumes the message), prints ``done`` and exits.
"""

import os
import sys
import time

from ringshm import Ring


def main():
    name, side, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    committed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    ring = Ring.open(name)
    for i in range(committed):
        ring.put(b"c%d" % i)
    block = ring.reserve(8) if side == "put" else ring.view()
    with block as buf:
        if side == "put":
            buf[:] = b"reserved"
        print("ready", os.getpid(), ring._liveness_token(), flush=True)
        time.sleep(seconds)
    ring.close()
    print("done", flush=True)


if __name__ == "__main__":
    main()
