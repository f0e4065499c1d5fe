"""`await get()` on many idle queues and one busy one: messages/s of the
busy queue and the threads the waits cost, for the current ringshm.asyncio
(one helper thread per event loop, wait_many) and for 0.2's design (two
waiter threads per object), loaded from git (OLD_DESIGN below).

One event loop: IDLE coroutines each await get() on a queue of their own
that never receives anything, while one coroutine awaits get() on a busy
queue fed by a forked process (a plain blocking Queue.put loop of small
ints).  Best of REPEATS runs per case; threads are counted while every
wait is armed (threading.active_count() beyond the loop's own thread, and
the process's OS threads, which include wait_many's helpers past 127 rings);
CPU is this process's CPU time per second while the busy queue runs, and
during one second before it with only the idle waits (least of the runs).

Run: .venv/bin/python bench/async_many.py [MESSAGES [IDLE,IDLE... [REPEATS]]]
     (default 200000 0,100,1000 5)
"""

from __future__ import annotations

import asyncio
import importlib.util
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from types import ModuleType
from typing import Any

import ringshm.asyncio as new_module
from ringshm import Queue

fork = multiprocessing.get_context("fork")


# The last commit whose ringshm.asyncio gave each object its own waiter
# threads (0.2's design): the comparison loads that file from git.
OLD_DESIGN = "59ab811"


def old_module() -> ModuleType:
    """ringshm/asyncio.py as of OLD_DESIGN, imported under another name
    (it runs on today's core: it needs only Ring._wait_data/_wait_room).

    Raises:
        RuntimeError: not a git checkout holding that commit.
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(["git", "-C", root, "show", f"{OLD_DESIGN}:ringshm/asyncio.py"],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"git cannot show {OLD_DESIGN}'s ringshm/asyncio.py: "
                           f"{done.stderr.strip()}")
    directory = tempfile.mkdtemp(prefix="ringshm-old-asyncio-")
    path = os.path.join(directory, "ringshm_asyncio_per_object.py")
    with open(path, "w") as out:
        out.write(done.stdout)
    spec = importlib.util.spec_from_file_location("ringshm_asyncio_per_object", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    shutil.rmtree(directory, ignore_errors=True)
    return module


def os_threads() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return -1


def produce(q: Queue[Any], count: int) -> None:
    for i in range(count):
        q.put(i)
    q.put(None)


def one_run(module: ModuleType, idle: int, messages: int) -> dict[str, float]:
    idle_queues = [module.AsyncQueue(capacity=4096) for _ in range(idle)]
    busy = module.AsyncQueue(maxsize=1024, capacity=1 << 16)

    async def main() -> dict[str, float]:
        base, base_os = threading.active_count(), os_threads()
        waits = [asyncio.create_task(q.get()) for q in idle_queues]
        await asyncio.sleep(0.3)   # every idle wait armed
        threads = threading.active_count() - base
        threads_os = os_threads() - base_os
        idle_cpu = time.process_time()
        await asyncio.sleep(1.0)   # what the idle waits cost on their own
        idle_cpu = time.process_time() - idle_cpu
        producer = fork.Process(target=produce, args=(busy.queue, messages))
        cpu = time.process_time()
        start = time.perf_counter()
        producer.start()
        got = 0
        while await busy.get() is not None:
            got += 1
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
        producer.join()
        for w in waits:
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
        assert got == messages
        return {"rate": messages / elapsed, "threads": threads, "threads_os": threads_os,
                "cpu": cpu / elapsed, "idle_cpu": idle_cpu}

    try:
        return asyncio.run(main())
    finally:
        for q in idle_queues + [busy]:
            q.close()


def main() -> None:
    messages = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    idles = [int(n) for n in (sys.argv[2] if len(sys.argv) > 2 else "0,100,1000").split(",")]
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    designs = [("0.2 waiter threads per object", old_module()),
               ("one helper per loop (wait_many)", new_module)]
    print(f"{messages} messages on the busy queue, best of {repeats}")
    print("| design | idle queues | busy queue msg/s | threads (Python) | threads (OS) "
          "| CPU s/s busy | CPU ms/s idle |")
    print("|---|---|---|---|---|---|---|")
    for idle in idles:
        for name, module in designs:
            runs = [one_run(module, idle, messages) for _ in range(repeats)]
            best = max(runs, key=lambda r: r["rate"])
            print(f"| {name} | {idle} | {best['rate'] / 1000:.0f} k | "
                  f"{best['threads']:.0f} | {best['threads_os']:.0f} | {best['cpu']:.2f} | "
                  f"{min(r['idle_cpu'] for r in runs) * 1000:.1f} |",
                  flush=True)
            time.sleep(1.5)   # idle waiter threads end between runs


if __name__ == "__main__":
    main()
