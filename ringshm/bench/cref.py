"""The C reference ring (cring.c): the machine's limit.

Compiled once per run with the system C compiler into a temporary directory;
without a compiler its rows are skipped with a note. It runs as its own
program (a producer and a forked consumer), so it is measured in fresh
processes like everything else, without Python in the loop.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any, Optional

from .transport import Transport, Unsupported, batch_for


def core_header_dirs() -> list[str]:
    """Where the library's internal headers are: the checkout's sources, and
    the package's include directory (a wheel carries atomic.h and futex.h
    there for these programs)."""
    package = Path(str(resources.files("ringshm")))
    return [str(d) for d in (package.parent / "libringshm" / "src", package / "include")
            if d.is_dir()]


def library_flags() -> tuple[Optional[list[str]], Optional[str]]:
    """Compiler flags that build a program against the libringshm this
    package ships (ringshm.get_include(), ringshm.get_library_dir()), to go
    after the source: (flags, None) or (None, why not)."""
    import ringshm
    try:
        include, library = ringshm.get_include(), ringshm.get_library_dir()
    except FileNotFoundError as exc:
        return None, f"no libringshm in the package ({exc})"
    return [f"-I{include}", f"-L{library}", "-lringshm"], None


@functools.cache
def compile_program(source_name: str, include_core_headers: bool = False,
                    link_library: bool = False) -> tuple[Optional[str], Optional[str]]:
    """Compile the packaged C file ``source_name`` into a temporary directory
    (removed at exit). ``include_core_headers`` puts the ringshm package on the
    include path, so a program can use the library's own atomic.h and futex.h
    (from libringshm/src in a checkout, or the copy in the package's include
    directory). ``link_library`` builds it against the package's libringshm
    (ringshm.h and libringshm.a).

    Returns (path of the executable, None) or (None, why not)."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        return None, "no C compiler (cc) on PATH"
    library: list[str] = []
    if link_library:
        found, why = library_flags()
        if found is None:
            return None, why
        library = found
    directory = tempfile.mkdtemp(prefix="ringshm-bench-c-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    source = os.path.join(directory, source_name)
    executable = os.path.join(directory, source_name.rsplit(".", 1)[0])
    with open(source, "w") as out:
        out.write(resources.files(__package__).joinpath(source_name).read_text())
    flags = [f"-I{d}" for d in core_header_dirs()] if include_core_headers else []
    try:
        done = subprocess.run([compiler, "-O2", *flags, "-o", executable, source, *library,
                               "-lpthread"],
                              check=False, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{compiler} failed: {exc}"
    if done.returncode != 0:
        return None, f"{compiler} failed: {done.stderr.strip()[:200]}"
    return executable, None


def compile_cring() -> tuple[Optional[str], Optional[str]]:
    """The reference ring: (path of the executable, None) or (None, why not)."""
    return compile_program("cring.c")


def run_program(executable: Optional[str], why: Optional[str], args: list[Any],
                timeout: float) -> dict[str, Any]:
    """Run a compiled bench program with `args`; its JSON report."""
    if executable is None:
        raise Unsupported(why)
    done = subprocess.run([executable, *map(str, args)], check=False, capture_output=True,
                          text=True, timeout=timeout)
    if done.returncode != 0:
        name = os.path.basename(executable)
        raise RuntimeError(f"{name} {' '.join(map(str, args))}: {done.stderr.strip()}"
                           f"{done.stdout.strip()}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def run_cring(args: list[Any], timeout: float) -> dict[str, Any]:
    """Run the reference ring with `args`; its JSON report."""
    return run_program(*compile_cring(), args, timeout)


class CRing(Transport):
    key = "c-ring"
    label = "C reference ring (SPSC spin)"
    max_producers = 1
    max_consumers = 1
    external = True

    def missing(self) -> Optional[str]:
        return compile_cring()[1]

    def throughput(self, size: int, capacity: int, seconds: float, timeout: float
                   ) -> dict[str, Any]:
        """One run: {"sent", "received", "received_bytes", "seconds"}."""
        return run_cring(["throughput", size, capacity, seconds], timeout)

    def round_trips(self, size: int, count: int, warmup: int, timeout: float
                    ) -> dict[str, Any]:
        """One ping-pong run: {"count", "received", "p50_us", "p99_us", ...}."""
        return run_cring(["pingpong", size, count, warmup], timeout)


class CRingBatch(CRing):
    """The reference ring, batched as put_many/get_many are: batch_for(size)
    records and one store of the head; the consumer takes what it sees (at
    most 1024 messages, 256 KiB) and stores the tail once."""

    key = "c-ring-batch"
    label = "C reference ring, batched"
    pingpong = False

    def throughput(self, size: int, capacity: int, seconds: float, timeout: float
                   ) -> dict[str, Any]:
        return run_cring(["batch", size, capacity, seconds, batch_for(size)], timeout)


TRANSPORTS = (CRing(), CRingBatch())
