"""Permissions (issue #3, part B): a segment or ring file is created with
exactly the mode asked (0o600 by default) whatever the umask, and a process
of another user gets PermissionError from Ring.open unless the mode lets it
read and write."""

import contextlib
import os
import pwd
import select
import shutil
import signal
import stat
import tempfile
import time
import traceback

import pytest
from conftest import shm_path

from ringshm import Ring

KINDS = ["shm", "file"]


@pytest.fixture
def public_dir():
    """A directory every user may enter (pytest's tmp_path is 0o700), so
    that only the ring file's own mode decides who opens it."""
    path = tempfile.mkdtemp(prefix="ringshm-perm-")
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


@pytest.fixture
def make(make_ring, public_dir):
    """make(kind, **kwargs) -> (ring, file holding it, {name or path})."""
    count = [0]

    def make(kind, **kwargs):
        if kind == "shm":
            ring = make_ring(**kwargs)
            return ring, shm_path(ring.name), {"name": ring.name}
        count[0] += 1
        path = os.path.join(public_dir, f"ring{count[0]}")
        ring = make_ring(path=path, **kwargs)
        return ring, path, {"path": path}

    return make


@contextlib.contextmanager
def umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077])
def test_default_mode_is_0600(make, kind, mask):
    with umask(mask):
        _, where, _ = make(kind)
    assert mode_of(where) == 0o600


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mask", [0o000, 0o077, 0o027])
@pytest.mark.parametrize("mode", [0o644, 0o666, 0o640, 0o600, 0o400])
def test_mode_is_exactly_what_was_asked(make, kind, mask, mode):
    """shm_open and open(2) filter the mode through the umask; create()
    must set exactly `mode` anyway, no more and no less."""
    with umask(mask):
        _, where, _ = make(kind, mode=mode)
    assert mode_of(where) == mode, oct(mode_of(where))


# ---------------------------------------------------------------- another user

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")


def run_as_nobody(action, timeout=20.0):
    """Run action() in a forked child that dropped to the user `nobody`;
    return what it returned (a str), or the name of the exception it
    raised, or "traceback: ..." for an unexpected one."""
    nobody = pwd.getpwnam("nobody")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:   # the child: never return into pytest
        code = 0
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            try:
                result = action()
            except (PermissionError, OSError) as e:
                result = type(e).__name__
            except Exception:  # noqa: BLE001 -- the test shows the traceback
                result = "traceback: " + traceback.format_exc()
            os.write(write_end, result.encode())
        except BaseException:  # noqa: BLE001 -- a failed setuid: exit status 1
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        deadline = time.monotonic() + timeout
        chunks = []
        while True:
            ready, _, _ = select.select([read_end], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"the child as nobody gave no answer in {timeout} s")
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
        status = reap(pid, deadline)
    assert os.waitstatus_to_exitcode(status) == 0, status
    return b"".join(chunks).decode()


def reap(pid, deadline):
    """Wait for child `pid` until the monotonic `deadline`, then kill it;
    return its wait status."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            return os.waitpid(pid, 0)[1]
        time.sleep(0.01)


def open_ring(where):
    return Ring.open(**where)


@as_root
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", [0o600, 0o644, 0o660])
def test_another_user_gets_permission_error(make, kind, mode):
    """0o644 lets others read but not write; open() maps for writing (a
    reader takes the get lock), so it is refused too, and cleanly."""
    ring, _, where = make(kind, mode=mode)

    def attach():
        open_ring(where).close()
        return "opened"

    assert run_as_nobody(attach) == "PermissionError"
    ring.put(b"still fine")
    assert ring.get(timeout=1) == b"still fine"


@as_root
@pytest.mark.parametrize("kind", KINDS)
def test_another_user_opens_a_0666_ring(make, kind):
    ring, _, where = make(kind, mode=0o666)
    ring.put(b"to nobody")

    def talk():
        with open_ring(where) as theirs:
            message = theirs.get(timeout=5)
            theirs.put(b"from nobody")
        return message.decode()

    assert run_as_nobody(talk) == "to nobody"
    assert ring.get(timeout=5) == b"from nobody"


@as_root
def test_another_user_create_exist_ok_gets_permission_error(make):
    """create(exist_ok=True) of somebody else's 0o600 ring falls back to
    open(), which must say PermissionError, not RingExists."""
    _, _, where = make("shm")

    def create():
        Ring.create(where["name"], capacity=4096, exist_ok=True).close()
        return "created"

    assert run_as_nobody(create) == "PermissionError"
