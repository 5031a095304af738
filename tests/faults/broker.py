"""A Mosquitto that belongs to one test: started on a free port, killed with SIGKILL by its own
PID, restarted on the same port. Never touches the machine's shared broker, never kills by name.

Why the same port: the API and the gateways hold the broker's address in their configuration
and reconnect to it; a broker that came back elsewhere would test nothing. Why a port below the
kernel's ephemeral range: while the broker is down its port is free, and an ephemeral port could
meanwhile be handed to some outgoing connection on the machine, so the restart could not bind.
"""

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from citykey_protocol.transport import BrokerAddress

START_WAIT_S = 5.0
_PORT_RANGE = (20000, 32000)
"""Below Linux's default ephemeral range (32768-60999), see the module docstring."""


def _mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if Path(p).exists()), None
    )
    if found is None:
        raise RuntimeError("mosquitto is not installed (Debian/Ubuntu: apt-get install mosquitto)")
    return found


def _pick_port() -> int:
    for _ in range(200):
        port = random.randint(*_PORT_RANGE)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port found for the test broker")


class TestBroker:
    """One mosquitto process at a time on a fixed loopback port: TCP_NODELAY, anonymous,
    persistence off (a SIGKILL loses every retained message and queued packet, the harshest
    restart there is)."""

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self._binary = _mosquitto_binary()
        self.port = _pick_port()
        self._dir = Path(tempfile.mkdtemp(prefix="citykey-faults-mqtt-"))
        self._config = self._dir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence false",
            "set_tcp_nodelay true",
            "max_queued_messages 10000",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to a user that cannot read our files
        self._config.write_text("\n".join(lines) + "\n")
        self._log = self._dir / "mosquitto.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.kills = 0
        self.starts = 0

    @property
    def address(self) -> BrokerAddress:
        return BrokerAddress("127.0.0.1", self.port)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start mosquitto on the broker's port and wait until it accepts connections."""
        assert not self.running, "already running"
        deadline = time.monotonic() + START_WAIT_S
        while True:
            with self._log.open("ab") as log:
                self.process = subprocess.Popen(
                    [self._binary, "-c", str(self._config)], stdout=log, stderr=log
                )
            if self._wait_listening(deadline):
                self.starts += 1
                return
            # It exited (e.g. the port was still held); try again until the deadline.
            if time.monotonic() >= deadline:
                raise RuntimeError(f"mosquitto did not start:\n{self._log.read_text()[-2000:]}")
            time.sleep(0.05)

    def _wait_listening(self, deadline: float) -> bool:
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return True
            time.sleep(0.02)
        return False

    def kill(self) -> None:
        """SIGKILL the broker process this object started (by its PID) and reap it."""
        assert self.process is not None
        assert self.running, "not running"
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=5)
        self.kills += 1

    def close(self) -> None:
        """Stop the broker if it runs and remove its files."""
        if self.running:
            assert self.process is not None
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        shutil.rmtree(self._dir, ignore_errors=True)
