"""A real mosquitto with the dynamic security plugin, started by the tests, and MQTT probes.

The broker runs a copy of deploy/mosquitto/mosquitto-dynsec.conf in which only the listener
(a free loopback port), the plugin's path on this machine and the file locations are
rewritten; its plugin file is written by api/broker_accounts/bootstrap.py, as in the compose
stack. It is stopped by its own PID.
"""

import asyncio
import contextlib
import glob
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import pytest

from api.broker_accounts.acl import ADMIN_USER, API_USER, HEALTHCHECK_USER
from api.broker_accounts.bootstrap import build_config, write_new
from citykey_protocol.transport import BrokerAddress

REPO = Path(__file__).resolve().parents[2]
SHIPPED_CONF = REPO / "deploy" / "mosquitto" / "mosquitto-dynsec.conf"
PLUGIN_GLOBS = (
    "/usr/lib/*/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
)
WAIT_S = 5.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _plugin() -> str:
    for pattern in PLUGIN_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    pytest.fail(
        "mosquitto_dynamic_security.so not found; install mosquitto 2 (Debian/Ubuntu: "
        "apt-get install mosquitto)",
        pytrace=False,
    )


def config_for_test(shipped: str, port: int, work: Path, plugin: str) -> str:
    """The shipped config with only the listener, plugin path and file locations replaced."""
    replacements = {
        "listener": f"listener {port} 127.0.0.1",
        "plugin": f"plugin {plugin}",
        "plugin_opt_config_file": f"plugin_opt_config_file {work / 'dynamic-security.json'}",
        "persistence_location": f"persistence_location {work / 'data'}/",
    }
    seen = dict.fromkeys(replacements, 0)
    lines = []
    for line in shipped.splitlines():
        key = line.split(maxsplit=1)[0] if line.strip() else ""
        if key in replacements:
            seen[key] += 1
            lines.append(replacements[key])
        else:
            lines.append(line)
    for key, count in seen.items():
        assert count == 1, f"mosquitto-dynsec.conf should set {key} once, sets it {count} times"
    if os.geteuid() == 0:
        lines.append("user root")  # stay root: a dropped user could not write the temp files
    return "\n".join(lines) + "\n"


class DynsecMosquitto:
    """mosquitto + the dynamic security plugin on a free loopback port."""

    def __init__(self, work: Path) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            pytest.fail("mosquitto is not installed", pytrace=False)
        self.work = work
        (work / "data").mkdir(parents=True, exist_ok=True)
        self.passwords = {
            user: secrets.token_urlsafe(18) for user in (ADMIN_USER, API_USER, HEALTHCHECK_USER)
        }
        config = build_config(
            admin_password=self.passwords[ADMIN_USER],
            api_password=self.passwords[API_USER],
            healthcheck_password=self.passwords[HEALTHCHECK_USER],
        )
        assert write_new(work / "dynamic-security.json", config)
        self.port = _free_port()
        conf = work / "mosquitto.conf"
        conf.write_text(config_for_test(SHIPPED_CONF.read_text(), self.port, work, _plugin()))
        self.log = work / "mosquitto.log"
        with self.log.open("wb") as log_file:
            self.process = subprocess.Popen(
                [binary, "-c", str(conf)], stdout=log_file, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"mosquitto exited:\n{self.log.read_text()}", pytrace=False)
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"mosquitto did not listen:\n{self.log.read_text()}", pytrace=False)

    def address(self, user: str | None = None, password: str | None = None) -> BrokerAddress:
        """A login as ``user`` (with its password unless one is given); None: anonymous."""
        if user is not None and password is None:
            password = self.passwords[user]
        return BrokerAddress("127.0.0.1", self.port, user, password)

    def url(self, user: str) -> str:
        return f"mqtt://{user}:{self.passwords[user]}@127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stop this broker (by its own PID)."""
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


async def connect_result(address: BrokerAddress, client_id: str) -> str:
    """``"accepted"``, or the broker's reason for refusing the connection."""
    try:
        async with address.client(client_id, keepalive=10):
            return "accepted"
    except aiomqtt.MqttCodeError as exc:
        return f"refused ({exc.rc})"
    except aiomqtt.MqttError as exc:
        return f"refused ({exc})"


@dataclass
class Probe:
    """A connected MQTT client that records what it receives and when it was disconnected."""

    client: aiomqtt.Client
    received: list[tuple[str, bytes]] = field(default_factory=list)
    disconnected_at: float | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def subscribe(self, topic: str) -> bool:
        """True when the broker granted the subscription."""
        reasons = await self.client.subscribe(topic, qos=1)
        return all(not getattr(r, "is_failure", r == 128) for r in reasons)

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        await self.client.publish(topic, payload, qos=1, retain=retain)

    async def wait_for(self, topic: str, payload: bytes, timeout: float = WAIT_S) -> None:
        """Wait until ``(topic, payload)`` has arrived."""
        async with asyncio.timeout(timeout):
            while (topic, payload) not in self.received:
                self.arrived.clear()
                await self.arrived.wait()

    async def quiet(self, seconds: float = 0.3) -> list[tuple[str, bytes]]:
        """Everything received after waiting ``seconds`` more."""
        await asyncio.sleep(seconds)
        return list(self.received)

    async def _read(self) -> None:
        try:
            async for message in self.client.messages:
                payload = message.payload
                assert isinstance(payload, bytes | bytearray)
                self.received.append((message.topic.value, bytes(payload)))
                self.arrived.set()
        except aiomqtt.MqttError:
            self.disconnected_at = time.perf_counter()
            self.arrived.set()


@contextlib.asynccontextmanager
async def probe(address: BrokerAddress, client_id: str) -> AsyncIterator[Probe]:
    """A connected Probe; raises aiomqtt.MqttCodeError when the broker refuses it."""
    client = address.client(client_id, keepalive=10)
    await client.__aenter__()
    connected = Probe(client)
    reader = asyncio.create_task(connected._read())
    try:
        yield connected
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        with contextlib.suppress(aiomqtt.MqttError):  # may have been disconnected already
            await client.__aexit__(None, None, None)
