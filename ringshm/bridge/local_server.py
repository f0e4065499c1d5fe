"""A throwaway ``nats-server -js`` on a free port of 127.0.0.1, listening
nowhere else: for the tests (tests/bridgekit.py) and the benchmark
(bench/bridge.py).  Not part of the bridges themselves."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from typing import Optional

NATS_SERVER = shutil.which("nats-server")


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15.0,
                  process: Optional[subprocess.Popen[bytes]] = None) -> None:
    """Until something accepts connections on 127.0.0.1:port.

    Raises:
        RuntimeError: `process` exited, or nothing listened within `timeout`.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"nats-server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class NatsServer:
    """``nats-server -js`` on 127.0.0.1 only, its store in `store_dir` (and
    `extra_args` on its command line); kill() and start() again keep the
    port and the store (a crash and a restart).  `jetstream=False`: a plain
    ``nats-server``, without ``-js`` (what the bridges cannot use)."""

    def __init__(self, store_dir: str, extra_args: tuple[str, ...] = (),
                 jetstream: bool = True) -> None:
        self.store_dir = str(store_dir)
        self.extra_args = extra_args   # e.g. the --tls options
        self.jetstream = jetstream
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process: Optional[subprocess.Popen[bytes]] = None

    def start(self) -> NatsServer:
        """Start it and wait until it listens.

        Raises:
            RuntimeError: nats-server is not installed, exited, or did not listen.
        """
        if NATS_SERVER is None:
            raise RuntimeError("nats-server is not installed (apt-get install nats-server)")
        self.process = subprocess.Popen(
            [NATS_SERVER, *(["-js", "-sd", self.store_dir] if self.jetstream else []),
             "-p", str(self.port), "-a", "127.0.0.1", *self.extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, process=self.process)
        return self

    def kill(self) -> None:
        """SIGKILL it (if running) and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None
