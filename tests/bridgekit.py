"""Tools for the bridge tests: a nats-server with JetStream on a free
loopback port (listening nowhere else), and the bridges as processes of
the ``ringshm bridge`` command that can be SIGKILLed and started again."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

NATS_SERVER = shutil.which("nats-server")


def require_nats_server():
    """Skip when nats-server is missing (.ci/run installs it as root)."""
    if NATS_SERVER is None:
        pytest.skip("nats-server is not installed (apt-get install nats-server; "
                    ".ci/run does it when run as root)")


def free_port():
    """A TCP port of 127.0.0.1 that nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, timeout=15.0, process=None):
    """Until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"nats-server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class NatsServer:
    """``nats-server -js`` on 127.0.0.1 only, its store in `store_dir`; kill()
    and start() again keep the port and the store (a crash and a restart)."""

    def __init__(self, store_dir):
        self.store_dir = str(store_dir)
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            [NATS_SERVER, "-js", "-sd", self.store_dir, "-p", str(self.port),
             "-a", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, process=self.process)
        return self

    def kill(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None


class Bridge:
    """One ``ringshm bridge`` process: `argv` after ``ringshm bridge``."""

    def __init__(self, argv, log_path):
        self.argv = [sys.executable, "-m", "ringshm", "bridge", *argv]
        self.log_path = log_path
        self.process = None
        self.starts = 0

    def start(self):
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=log,
                                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.starts += 1
        return self

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def kill(self):
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait()

    def wait(self, timeout):
        """The exit status, or AssertionError (after killing it) if it runs on."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.argv} did not end in {timeout} s") from None

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()


@pytest.fixture
def nats_server(tmp_path):
    """A started NatsServer, killed at teardown."""
    require_nats_server()
    server = NatsServer(tmp_path / "jetstream").start()
    yield server
    server.kill()
