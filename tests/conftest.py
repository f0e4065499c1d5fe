"""Fixtures shared by every test file: unique ring names and System V keys,
rings that always clean up after themselves, a ``backing`` fixture that
makes a ring of each kind (shm_open, file, anonymous, System V), and a guard
that fails the run when a test leaves a segment behind in /dev/shm or in
System V shared memory (/proc/sysvipc/shm, what ``ipcs -m`` lists).

Keep these generic: test files written by others (queue, cli, fault) use
them too.

The suite also runs against an installed wheel, from a copy of tests/ alone
with no C compiler on PATH (`make wheel-check`): tests that read the
checkout (README.md, docs/, libringshm/, examples/) take ``needs_checkout``
and those that build C already skip when `cc` (or make) is not on PATH,
each with its reason.
"""

import ctypes
import itertools
import os
import uuid
from pathlib import Path

import posix_ipc
import pytest

# The checkout around tests/ (or, under `make wheel-check`, a temporary
# folder holding only tests/).
ROOT = Path(__file__).resolve().parent.parent


def ringshm_home():
    """The folder that holds the ringshm this pytest imported: the checkout
    (built in place), an editable install's tree, or site-packages (an
    installed wheel).  Child interpreters take it first on PYTHONPATH and as
    their working directory (child_env, CHILD_CWD): they import the same
    ringshm as the tests, never a checkout beside tests/ whose extension may
    not be built."""
    import ringshm
    return os.path.dirname(os.path.dirname(os.path.abspath(ringshm.__file__)))


def default_sigint():
    """A preexec_fn: SIGINT back to its default in the child.  A suite run
    as a background job of a shell (`pytest &`) inherits SIGINT and SIGQUIT
    ignored, as POSIX has it, and so would the children whose Ctrl-C the
    tests try; a terminal's Ctrl-C reaches a foreground program with the
    default.  (Python installs its KeyboardInterrupt handler only over the
    default.)"""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def where_stuck(pid):
    """What process `pid` and its threads are doing, from /proc (state,
    signal masks, the kernel function it sleeps in, its system call): for
    the message of a test whose child did not answer."""
    lines = []
    for task in sorted(os.listdir(f"/proc/{pid}/task")) if os.path.isdir(f"/proc/{pid}/task") \
            else []:
        base = f"/proc/{pid}/task/{task}"
        try:
            with open(f"{base}/status") as f:
                status = {k: v.strip() for k, _, v in (line.partition(":") for line in f)}
            with open(f"{base}/wchan") as f:
                wchan = f.read()
            with open(f"{base}/syscall") as f:
                syscall = f.read().split()[:1]
        except OSError as exc:
            lines.append(f"  task {task}: {exc}")
            continue
        lines.append(f"  task {task}: {status.get('State')} wchan={wchan} syscall={syscall} "
                     f"SigBlk={status.get('SigBlk')} SigIgn={status.get('SigIgn')} "
                     f"SigPnd={status.get('SigPnd')} ShdPnd={status.get('ShdPnd')}")
    return "\n".join(lines) or "  (gone)"


def child_env(env=None, **extra):
    """`env` (default os.environ) and `extra`, with ringshm_home() first on
    PYTHONPATH: what a child interpreter that imports ringshm runs with."""
    merged = dict(os.environ if env is None else env, **extra)
    merged["PYTHONPATH"] = os.pathsep.join(
        filter(None, [ringshm_home(), merged.get("PYTHONPATH")]))
    return merged


def needs_checkout(*paths):
    """Skip unless the source checkout's `paths` are there (they are not when
    the suite runs against an installed wheel from a copy of tests/)."""
    missing = [p for p in paths if not (ROOT / p).exists()]
    return pytest.mark.skipif(bool(missing), reason="needs the source checkout's "
                              + ", ".join(missing) + " (testing an installed package)")


def read_checkout(path):
    """The text of a checkout file, or "" when the suite runs without one
    (the tests that use it then skip through needs_checkout)."""
    try:
        return (ROOT / path).read_text()
    except FileNotFoundError:
        return ""


def pytest_configure(config):
    # Also in pyproject.toml; here too for a run without it (wheel-check).
    for marker in ("multiprocess: starts several processes",
                   "fault: kills processes on purpose",
                   "slow: takes more than a few seconds"):
        config.addinivalue_line("markers", marker)
    _refuse_a_shadowing_working_directory()


def _refuse_a_shadowing_working_directory():
    """Many child processes inherit pytest's working directory, where
    `python -m ringshm` or `-c "import ringshm"` find a ringshm/ folder
    first.  If that is not the package the tests imported (pytest run from
    a checkout's root while testing an installed ringshm), they would test
    the other one: stop with the reason instead."""
    here = os.path.realpath(os.getcwd())
    if not os.path.isfile(os.path.join(here, "ringshm", "__init__.py")):
        return
    try:
        home = os.path.realpath(ringshm_home())
    except ImportError:
        return   # the tests say so themselves
    if home != here:
        pytest.exit(f"the working directory {here} holds a ringshm/ that is not the ringshm "
                    f"under test ({home}); child processes would import it: run pytest from "
                    "another directory, or install this checkout (pip install -e .)",
                    returncode=4)


SHM_DIR = "/dev/shm"
# Our segments are /dev/shm/ringshm.<name> (ringshm.ring.SHM_PREFIX); it is
# spelled out here so that the guard works even when ringshm cannot import.
SHM_PREFIX = "ringshm."
# A System V ring's lock file is /dev/shm/ringshm-sysv.0xKEY
# (ringshm._backing.companion_path).
SYSV_COMPANION_PREFIX = "ringshm-sysv."
SYSV_LIST = "/proc/sysvipc/shm"
# unique_sysv_key(): 0x52 (R), the low 16 bits of this pytest's pid, a counter.
_SYSV_KEY_TAG = 0x52
_sysv_counter = itertools.count(1)
# Keys a test made some other way (ftok in a C program): the guard checks them too.
_tracked_sysv_keys = set()


def unique_ring_name():
    """A ring name no other test, run or process uses: the pid of this pytest
    process (which the leak guard uses to tell concurrent runs apart) and
    random hex."""
    return f"t{os.getpid()}-{uuid.uuid4().hex[:10]}"


def shm_path(name):
    """Where the segment of the named ring lives."""
    return os.path.join(SHM_DIR, SHM_PREFIX + name)


def remove_segment(name):
    """Unlink the segment of ``name`` if it is still there; True if it was."""
    try:
        posix_ipc.unlink_shared_memory("/" + SHM_PREFIX + name)
    except posix_ipc.ExistentialError:
        return False
    return True


def _sysv_key_base():
    return (_SYSV_KEY_TAG << 24) | ((os.getpid() & 0xFFFF) << 8)


def unique_sysv_key():
    """A System V key that only this test session uses (256 a session;
    each test removes its segment, so reuse after a wrap finds none)."""
    return _sysv_key_base() | (next(_sysv_counter) % 255 + 1)


def track_sysv_key(key):
    """Have the leak guard check a key made otherwise (an ftok key)."""
    _tracked_sysv_keys.add(key & 0xFFFFFFFF)
    return key


def sysv_segments():
    """(key, shmid) of every System V segment the kernel lists."""
    try:
        with open(SYSV_LIST) as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return []
    return [(int(line.split()[0]) & 0xFFFFFFFF, int(line.split()[1])) for line in lines]


def sysv_companion(key):
    return os.path.join(SHM_DIR, f"{SYSV_COMPANION_PREFIX}0x{key & 0xFFFFFFFF:08x}")


def remove_sysv(key):
    """IPC_RMID the segment of ``key`` and unlink its lock file, if there;
    True if either was."""
    libc = ctypes.CDLL(None, use_errno=True)
    found = False
    for seg_key, shmid in sysv_segments():
        if seg_key == key & 0xFFFFFFFF:
            found = libc.shmctl(shmid, 0, None) == 0 or found   # IPC_RMID
    try:
        os.unlink(sysv_companion(key))
        found = True
    except FileNotFoundError:
        pass
    return found


def made_by_this_run_sysv(key):
    """True for the keys of unique_sysv_key() in this session, and those
    tracked with track_sysv_key()."""
    return (key & ~0xFF) == _sysv_key_base() or key in _tracked_sysv_keys


def _leaked_sysv():
    keys = {key for key, _ in sysv_segments() if made_by_this_run_sysv(key)}
    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:
        entries = []
    for entry in entries:
        if entry.startswith(SYSV_COMPANION_PREFIX):
            try:
                key = int(entry[len(SYSV_COMPANION_PREFIX):], 16)
            except ValueError:
                continue
            if made_by_this_run_sysv(key):
                keys.add(key)
    return keys


def join_or_kill(process, timeout=10):
    """Join a multiprocessing child; kill it if it has not ended within
    `timeout` (a hung child must not outlive the test).  True if it ended
    by itself."""
    process.join(timeout)
    if process.is_alive():
        process.kill()
        process.join()
        return False
    return True


def _ring_entries():
    try:
        return {e for e in os.listdir(SHM_DIR) if e.startswith(SHM_PREFIX)}
    except FileNotFoundError:
        return set()


def made_by_this_run(entry):
    """True for the /dev/shm entries this test session names: the
    "t<pid>-..." of unique_ring_name() and the "<pid>-<hex>" that Ring
    picks for an unnamed ring made in this process.  Everything else
    belongs to somebody else (a user's `ringshm create myapp-jobs`, another
    test run) and is neither blamed nor removed.  The persist=False rings of
    our dead children need no guard: their watcher removes them."""
    pid = os.getpid()
    return entry[len(SHM_PREFIX):].startswith((f"t{pid}-", f"{pid}-"))


@pytest.fixture(scope="session", autouse=True)
def no_leaked_segments():
    """Fail the run if /dev/shm holds a segment that this run made and left
    (then remove it, so one leak does not poison later runs)."""
    before = _ring_entries()
    yield
    leaked = sorted(e for e in _ring_entries() - before if made_by_this_run(e))
    for entry in leaked:
        remove_segment(entry[len(SHM_PREFIX):])
    leaked_sysv = sorted(_leaked_sysv())
    for key in leaked_sysv:
        remove_sysv(key)
    assert not leaked, f"tests left ringshm segments in {SHM_DIR}: {leaked}"
    assert not leaked_sysv, ("tests left System V segments or their lock files: keys "
                             + ", ".join(f"0x{key:08x}" for key in leaked_sysv))


@pytest.fixture
def ring_name():
    """A fresh unique ring name. The test itself removes what it creates
    under it (make_ring does that for you)."""
    return unique_ring_name()


class RingFactory:
    """make_ring(...) -> Ring.create(...) with a unique name (unless ``name``
    or ``path`` is given) and capacity 4096 by default. At teardown every
    ring it made, or was handed with track(), is closed; then the name of a
    persist=True ring is removed, and a non-persistent one whose creator did
    not remove it fails the test (and is removed)."""

    def __init__(self):
        self._rings = []        # close all of these
        self._created = []      # (name, persist) of the rings we created

    def __call__(self, name=None, capacity=4096, **kwargs):
        from ringshm import Ring

        if name is None and kwargs.get("path") is None:
            name = unique_ring_name()
        ring = Ring.create(name, capacity=capacity, **kwargs)
        self._rings.append(ring)
        if name is not None:
            self._created.append((name, kwargs.get("persist", False)))
        return ring

    def track(self, ring):
        """Close ``ring`` at teardown too (an opened or unpickled one)."""
        self._rings.append(ring)
        return ring

    def cleanup(self):
        errors = []
        for ring in reversed(self._rings):
            try:
                ring.close()
            except Exception as exc:  # keep closing the others
                errors.append(f"close() of {ring!r} raised {exc!r}")
        for name, persist in self._created:
            if remove_segment(name) and not persist:
                errors.append(f"the creator of {name!r} did not unlink it on close()")
        assert not errors, errors


@pytest.fixture
def make_ring():
    factory = RingFactory()
    yield factory
    factory.cleanup()


def closing(factory):
    """The body of a fixture that hands out ``make(*args, **kwargs) ->
    factory(*args, **kwargs)`` and closes everything it made at teardown
    (queues: their rings are unlinked).  Use: ``yield from closing(Queue)``."""
    made = []

    def make(*args, **kwargs):
        obj = factory(*args, **kwargs)
        made.append(obj)
        return obj

    yield make
    for obj in made:
        obj.close()


def fill(ring, size=1):
    """put_nowait messages of ``size`` bytes until Full; return how many."""
    from ringshm import Full

    count = 0
    while True:
        try:
            ring.put_nowait(bytes([count % 256]) * size)
        except Full:
            return count
        count += 1


# ------------------------------------------------------------ every backing

BACKINGS = ["shm", "file", "anonymous", "sysv"]


class BackingFactory:
    """make(capacity=4096, **create options) -> a Ring of one backing;
    handle(ring) -> what a child passes to open_where() to attach: the
    Ring.open() keywords that find it, or for an anonymous ring (shared
    only with forked children) the ring object itself (faultkit.handle).
    Everything it made is closed and removed at teardown."""

    def __init__(self, kind, make_ring, tmp_path):
        self.kind = kind
        self._make_ring = make_ring
        self._tmp_path = tmp_path
        self._keys = []
        self._count = 0

    def __call__(self, capacity=4096, **kwargs):
        from ringshm import Ring

        if self.kind == "shm":
            return self._make_ring(capacity=capacity, **kwargs)
        if self.kind == "file":
            self._count += 1
            return self._make_ring(path=str(self._tmp_path / f"ring{self._count}"),
                                   capacity=capacity, **kwargs)
        if self.kind == "anonymous":
            kwargs.pop("persist", None)
            return self._make_ring.track(Ring.anonymous(capacity=capacity, **kwargs))
        key = unique_sysv_key()
        self._keys.append((key, kwargs.get("persist", False)))
        return self._make_ring.track(Ring.create(sysv_key=key, capacity=capacity, **kwargs))

    @staticmethod
    def handle(ring):
        from faultkit import handle

        return handle(ring)

    def cleanup(self):
        self._make_ring.cleanup()
        errors = []
        for key, persist in self._keys:
            if remove_sysv(key) and not persist:
                errors.append(f"the creator of System V key 0x{key:08x} did not remove it")
        assert not errors, errors


def one_ring_on(kind, tmp_path, **options):
    """The body of a module's ``ring`` fixture parametrized over the
    backings that apply to it (``yield from``): one ring of backing `kind`
    made with `options`, removed after the test."""
    factory = BackingFactory(kind, RingFactory(), tmp_path)
    yield factory(**options)
    factory.cleanup()


@pytest.fixture
def raw(ring):
    """The header of the module's ``ring``, mapped a second time
    (faultkit.RawHeader), for fields the API does not show."""
    from faultkit import RawHeader, handle

    with RawHeader(handle(ring)) as header:
        yield header


@pytest.fixture(params=BACKINGS)
def backing(request, tmp_path):
    """A BackingFactory for each backing in turn: the test runs once per kind."""
    factory = BackingFactory(request.param, RingFactory(), tmp_path)
    yield factory
    factory.cleanup()
