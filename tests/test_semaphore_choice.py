"""The two facts behind the core's departure from POSIX semaphores
(docs/DESIGN.md, "Departure: raw futexes"), checked on this machine's libc:

- a sleeper SIGKILLed inside sem_wait stays counted in the sem_t, so every
  later sem_post makes a system call; the core's wait queue forgets it after
  one wake;
- a sem_t holding bytes a peer wrote makes glibc abort the waiting process
  (or wake it with nothing posted); the core's wait queue just times out.

If a libc ever fixes either, these fail, and the design should be revisited.
The timings of the same program are in ringshm.bench.semaphore, not here.
"""

import errno
import platform
import shutil

import pytest

from ringshm.bench import semaphore

pytestmark = [
    pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                       reason="needs a C compiler to build the probe"),
    pytest.mark.skipif(platform.libc_ver()[0] != "glibc",
                       reason="the sem_t internals checked here are glibc's"),
]


def test_a_killed_sem_wait_sleeper_stays_counted_for_ever():
    result = semaphore.run_case("killed", "sem", 10_000)
    assert result["sleepers_recorded_after_kill"] == 1
    assert result["sleepers_recorded_after_posts"] == 1, result


def test_a_killed_futex_sleeper_costs_one_wake():
    result = semaphore.run_case("killed", "futex", 10_000)
    assert result["sleepers_recorded_after_kill"] == 1
    assert result["wake_calls_after_kill"] == 1, result
    assert result["sleepers_recorded_after_posts"] == 0, result


def test_glibc_aborts_a_process_waiting_on_a_damaged_sem_t():
    result = semaphore.run_case("damaged", "sem", "flags")
    assert result.get("died") == "SIGABRT", result
    assert "futex facility" in result["stderr"]


@pytest.mark.parametrize("pattern", ["ff", "a5"])
def test_a_damaged_sem_t_wakes_with_nothing_posted(pattern):
    result = semaphore.run_case("damaged", "sem", pattern)
    assert result.get("returned") == 0, result


@pytest.mark.parametrize("pattern", semaphore.DAMAGE_PATTERNS)
def test_a_damaged_futex_wait_queue_times_out_as_asked(pattern):
    result = semaphore.run_case("damaged", "futex", pattern)
    assert "died" not in result, result
    assert result["returned"] == errno.ETIMEDOUT, result


@pytest.mark.parametrize("kind", semaphore.KINDS)
def test_both_ping_pong(kind):
    result = semaphore.run_case("pingpong", kind, 200)
    assert result["round_trips"] == 200
    assert 0 < result["p50_ns"] <= result["p99_ns"]
