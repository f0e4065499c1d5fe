"""The bench's target verdicts (issue #9's arrays targets): computed from
the records alone, "n/a" when a row was not measured, never a pass from a
row that lost or damaged arrays."""

from ringshm.bench import arrays, targets

FRAME, SMALL = arrays.CASES[0][0], arrays.CASES[1][0]


def array_row(key, case, rate, ok=True):
    return {"key": key, "case": case, "label": key, "skipped": None, "error": None,
            "repeats": [rate], "arrays_per_s": rate, "ok": ok, "lost": 0 if ok else 3,
            "bad": 0}


def mib_row(transport, mb_per_s):
    return {"kind": "throughput", "transport": transport, "size": 1 << 20, "producers": 1,
            "consumers": 1, "skipped": None, "error": None, "mb_per_s": mb_per_s}


def verdicts(array_records, results=()):
    return {name: (value, verdict)
            for name, value, _, verdict, _ in targets.evaluate_arrays(array_records,
                                                                      list(results))}


def test_each_target_is_judged_from_its_rows():
    rows = [array_row("ringshm-queue", FRAME, 1100), array_row("iceoryx2", FRAME, 1000),
            array_row("pyshmem", FRAME, 800), array_row("ringshm-ring", FRAME, 1150),
            array_row("c-ref", FRAME, 1500),
            array_row("ringshm-queue", SMALL, 900), array_row("iceoryx2", SMALL, 1000)]
    got = verdicts(rows, [mib_row("ringshm", 1000), mib_row("ringshm-batch", 960)])
    assert got["frame via Queue, × iceoryx2"] == (1.1, True)
    assert got["frame via Queue, × pyshmem"] == (1.375, False)     # goal 1.5
    assert got["64 KiB float32 via Queue, × iceoryx2"] == (0.9, False)
    assert got["frame via Ring, × iceoryx2"] == (1.15, False)       # goal 1.2
    assert got["1 MiB put_many/get_many, × put/get"] == (0.96, True)
    share, reported = got["frame via Ring, % of C reference"]
    assert abs(share - 100 * 1150 / 1500) < 1e-9 and reported


def test_a_missing_row_is_not_a_pass():
    got = verdicts([array_row("ringshm-queue", FRAME, 1100)])
    assert got["frame via Queue, × iceoryx2"] == (None, None)
    assert got["1 MiB put_many/get_many, × put/get"] == (None, None)
    assert got["frame via Ring, % of C reference"] == (None, None)


def test_a_peer_that_lost_arrays_gives_no_figure():
    # A fast row that dropped arrays must not make a ratio, either way.
    rows = [array_row("ringshm-queue", FRAME, 5000, ok=False), array_row("iceoryx2", FRAME, 1000),
            array_row("ringshm-ring", FRAME, 1300), array_row("c-ref", FRAME, 1500, ok=False)]
    got = verdicts(rows)
    assert got["frame via Queue, × iceoryx2"] == (None, None)
    assert got["frame via Ring, × iceoryx2"] == (1.3, True)
    assert got["frame via Ring, % of C reference"] == (None, None)


def test_the_arrays_table_shows_each_peer_against_the_c_reference():
    rows = [array_row("ringshm-ring", FRAME, 750), array_row("c-ref", FRAME, 1000)]
    for row in rows:
        row.update(gb_per_s=1.0, received=1, sent=1)
    table = arrays.format_table(rows)
    ring_line = next(line for line in table.splitlines() if "ringshm-ring" in line)
    assert "75%" in ring_line and ring_line.endswith("ok")
    c_line = next(line for line in table.splitlines() if "c-ref" in line)
    assert "100%" in c_line and c_line.endswith("count ok")


def c_row(transport, msgs_per_s=None, p50_us=None, kind="throughput"):
    row = {"kind": kind, "transport": transport, "size": 64, "producers": 1, "consumers": 1,
           "skipped": None, "error": None}
    if msgs_per_s is not None:
        row["msgs_per_s"] = msgs_per_s
    if p50_us is not None:
        row["p50_us"] = p50_us
    return row


def test_the_c_library_targets_are_judged_from_their_rows():
    rows = [c_row("c-ring", 100e6), c_row("c-lib", 20e6), c_row("c-ring-batch", 200e6),
            c_row("c-lib-batch", 120e6), c_row("c-lib-to-py", 7e6),
            c_row("c-ring", p50_us=0.1, kind="pingpong"),
            c_row("c-lib", p50_us=0.25, kind="pingpong")]
    got = {name: (value, verdict) for name, value, _, verdict, _ in targets.evaluate_clib(rows)}
    assert got["C→C 64 B rs_put/rs_get, × C ring"] == (0.2, False)         # goal 0.7
    assert got["C→C 64 B put_many/get_many, × batched"] == (0.6, True)     # goal 0.5
    value, verdict = got["C↔C ping-pong p50, × C spin ping-pong"]
    assert abs(value - 2.5) < 1e-9 and verdict is False                    # goal 2
    assert got["C→Python 64 B, M msg/s"] == (7.0, True)
    assert got["Python→C 64 B, M msg/s"] == (None, None)                   # not measured
