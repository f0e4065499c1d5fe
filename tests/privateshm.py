"""Run a Python snippet in a mount namespace of its own (``unshare -m``)
with a private tmpfs on /dev/shm (or another directory), and an IPC
namespace of its own (``-i``: System V segments): what it makes there, or
fills, or removes, never touches the machine's /dev/shm or segments, and
all of it goes with the namespaces."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

needs_unshare = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare(1) to mount a private tmpfs")

# Defined in the snippet: take every free byte of the tmpfs with a file.
FILL = """
def fill(where):
    fd = os.open(os.path.join(where, "filler"), os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"x" * 4096):
            pass
    except OSError:
        pass
    os.close(fd)
"""


def in_private_tmpfs(code, size="16M", mount_on="/dev/shm"):
    """Run Python `code` with a tmpfs of `size` mounted on `mount_on`; in
    it, MOUNT is that directory and fill(MOUNT) fills it.  Returns (exit
    status, or -signal, and the JSON the code printed last, or None)."""
    from conftest import child_env, ringshm_home
    script = (f"import json, os, sys\nsys.path.insert(0, {ringshm_home()!r})\n"
              f"MOUNT = {mount_on!r}\n" + FILL + textwrap.dedent(code))
    done = subprocess.run(
        ["unshare", "-m", "-i", "--propagation", "private", "sh", "-c",
         f'mount -t tmpfs -o size={size} tmpfs "$1" && exec "$2" -c "$3"', "sh",
         mount_on, sys.executable, script],
        capture_output=True, text=True, timeout=120, cwd=ringshm_home(), env=child_env())
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None
    assert done.returncode in (0, -signal.SIGBUS), done.stderr
    return done.returncode, result
