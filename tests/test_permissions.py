"""Permissions (issue #3, part B; issue #8, item 1): a segment or ring file
is created with exactly the mode asked (0o600 by default) whatever the
umask; a process of another user gets PermissionError from Ring.open unless
the mode lets it read and write; and a segment that another user owns is
refused (RingPermissionError) unless any_owner=True, whatever its mode: the
squatting attack, through a name, a Queue's pickle, a path in a sticky
directory, or a symbolic link.  The other user is made with useradd."""

import contextlib
import json
import os
import pickle
import pwd
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import traceback

import pytest
from conftest import remove_sysv, shm_path, sysv_companion, sysv_segments, unique_sysv_key

from ringshm import Queue, Ring, RingCorrupted, RingError, RingPermissionError
from ringshm._ring import sysv_get, sysv_stat

KINDS = ["shm", "file", "sysv"]


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
    """make(kind, **kwargs) -> (ring, file holding it, {name, path or
    sysv_key}); for a System V ring the "file" is ("sysv", key)."""
    count = [0]
    keys = []

    def make(kind, **kwargs):
        if kind == "sysv":
            keys.append(unique_sysv_key())
            ring = make_ring.track(Ring.create(sysv_key=keys[-1], capacity=4096, **kwargs))
            return ring, ("sysv", keys[-1]), {"sysv_key": keys[-1]}
        if kind == "shm":
            ring = make_ring(**kwargs)
            return ring, shm_path(ring.name), {"name": ring.name}
        count[0] += 1
        path = os.path.join(public_dir, f"ring{count[0]}")
        ring = make_ring(path=path, **kwargs)
        return ring, path, {"path": path}

    yield make
    for key in keys:
        remove_sysv(key)


@contextlib.contextmanager
def umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode_of(path):
    """The mode of a file, or of a System V segment (("sysv", key)), whose
    lock file must have the same (less the execute bits)."""
    if isinstance(path, tuple):
        mode = sysv_stat(sysv_get(path[1], 0, 0))["mode"]
        assert stat.S_IMODE(os.stat(sysv_companion(path[1])).st_mode) == mode & 0o666
        return mode
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

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make and become another user")


@pytest.fixture(scope="module")
def other_user():
    """A user made for this module with useradd (no home), removed after
    it; skipped only where useradd is missing or refuses."""
    if shutil.which("useradd") is None or shutil.which("userdel") is None:
        pytest.skip("useradd/userdel are not installed: no second user to test with")
    login = f"rsq{os.getpid()}"
    for _ in range(20):   # another run may hold the passwd lock for a moment
        done = subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/false",
                               "--user-group", login], capture_output=True, text=True)
        if done.returncode == 0:
            break
        time.sleep(0.2)
    else:
        pytest.skip(f"useradd failed: {done.stderr.strip()}")
    try:
        yield pwd.getpwnam(login)
    finally:
        for _ in range(20):
            if subprocess.run(["userdel", login], capture_output=True).returncode == 0:
                break
            time.sleep(0.2)


def run_as(user, action, timeout=20.0):
    """Run action() in a forked child that dropped to `user`; return what it
    returned (a str), or the name of the exception it raised, or
    "traceback: ..." for an unexpected one."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:   # the child: never return into pytest
        code = 0
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            try:
                result = action()
            except (PermissionError, OSError, RingError) as e:
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
                raise AssertionError(f"the child as {user.pw_name} gave no answer in {timeout} s")
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


def open_ring(where, **kwargs):
    return Ring.open(**where, **kwargs)


@as_root
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", [0o600, 0o644, 0o660])
def test_another_user_gets_permission_error(make, other_user, kind, mode):
    """0o644 lets others read but not write; open() maps for writing (a
    reader takes the get lock), so it is refused too, and cleanly, even
    with any_owner."""
    ring, _, where = make(kind, mode=mode)

    def attach():
        open_ring(where, any_owner=True).close()
        return "opened"

    assert run_as(other_user, attach) == "RingPermissionError"
    ring.put(b"still fine")
    assert ring.get(timeout=1) == b"still fine"


@as_root
@pytest.mark.parametrize("kind", KINDS)
def test_another_user_opens_a_0666_ring_only_with_any_owner(make, other_user, kind):
    ring, _, where = make(kind, mode=0o666)
    ring.put(b"to the other user")

    def refused():
        open_ring(where).close()
        return "opened"

    def talk():
        with open_ring(where, any_owner=True) as theirs:
            message = theirs.get(timeout=5)
            theirs.put(b"from the other user")
        return message.decode()

    assert run_as(other_user, refused) == "RingPermissionError"
    assert run_as(other_user, talk) == "to the other user"
    assert ring.get(timeout=5) == b"from the other user"


@as_root
def test_another_user_create_exist_ok_gets_permission_error(make, other_user):
    """create(exist_ok=True) of somebody else's ring falls back to open(),
    which must say RingPermissionError, not RingExists."""
    _, _, where = make("shm", mode=0o666)

    def create():
        Ring.create(where["name"], capacity=4096, exist_ok=True).close()
        return "created"

    assert run_as(other_user, create) == "RingPermissionError"


# ---------------------------------------------------------------- squatting

class Evil:
    """Unpickling it runs code: it writes a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def squat(other_user, public_dir):
    """squat(name=..., path=... or sysv_key=..., payload=...): the other
    user creates that ring first, mode 0o666, persistent, with `payload` in
    it.  Whatever it made is removed afterwards."""
    made = []
    keys = []

    def squat(name=None, path=None, sysv_key=None, payload=b"planted"):
        if sysv_key is not None:
            keys.append(sysv_key)
        else:
            made.append(shm_path(name) if name is not None else path)

        def plant():
            ring = Ring.create(name, path=path, sysv_key=sysv_key, capacity=4096, mode=0o666,
                               persist=True)
            ring.put(payload)
            ring.close()
            return "planted"

        assert run_as(other_user, plant) == "planted"
        owner = (os.stat(made[-1]).st_uid if sysv_key is None
                 else sysv_stat(sysv_get(sysv_key, 0, 0))["uid"])
        assert owner == other_user.pw_uid

    yield squat
    for where in made:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(where)
    for key in keys:
        remove_sysv(key)


@as_root
def test_a_squatted_name_is_refused(squat, ring_name):
    squat(name=ring_name)
    with pytest.raises(RingPermissionError, match="belongs to uid"):
        Ring.open(ring_name)
    with pytest.raises(RingPermissionError):
        Ring.create(ring_name, capacity=4096, exist_ok=True)
    with pytest.raises(PermissionError):   # a PermissionError for the unaware
        Ring.open(ring_name)
    with Ring.open(ring_name, any_owner=True) as theirs:   # asked for: allowed
        assert theirs.get(timeout=1) == b"planted"


@as_root
def test_ls_lists_other_users_sysv_rings_only_when_asked(squat):
    key = unique_sysv_key()
    squat(sysv_key=key)

    def rows(*flags):
        done = subprocess.run([sys.executable, "-m", "ringshm", "ls", "--json", *flags],
                              capture_output=True, text=True, check=True)
        return [row for row in json.loads(done.stdout) if row.get("key") == key]

    assert rows() == []
    [row] = rows("--all-users")
    assert (row["kind"], row["state"]) == ("sysv", "other user")
    assert "capacity" not in row   # never read


@as_root
def test_a_squatted_sysv_lock_file_is_refused(other_user):
    """The other user plants the lock file of a key before we create its
    ring: create() refuses rather than share the other user's file, and
    leaves no segment behind."""
    key = unique_sysv_key()

    def plant():
        fd = os.open(sysv_companion(key), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o666)
        os.close(fd)
        return "planted"

    try:
        assert run_as(other_user, plant) == "planted"
        with pytest.raises(RingPermissionError, match="lock file"):
            Ring.create(sysv_key=key, capacity=4096)
        assert not any(k == key for k, _ in sysv_segments())
        assert os.stat(sysv_companion(key)).st_uid == other_user.pw_uid
    finally:
        remove_sysv(key)


@as_root
def test_a_squatted_queue_runs_no_code(squat, ring_name, public_dir):
    """The attack of issue 8: the other user plants a pickle that runs a
    command; unpickling a Queue (or a Ring) of that name must refuse the
    segment before any item is read, and there is no opt-out."""
    queue = Queue(name=ring_name, capacity=4096)
    pickled_queue = pickle.dumps(queue)
    pickled_ring = pickle.dumps(queue._ring)
    queue.close()   # the name is gone: the other user takes it
    marker = os.path.join(public_dir, "pwned")
    squat(name=ring_name, payload=pickle.dumps(Evil(marker)))
    with pytest.raises(RingPermissionError):
        pickle.loads(pickled_queue).get(timeout=1)
    with pytest.raises(RingPermissionError):
        pickle.loads(pickled_ring).get(timeout=1)
    assert not os.path.exists(marker)


@as_root
@pytest.mark.parametrize("kind", ["path", "sysv_key"])
def test_a_squatted_path_or_sysv_key_is_refused(squat, public_dir, kind):
    """A path in a sticky directory, or a System V key (shm_perm.uid and
    cuid the other user's): refused before a byte is read, unless
    any_owner; a pickled ring applies the rule too."""
    os.chmod(public_dir, 0o1777)
    where = {kind: os.path.join(public_dir, "jobs") if kind == "path" else unique_sysv_key()}
    ring = Ring.create(**where, capacity=4096)
    pickled_ring = pickle.dumps(ring)
    ring.close()   # the file or key is gone: the other user takes it
    squat(**where)
    with pytest.raises(RingPermissionError, match="belongs to uid"):
        Ring.open(**where)
    with pytest.raises(RingPermissionError):
        Ring.create(**where, capacity=4096, exist_ok=True)
    with pytest.raises(RingPermissionError):
        pickle.loads(pickled_ring)
    with Ring.open(**where, any_owner=True) as theirs:   # asked for: allowed
        assert theirs.get(timeout=1) == b"planted"


@as_root
@pytest.mark.parametrize("where", ["path", "name"])
def test_a_planted_symlink_is_never_followed(other_user, make_ring, public_dir, ring_name,
                                             where):
    """The other user points a link at a ring of ours: attaching through
    the link is refused (the owner check would pass: the target is ours)."""
    os.chmod(public_dir, 0o1777)
    ours = make_ring(path=os.path.join(public_dir, "ours"))
    link = (os.path.join(public_dir, "link") if where == "path" else shm_path(ring_name))

    def plant():
        os.symlink(ours.path, link)
        return "planted"

    assert run_as(other_user, plant) == "planted"
    try:
        with pytest.raises(RingPermissionError, match="symbolic link"):
            if where == "path":
                Ring.open(path=link)
            else:
                Ring.open(ring_name)
    finally:
        os.unlink(link)


@pytest.mark.parametrize("kind", ["fifo", "directory", "socket"])
def test_a_path_that_is_not_a_regular_file_is_refused_at_once(tmp_path, kind):
    path = str(tmp_path / kind)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        os.mkdir(path)
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(path)
        sock.close()
    started = time.monotonic()
    with pytest.raises(RingCorrupted, match="not a ring"):
        Ring.open(path=path)
    assert time.monotonic() - started < 0.5   # no creator grace, never blocks


@as_root
def test_the_command_line_never_reads_another_users_ring(squat, ring_name):
    squat(name=ring_name)
    run = [sys.executable, "-m", "ringshm"]
    listing = subprocess.run([*run, "ls", "--json"], capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    (row,) = [r for r in json.loads(listing.stdout) if r["name"] == ring_name]
    assert row["state"] == "other user" and "messages" not in row
    info = subprocess.run([*run, "info", ring_name], capture_output=True, text=True, timeout=60)
    assert info.returncode == 1 and "belongs to uid" in info.stderr
