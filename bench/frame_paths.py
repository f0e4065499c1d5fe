"""How close each way of moving a 6.2 MB frame comes to the two copies
alone: the C reference ring (memcpy in, memcpy out, no Python), the Ring
driven by a bare Python loop (put / get_into one reused array; reserve() +
view() + np.frombuffer().copy()), and the arrays bench's own Ring and
iceoryx2 peers (stamps, checks, a fresh array per frame). One producer
process, one consumer, 1 s per run, three rounds in turn; frames/s.

Run: .venv/bin/python bench/frame_paths.py
"""

import os
import time

import numpy as np

from ringshm import Ring
from ringshm.bench import arrays

NAME, SHAPE, DTYPE = arrays.CASES[0]
NBYTES = int(np.prod(SHAPE))
SECONDS = 1.0
ROUNDS = 3


def bare_loop(reserve_and_view: bool) -> float:
    """Frames/s through a Ring with nothing but the calls in the loop."""
    ring = Ring.create(capacity=arrays._capacity(NBYTES))
    pid = os.fork()
    if pid == 0:
        source = memoryview(np.ones(NBYTES, np.uint8))
        stop_at = time.perf_counter() + SECONDS
        while time.perf_counter() < stop_at:
            if reserve_and_view:
                with ring.reserve(NBYTES) as space:
                    space[:] = source
            else:
                ring.put(source)
        ring.put(b"")
        os._exit(0)
    frames, mine = 0, np.empty(NBYTES, np.uint8)
    started = time.perf_counter()
    while True:
        if reserve_and_view:
            with ring.view() as message:
                if not len(message):
                    break
                np.frombuffer(message, np.uint8).copy()
        elif not ring.get_into(mine):
            break
        frames += 1
    elapsed = time.perf_counter() - started
    os.waitpid(pid, 0)
    ring.close()
    return frames / elapsed


def bench_peer(peer: arrays.ArrayPeer) -> float:
    result = peer.run(SHAPE, DTYPE, SECONDS)
    if result["bad"] or result["sent"] != result["received"]:
        raise RuntimeError(f"{peer.label}: lost or damaged frames: {result}")
    return float(result["received"] / result["seconds"])


def main() -> None:
    paths = {"C reference (memcpy in, memcpy out)": lambda: bench_peer(arrays.CReference()),
             "Ring, put / get_into a reused array": lambda: bare_loop(False),
             "Ring, reserve() / view() + .copy()": lambda: bare_loop(True),
             "bench peer: ringshm Ring": lambda: bench_peer(arrays.RingshmRaw())}
    if arrays.Iceoryx2().missing() is None:
        paths["bench peer: iceoryx2"] = lambda: bench_peer(arrays.Iceoryx2())
    rates: dict[str, list[float]] = {label: [] for label in paths}
    for _ in range(ROUNDS):
        for label, measure in paths.items():
            rates[label].append(measure())
    print(f"{NAME}, frames/s in {ROUNDS} rounds (% of the C reference in the same round)")
    reference = rates["C reference (memcpy in, memcpy out)"]
    for label, values in rates.items():
        shown = " / ".join(f"{v:,.0f} ({100 * v / c:.0f} %)" for v, c in zip(values, reference))
        print(f"  {label:38} {shown}")


if __name__ == "__main__":
    main()
