"""The C library as a C programmer gets it: the header and static library
that the Python package carries (ringshm.get_include(),
ringshm.get_library_dir()), and `make install` + pkg-config without Python.

The README's "C quick start" is the script: its C program (send.c) is built
in a temporary folder outside the checkout with the README's own command
lines, then run against Python (a Ring, and the README's `ringshm create /
recv / rm` lines), and every message is counted.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import needs_checkout, read_checkout, remove_segment, unique_ring_name

import ringshm
from ringshm import Empty, Ring, ShutDown

ROOT = Path(__file__).resolve().parent.parent
# The README's "C quick start" (absent when testing an installed wheel from
# a copy of tests/: then every test here skips).
README = read_checkout("README.md") or "## C quick start\n```c\n```\n## "
QUICK_START = README[README.index("## C quick start"):]
QUICK_START = QUICK_START[:QUICK_START.index("\n## ", 1)]
SEND_C = re.findall(r"```c\n(.*?)```", QUICK_START, re.S)[0]
COMMANDS = [line for block in re.findall(r"```sh\n(.*?)```", QUICK_START, re.S)
            for line in block.splitlines()]
CC_PACKAGE = next((c for c in COMMANDS if c.startswith("cc ") and "get_include" in c), "")
CC_PKG_CONFIG = next((c for c in COMMANDS if c.startswith("cc ") and "pkg-config" in c), "")
MAKE_INSTALL = next((c for c in COMMANDS if c.startswith("make -C libringshm")), "")
pytestmark = needs_checkout("README.md", "libringshm")
COUNT = 20000       # more than a 64 KiB ring holds: the sender waits for room
WAIT = 120          # seconds: a guard against a hang, not a measurement

needs_cc = pytest.mark.skipif(shutil.which("cc") is None,
                              reason="no C compiler (cc) to build a C program")


def sh(command, cwd, env=None):
    """Run a README command line with this test's Python for `python3`."""
    command = command.replace("python3 ", shlex.quote(sys.executable) + " ")
    done = subprocess.run(["sh", "-c", command], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}"
    return done


@pytest.fixture
def outside(tmp_path):
    """A folder outside the checkout, with the README's send.c in it."""
    assert ROOT not in tmp_path.resolve().parents
    (tmp_path / "send.c").write_text(SEND_C)
    return tmp_path


def receive_all(send, env=None):
    """Run `send NAME COUNT` into a fresh Ring; check that every message
    came once, in order, and that the sender ended the stream and exited 0."""
    name = unique_ring_name()
    try:
        with Ring.create(name, capacity=1 << 16) as ring:
            proc = subprocess.Popen([str(send), name, str(COUNT)], env=env,
                                    stderr=subprocess.PIPE, text=True)
            try:
                received = []
                while True:
                    try:
                        received.append(ring.get(timeout=WAIT))
                    except ShutDown:
                        break
                    except Empty:
                        pytest.fail("the C program stopped sending: "
                                    f"{proc.poll()} {proc.stderr.read() if proc.poll() else ''}")
                _, err = proc.communicate(timeout=WAIT)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
        assert proc.returncode == 0, err
        assert len(received) == COUNT
        assert received == [b"message %d" % i for i in range(COUNT)]
    finally:
        remove_segment(name)


def test_the_package_carries_the_header_and_the_static_library():
    include, libdir = ringshm.get_include(), ringshm.get_library_dir()
    assert os.path.isabs(include) and os.path.isabs(libdir)
    # The header is this checkout's (a stale build would not be).
    assert (Path(include) / "ringshm.h").read_bytes() == \
        (ROOT / "libringshm" / "include" / "ringshm.h").read_bytes()
    assert (Path(libdir) / "libringshm.a").stat().st_size > 0
    assert "get_include" in ringshm.__all__ and "get_library_dir" in ringshm.__all__


@needs_cc
def test_the_readme_program_builds_against_the_package_and_talks_to_python(outside):
    sh(CC_PACKAGE, cwd=outside)
    receive_all(outside / "send")


@needs_cc
def test_the_readme_program_is_warning_clean(outside):
    sh(f"cc -std=c11 -Wall -Wextra -Werror -fsyntax-only -I{shlex.quote(ringshm.get_include())} "
       "send.c", cwd=outside)


@needs_cc
def test_the_readme_command_lines_run_as_written(outside):
    """create (the CLI), the C sender in the background, recv, rm."""
    sh(CC_PACKAGE, cwd=outside)
    name = unique_ring_name()
    cli = [sys.executable, "-m", "ringshm"]
    try:
        subprocess.run([*cli, "create", name, "--capacity", "64K"], check=True, timeout=WAIT,
                       capture_output=True)
        send = subprocess.Popen([str(outside / "send"), name, str(COUNT)],
                                stderr=subprocess.PIPE, text=True)
        try:
            recv = subprocess.run([*cli, "recv", name], capture_output=True, text=True,
                                  timeout=WAIT)
            _, err = send.communicate(timeout=WAIT)
        finally:
            if send.poll() is None:
                send.kill()
                send.communicate()
        assert send.returncode == 0, err
        assert recv.returncode == 0, recv.stderr
        assert recv.stdout.splitlines() == [f"message {i}" for i in range(COUNT)]
        subprocess.run([*cli, "rm", name], check=True, timeout=WAIT, capture_output=True)
    finally:
        remove_segment(name)


@needs_cc
@pytest.mark.skipif(shutil.which("make") is None or shutil.which("pkg-config") is None,
                    reason="no make or pkg-config for the build without Python")
def test_make_install_and_pkg_config_without_python(outside):
    """The README's `make && make install PREFIX=...` into a temporary
    prefix (and a temporary build folder: the checkout is left alone),
    then its pkg-config command line; the program runs on the installed
    libringshm.so."""
    prefix, build = outside / "prefix", outside / "build"
    make = MAKE_INSTALL.replace("sudo ", "").replace("/usr/local", shlex.quote(str(prefix)))
    make = make.replace("&& ldconfig", "")   # a private prefix: LD_LIBRARY_PATH below
    make = make.replace("make -C libringshm", f"make -C libringshm BUILD={shlex.quote(str(build))}")
    sh(make, cwd=ROOT)
    env = dict(os.environ, PKG_CONFIG_PATH=str(prefix / "lib" / "pkgconfig"),
               LD_LIBRARY_PATH=str(prefix / "lib"))
    sh(CC_PKG_CONFIG, cwd=outside, env=env)
    linked = subprocess.run(["ldd", str(outside / "send")], env=env, capture_output=True,
                            text=True)
    if linked.returncode == 0:
        assert str(prefix / "lib" / "libringshm.so.0") in linked.stdout
    receive_all(outside / "send", env=env)
