"""The project's performance targets (docs/PERFORMANCE.md): messages of
bytes, and arrays; checked against a suite's results.

Each target names the rows it needs; when one of them was not measured (a
short run has no such case, a peer is not installed) the verdict is "n/a",
never a pass.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from . import arrays

MIB = 1 << 20
#: One suite record (JSON-like: see runner.record).
Record = dict[str, Any]
Compare = Callable[[Optional[float], float, str], tuple[Optional[float], str, Optional[bool]]]
#: (target, measured value or None, goal text, True/False/None, unit).
Verdict = tuple[str, Optional[float], str, Optional[bool], str]


def find(results: list[Record], transport: str, size: int, producers: int = 1,
         consumers: int = 1, kind: str = "throughput") -> Optional[Record]:
    """The measured record for this case, or None."""
    for record in results:
        if (record["kind"], record["transport"], record["size"],
                record["producers"], record["consumers"]) == (kind, transport, size,
                                                               producers, consumers):
            return record if not record["skipped"] and not record["error"] else None
    return None


def _field(record: Optional[Record], name: str) -> Optional[float]:
    """record[name] of a measured record (None when it was not measured)."""
    value: Optional[float] = None if record is None else record.get(name)
    return value


def _rate(results: list[Record], transport: str, size: int, producers: int = 1,
          consumers: int = 1) -> Optional[float]:
    record = find(results, transport, size, producers, consumers)
    return _field(record, "msgs_per_s")


def _mbps(results: list[Record], transport: str, size: int) -> Optional[float]:
    record = find(results, transport, size)
    return _field(record, "mb_per_s")


def _p50(results: list[Record], transport: str) -> Optional[float]:
    record = find(results, transport, 64, kind="pingpong")
    return _field(record, "p50_us")


def _ratio(top: Optional[float], bottom: Optional[float]) -> Optional[float]:
    return top / bottom if top and bottom else None


def _at_least(value: Optional[float], goal: float, unit: str
              ) -> tuple[Optional[float], str, Optional[bool]]:
    return value, f"≥ {goal:g}{unit}", None if value is None else value >= goal


def _at_most(value: Optional[float], goal: float, unit: str
             ) -> tuple[Optional[float], str, Optional[bool]]:
    return value, f"≤ {goal:g}{unit}", None if value is None else value <= goal


def evaluate(results: list[Record]) -> list[Verdict]:
    """The targets for messages of bytes ("Targets (messages)")."""
    r = results
    put_get = _rate(r, "ringshm", 64)
    batch = _rate(r, "ringshm-batch", 64)
    c_mbps = _mbps(r, "c-ring", MIB)
    pp = _p50(r, "ringshm")
    rows: list[tuple[str, Optional[float], Compare, float, str]] = [
        ("64 B 1→1 put/get, M msg/s", put_get and put_get / 1e6, _at_least, 4, ""),
        ("  … × pyzmq PUSH/PULL", _ratio(put_get, _rate(r, "zmq", 64)), _at_least, 5, "×"),
        ("  … × faster-fifo put/get", _ratio(put_get, _rate(r, "faster-fifo", 64)),
         _at_least, 15, "×"),
        ("64 B put_many/get_many, M msg/s", batch and batch / 1e6, _at_least, 15, ""),
        ("  … × faster-fifo put_many/get_many",
         _ratio(batch, _rate(r, "faster-fifo-batch", 64)), _at_least, 20, "×"),
        ("1 MiB get(), % of C ring MB/s", _percent(_mbps(r, "ringshm", MIB), c_mbps),
         _at_least, 80, "%"),
        ("1 MiB get_into(), % of C ring MB/s",
         _percent(_mbps(r, "ringshm-get_into", MIB), c_mbps), _at_least, 95, "%"),
        ("1 MiB view(), % of C ring MB/s", _percent(_mbps(r, "ringshm-view", MIB), c_mbps),
         _at_least, 95, "%"),
        ("64 B 4→1 aggregate, % of 1→1",
         _percent(_rate(r, "ringshm", 64, 4, 1), put_get), _at_least, 70, "%"),
        ("ping-pong p50, × C spin ping-pong", _ratio(pp, _p50(r, "c-ring")), _at_most, 3, "×"),
        ("ping-pong p50, × better than pyzmq", _ratio(_p50(r, "zmq"), pp), _at_least, 10, "×"),
    ]
    out = _judge(rows)
    record = find(r, "ringshm", 64, kind="pingpong")
    p99 = _field(record, "p99_us")
    out.append(("ping-pong p99, µs (reported)", p99, "reported", None if p99 is None else True, ""))
    return out


def evaluate_clib(results: list[Record]) -> list[Verdict]:
    """The C API's targets: libringshm from C against the C reference ring
    (per message, batched, ping-pong), and C with Python both ways."""
    r = results
    put_get = _rate(r, "c-lib", 64)
    rows: list[tuple[str, Optional[float], Compare, float, str]] = [
        ("C→C 64 B rs_put/rs_get, × C ring", _ratio(put_get, _rate(r, "c-ring", 64)),
         _at_least, 0.7, "×"),
        ("C→C 64 B put_many/get_many, × batched", _ratio(_rate(r, "c-lib-batch", 64),
                                                        _rate(r, "c-ring-batch", 64)),
         _at_least, 0.5, "×"),
        ("C↔C ping-pong p50, × C spin ping-pong", _ratio(_p50(r, "c-lib"), _p50(r, "c-ring")),
         _at_most, 2, "×"),
    ]
    out = _judge(rows)
    for name, key in (("C→C 64 B rs_put/rs_get, M msg/s", "c-lib"),
                      ("C→Python 64 B, M msg/s", "c-lib-to-py"),
                      ("Python→C 64 B, M msg/s", "py-to-c-lib"),
                      ("  (Python→Python put/get, M msg/s)", "ringshm")):
        rate = _rate(r, key, 64)
        value = None if rate is None else rate / 1e6
        out.append((name, value, "reported", None if value is None else True, ""))
    return out


def _percent(part: Optional[float], whole: Optional[float]) -> Optional[float]:
    ratio = _ratio(part, whole)
    return None if ratio is None else 100 * ratio


def evaluate_arrays(array_records: list[Record], results: list[Record]) -> list[Verdict]:
    """The targets for arrays ("Targets (arrays)"): the arrays workload's rows, and 1 MiB
    put_many/get_many against put/get from the throughput table. The Ring's
    share of the C reference (two copies, no Python) is reported beside."""
    (frame, _, _), (small, _, _) = arrays.CASES

    def ratio(key: str, case: str, peer: str) -> Optional[float]:
        return _ratio(arrays.rate(array_records, key, case),
                      arrays.rate(array_records, peer, case))

    rows: list[tuple[str, Optional[float], Compare, float, str]] = [
        ("frame via Queue, × iceoryx2", ratio("ringshm-queue", frame, "iceoryx2"),
         _at_least, 1.0, "×"),
        ("frame via Queue, × pyshmem", ratio("ringshm-queue", frame, "pyshmem"),
         _at_least, 1.5, "×"),
        ("64 KiB float32 via Queue, × iceoryx2", ratio("ringshm-queue", small, "iceoryx2"),
         _at_least, 1.0, "×"),
        ("frame via Ring, × iceoryx2", ratio("ringshm-ring", frame, "iceoryx2"),
         _at_least, 1.2, "×"),
        ("1 MiB put_many/get_many, × put/get",
         _ratio(_mbps(results, "ringshm-batch", MIB), _mbps(results, "ringshm", MIB)),
         _at_least, 0.95, "×"),
    ]
    out = _judge(rows)
    for name, key, case in (("frame via Ring, % of C reference", "ringshm-ring", frame),
                            ("  … iceoryx2, % of C reference", "iceoryx2", frame)):
        share = _percent(arrays.rate(array_records, key, case),
                         arrays.rate(array_records, arrays.CReference.key, case))
        out.append((name, share, "reported", None if share is None else True, "%"))
    return out


def _judge(rows: list[tuple[str, Optional[float], Compare, float, str]]) -> list[Verdict]:
    out: list[Verdict] = []
    for name, value, compare, goal, unit in rows:
        value, goal_text, verdict = compare(value, goal, unit)
        out.append((name, value, goal_text, verdict, unit))
    return out
