"""What a Queue's capacity costs 1080p frames (1920x1080x3 uint8, 6.2 MB):
with the default 4 MiB ring every frame is larger than max_message_size
(half the capacity) and travels through a side file in /dev/shm; from
16 MiB on (a frame fits in half the ring) it goes through the ring itself,
64 MiB holding ten.  One producer process, one consumer, --seconds per run,
--rounds rounds with the capacities taken in turn; the median and the best round;
frames/s (the consumer's count over its time to the end marker).

Run: .venv/bin/python bench/queue_frames.py [--seconds S] [--rounds N]
"""

import argparse
import multiprocessing
import statistics
import time

import numpy as np

from ringshm import Queue
from ringshm.queue import DEFAULT_CAPACITY

SHAPE = (1080, 1920, 3)
CAPACITIES = [("default (4 MiB)", DEFAULT_CAPACITY), ("16 MiB", 16 << 20),
              ("32 MiB", 32 << 20), ("64 MiB", 64 << 20)]


def produce(queue: "Queue[object]", seconds: float) -> None:
    frame = np.ones(SHAPE, np.uint8)
    stop_at = time.perf_counter() + seconds
    while time.perf_counter() < stop_at:
        queue.put(frame)
    queue.put(None)


def frames_per_second(capacity: int, seconds: float) -> float:
    ctx = multiprocessing.get_context("fork")
    queue: "Queue[object]" = Queue(capacity=capacity)
    try:
        producer = ctx.Process(target=produce, args=(queue, seconds))
        producer.start()
        frames = 0
        started = time.perf_counter()
        while True:
            frame = queue.get()
            if frame is None:
                break
            if frame.shape != SHAPE or frame[-1, -1, -1] != 1:
                raise RuntimeError(f"a damaged frame: {frame.shape}")
            frames += 1
        elapsed = time.perf_counter() - started
        producer.join()
        return frames / elapsed
    finally:
        queue.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {label: [] for label, _ in CAPACITIES}
    for round_ in range(args.rounds):
        for label, capacity in CAPACITIES:
            rate = frames_per_second(capacity, args.seconds)
            rates[label].append(rate)
            print(f"round {round_ + 1}: Queue(capacity={label}): {rate:,.0f} frames/s",
                  flush=True)
    print(f"{args.rounds} rounds of {args.seconds:g} s, frames/s "
          f"({np.prod(SHAPE) / 1e6:.1f} MB each):   median      best")
    for label, _ in CAPACITIES:
        shown = f"Queue(capacity={label})"
        print(f"  {shown:<32} {statistics.median(rates[label]):>8,.0f}  "
              f"{max(rates[label]):>8,.0f}")


if __name__ == "__main__":
    main()
