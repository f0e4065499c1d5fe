"""The C library's own checks, run from pytest so that CI runs them: the C
tests (libringshm/tests/test_*.c), the same under ASan and UBSan, and a
bounded fuzz run (libFuzzer when clang is present, else the seeded-random
driver built with the ordinary compiler).  Each is one `make -C libringshm`
target in a build directory of this run's own (BUILD=...), so parallel runs
never share objects.  About a minute and a half on two cores."""

import os
import shutil
import subprocess

import pytest
from conftest import needs_checkout

LIB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "libringshm")
FUZZ_SECONDS = 20          # per libFuzzer target
FUZZ_ITERATIONS = 20000    # per body, for the fallback without clang

pytestmark = [
    pytest.mark.slow,
    needs_checkout("libringshm"),
    pytest.mark.skipif(shutil.which("cc") is None or shutil.which("make") is None,
                       reason="the C library's tests need a C compiler (cc) and make"),
]


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    return str(tmp_path_factory.mktemp("libringshm-build"))


def make(build, *args, timeout):
    command = ["make", "-C", LIB, "-j2", f"BUILD={build}", *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{' '.join(command)} took more than {timeout} s:\n"
                    f"{(e.stdout or b'')[-4000:]}\n{(e.stderr or b'')[-4000:]}")
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{output[-8000:]}"
    return output


def test_c_tests(build):
    output = make(build, "test", timeout=300)
    assert "tests passed" in output


def test_c_tests_under_asan_and_ubsan(build):
    output = make(build, "sanitize", timeout=300)
    assert "tests passed" in output


def test_c_fuzz_bounded(build):
    if shutil.which("clang"):
        output = make(build, "fuzz", f"FUZZ_SECONDS={FUZZ_SECONDS}", timeout=300)
        assert output.count("stat::number_of_executed_units") == 3, output[-4000:]
    else:
        output = make(build, "fuzz-random", f"FUZZ_ITERATIONS={FUZZ_ITERATIONS}",
                      timeout=300)
        assert "fuzz_random:" in output and "ok in" in output, output[-4000:]
