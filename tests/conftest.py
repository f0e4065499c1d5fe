"""Fixtures shared by every test file: unique ring names, rings that always
clean up after themselves, and a guard that fails the run when a test leaves
a segment behind in /dev/shm.

Keep these generic: test files written by others (queue, cli, fault) use
them too.
"""

import os
import uuid

import posix_ipc
import pytest

SHM_DIR = "/dev/shm"
# Our segments are /dev/shm/ringshm.<name> (ringshm.ring.SHM_PREFIX); it is
# spelled out here so that the guard works even when ringshm cannot import.
SHM_PREFIX = "ringshm."


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
    assert not leaked, f"tests left ringshm segments in {SHM_DIR}: {leaked}"


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
