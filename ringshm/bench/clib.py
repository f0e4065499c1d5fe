"""The C API of libringshm (clib.c, linked with the library this package
ships): C to C beside the C reference ring, and C to Python both ways.

C to C (``c-lib``, ``c-lib-batch``) runs as cring does: one program, an
anonymous ring, a forked consumer. C to Python (``c-lib-to-py``,
``py-to-c-lib``): the bench makes a named ring, the C side is clib.c
(``produce`` / ``consume``) and the Python side a forked child with
``Ring.open``; the producer shuts the ring down when its time is up, and
the consumer's clock runs from its first message to the end of the drain.
Without a compiler or the shipped library the rows are skipped with a note.
"""

from __future__ import annotations

import json
import multiprocessing
import subprocess
from time import perf_counter
from typing import TYPE_CHECKING, Any, Optional

from .cref import compile_program, run_program
from .transport import Transport, Unsupported, batch_for, check_every

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

_fork = multiprocessing.get_context("fork")


def compile_clib() -> tuple[Optional[str], Optional[str]]:
    """clib.c against the package's libringshm: (executable, None) or (None, why not)."""
    return compile_program("clib.c", link_library=True)


def run_clib(args: list[Any], timeout: float) -> dict[str, Any]:
    return run_program(*compile_clib(), args, timeout)


class CLib(Transport):
    key = "c-lib"
    label = "libringshm C rs_put/rs_get"
    max_producers = 1
    max_consumers = 1
    external = True

    def missing(self) -> Optional[str]:
        return compile_clib()[1]

    def throughput(self, size: int, capacity: int, seconds: float, timeout: float
                   ) -> dict[str, Any]:
        return run_clib(["throughput", size, capacity, seconds], timeout)

    def round_trips(self, size: int, count: int, warmup: int, timeout: float
                    ) -> dict[str, Any]:
        return run_clib(["pingpong", size, count, warmup], timeout)


class CLibBatch(CLib):
    key = "c-lib-batch"
    label = "libringshm C put_many/get_many"
    pingpong = False
    counterpart = "ringshm-batch"

    def throughput(self, size: int, capacity: int, seconds: float, timeout: float
                   ) -> dict[str, Any]:
        return run_clib(["batch", size, capacity, seconds, batch_for(size)], timeout)


def _python_consumer(name: str, out: Connection) -> None:
    """Ring.get until ShutDown; reports (received, bytes, seconds from the
    first message)."""
    from ringshm import Ring, ShutDown
    ring = Ring.open(name)
    get = ring.get
    received = nbytes = 0
    start = 0.0
    try:
        while True:
            try:
                message = get()
            except ShutDown:
                break
            if not received:
                start = perf_counter()
            received += 1
            nbytes += len(message)
        out.send((received, nbytes, perf_counter() - start))
    finally:
        ring.close()


def _python_producer(name: str, size: int, seconds: float, out: Connection) -> None:
    """Ring.put for `seconds`, then shutdown(); reports the count sent."""
    from ringshm import Ring
    ring = Ring.open(name)
    put, message, every = ring.put, b"x" * size, check_every(size)
    sent = 0
    stop_at = perf_counter() + seconds
    try:
        while True:
            for _ in range(every):
                put(message)
            sent += every
            if perf_counter() >= stop_at:
                break
        ring.shutdown()
        out.send(sent)
    finally:
        ring.close()


class CToPython(CLib):
    """A C producer (rs_put) and a Python consumer (Ring.get)."""

    key = "c-lib-to-py"
    label = "C rs_put → Python Ring.get"
    pingpong = False

    def round_trips(self, size: int, count: int, warmup: int, timeout: float
                    ) -> dict[str, Any]:
        raise Unsupported("throughput only")

    def throughput(self, size: int, capacity: int, seconds: float, timeout: float
                   ) -> dict[str, Any]:
        from ringshm import Ring
        executable, why = compile_clib()
        if executable is None:
            raise Unsupported(why)
        ring = Ring.create(capacity=capacity)
        name = ring.name
        assert name is not None   # a named ring: the C side opens it by name
        reports, child_end = _fork.Pipe(duplex=False)
        python = _fork.Process(target=self._python_side, daemon=True,
                               args=(name, size, seconds, child_end))
        try:
            python.start()
            child_end.close()
            c_side = subprocess.run([executable, *self._c_args(name, size, seconds)],
                                    capture_output=True, text=True, timeout=timeout)
            if c_side.returncode != 0:
                ring.shutdown()
                raise RuntimeError(f"clib: {c_side.stderr.strip()}")
            if not reports.poll(timeout):
                raise RuntimeError("the Python side did not report")
            return self._result(json.loads(c_side.stdout), reports.recv())
        finally:
            python.join(5)
            if python.is_alive():
                python.kill()
                python.join()
            reports.close()
            ring.close()

    def _python_side(self, name: str, size: int, seconds: float, out: Connection) -> None:
        _python_consumer(name, out)

    def _c_args(self, name: str, size: int, seconds: float) -> list[str]:
        return ["produce", name, str(size), str(seconds)]

    def _result(self, c_report: dict[str, Any], python_report: Any) -> dict[str, Any]:
        received, nbytes, elapsed = python_report
        return {"sent": c_report["sent"], "received": received, "received_bytes": nbytes,
                "seconds": elapsed}


class PythonToC(CToPython):
    """A Python producer (Ring.put) and a C consumer (rs_get)."""

    key = "py-to-c-lib"
    label = "Python Ring.put → C rs_get"

    def _python_side(self, name: str, size: int, seconds: float, out: Connection) -> None:
        _python_producer(name, size, seconds, out)

    def _c_args(self, name: str, size: int, seconds: float) -> list[str]:
        return ["consume", name]

    def _result(self, c_report: dict[str, Any], python_report: Any) -> dict[str, Any]:
        return {"sent": python_report, "received": c_report["received"],
                "received_bytes": c_report["received_bytes"], "seconds": c_report["seconds"]}


TRANSPORTS = (CLib(), CLibBatch(), CToPython(), PythonToC())
