"""Tools for the bridge tests: a nats-server with JetStream on a free
loopback port (ringshm/bridge/local_server.py), and the bridges as
processes of the ``ringshm bridge`` command that can be SIGKILLed and
started again."""

import os
import signal
import subprocess
import sys

import pytest

from ringshm.bridge.local_server import NATS_SERVER, NatsServer, free_port  # noqa: F401


def require_nats_server():
    """Skip when nats-server is missing (.ci/run installs it as root)."""
    if NATS_SERVER is None:
        pytest.skip("nats-server is not installed (apt-get install nats-server; "
                    ".ci/run does it when run as root)")


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
