"""The shipped Mosquitto configuration and ACL, checked against a real mosquitto.

A temporary copy of deploy/mosquitto/mosquitto.conf is started on a free loopback port, with
the shipped ACL file and a password file made by mosquitto_passwd. Only the listener, the file
locations and the persistence directory are rewritten (and, when the tests run as root,
mosquitto is told to stay root instead of dropping to a "mosquitto" user that could not read
the temporary files); every other line runs as shipped.
Mosquitto must be installed (CI installs it): without it these tests fail, they do not skip.
"""

import contextlib
import os
import queue
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

REPO = Path(__file__).resolve().parents[2]
MOSQUITTO_DIR = REPO / "deploy" / "mosquitto"

API_USER = "citykey-api"
HEALTHCHECK_USER = "healthcheck"
GATEWAY_A = "sim-gw-0001"
GATEWAY_B = "sim-gw-0002"
PASSWORDS = {
    API_USER: "api-test-password",
    HEALTHCHECK_USER: "healthcheck-test-password",
    GATEWAY_A: "gateway-a-test-password",
    GATEWAY_B: "gateway-b-test-password",
}

WAIT_S = 5.0
"""Upper bound of every single wait for the broker."""
QUIET_S = 0.3
"""How long to keep listening for a message that must not arrive, after a later one did."""

pytestmark = pytest.mark.timeout(30)


def _find_tool(name: str) -> str:
    found = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None
    )
    if found is None:
        pytest.fail(
            f"{name} is not installed; these tests need the real Mosquitto broker "
            "(Debian/Ubuntu: apt-get install mosquitto)",
            pytrace=False,
        )
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _test_config(shipped: str, port: int, work: Path) -> str:
    """The shipped config with only listener, file locations and data directory replaced."""
    replacements = {
        "listener": f"listener {port} 127.0.0.1",
        "password_file": f"password_file {work / 'passwords'}",
        "acl_file": f"acl_file {work / 'acl'}",
        "persistence_location": f"persistence_location {work / 'data'}/",
    }
    seen: dict[str, int] = dict.fromkeys(replacements, 0)
    lines = []
    for line in shipped.splitlines():
        key = line.split(maxsplit=1)[0] if line.strip() else ""
        if key in replacements:
            seen[key] += 1
            lines.append(replacements[key])
        else:
            lines.append(line)
    for key, count in seen.items():
        assert count == 1, f"mosquitto.conf should set {key} exactly once, sets it {count} times"
    if os.geteuid() == 0:
        lines.append("user root")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Broker:
    port: int
    log: Path


def _wait_for_port(port: int, process: "subprocess.Popen[bytes]", log: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"mosquitto exited at start-up:\n{log.read_text()}", pytrace=False)
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    pytest.fail(f"mosquitto did not listen on port {port}:\n{log.read_text()}", pytrace=False)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    mosquitto = _find_tool("mosquitto")
    mosquitto_passwd = _find_tool("mosquitto_passwd")
    work = tmp_path_factory.mktemp("mosquitto")
    (work / "data").mkdir()
    passwords = work / "passwords"
    passwords.touch(mode=0o600)
    for user, password in PASSWORDS.items():
        subprocess.run(
            [mosquitto_passwd, "-b", str(passwords), user, password],
            check=True,
            capture_output=True,
            timeout=10,
        )
    shutil.copyfile(MOSQUITTO_DIR / "acl", work / "acl")
    port = _free_port()
    conf = work / "mosquitto.conf"
    conf.write_text(_test_config((MOSQUITTO_DIR / "mosquitto.conf").read_text(), port, work))
    log = work / "mosquitto.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [mosquitto, "-c", str(conf)], stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        _wait_for_port(port, process, log)
        yield Broker(port, log)
    finally:
        process.terminate()  # this process only, by its PID
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


class Client:
    """A paho-mqtt client (MQTT 3.1.1, like citykey) with blocking, bounded helpers."""

    def __init__(self, broker: Broker, user: str | None, *, will_topic: str | None = None):
        self.user = user
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-{user or 'anonymous'}-{time.monotonic_ns()}",
            protocol=mqtt.MQTTv311,
        )
        if user is not None:
            self._client.username_pw_set(user, PASSWORDS[user])
        if will_topic is not None:
            self._client.will_set(will_topic, b'{"online":false}', qos=1, retain=True)
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._connack: queue.Queue[ReasonCode] = queue.Queue()
        self._subacks: queue.Queue[list[ReasonCode]] = queue.Queue()
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._broker = broker

    def _on_connect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        self._connack.put(reason)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.messages.put((message.topic, bytes(message.payload)))

    def _on_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _mid: int,
        reasons: list[ReasonCode],
        _props: Properties | None,
    ) -> None:
        self._subacks.put(reasons)

    def connect(self) -> ReasonCode:
        """Connect and return the broker's CONNACK reason (stops the loop on a refusal)."""
        self._client.connect("127.0.0.1", self._broker.port, keepalive=10)
        self._client.loop_start()
        try:
            reason = self._connack.get(timeout=WAIT_S)
        except queue.Empty:
            self.close()
            pytest.fail(f"no CONNACK for {self.user} within {WAIT_S}s", pytrace=False)
        if reason.is_failure:
            self.close()
        return reason

    def subscribe(self, topic: str) -> list[ReasonCode]:
        self._client.subscribe(topic, qos=1)
        return self._subacks.get(timeout=WAIT_S)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=WAIT_S)
        assert info.is_published(), f"{self.user}: publish to {topic} not acknowledged"

    def next_message(self, timeout: float = WAIT_S) -> tuple[str, bytes]:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"{self.user} received nothing within {timeout}s", pytrace=False)

    def drain(self, quiet: float = QUIET_S) -> list[tuple[str, bytes]]:
        """Everything that arrives within ``quiet`` seconds."""
        received = []
        deadline = time.monotonic() + quiet
        while (left := deadline - time.monotonic()) > 0:
            try:
                received.append(self.messages.get(timeout=left))
            except queue.Empty:
                break
        return received

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def clients(broker: Broker) -> Iterator[dict[str, Client]]:
    """Connected clients by user: the API, gateway A and gateway B (with its status as will)."""
    made: dict[str, Client] = {}
    try:
        for user in (API_USER, GATEWAY_A, GATEWAY_B):
            client = Client(broker, user, will_topic=None if user == API_USER else _status(user))
            reason = client.connect()
            assert not reason.is_failure, f"{user} could not connect: {reason}"
            made[user] = client
        yield made
    finally:
        for client in made.values():
            client.close()


def _cmd(gateway: str) -> str:
    return f"citykey/v1/gw/{gateway}/cmd"


def _status(gateway: str) -> str:
    return f"citykey/v1/gw/{gateway}/status"


def _granted(reasons: list[ReasonCode]) -> bool:
    return all(not reason.is_failure for reason in reasons)


def test_anonymous_client_is_refused(broker: Broker) -> None:
    reason = Client(broker, None).connect()
    assert reason.is_failure, "an anonymous client was let in"


def test_wrong_password_is_refused(broker: Broker) -> None:
    client = Client(broker, GATEWAY_A)
    client._client.username_pw_set(GATEWAY_A, "not-the-password")
    assert client.connect().is_failure, "a wrong password was accepted"


def test_gateway_receives_its_own_commands(clients: dict[str, Client]) -> None:
    api, gateway = clients[API_USER], clients[GATEWAY_A]
    assert _granted(gateway.subscribe(_cmd(GATEWAY_A)))
    api.publish(_cmd(GATEWAY_A), b'{"type":"unlock","command_id":"c1"}')
    assert gateway.next_message() == (_cmd(GATEWAY_A), b'{"type":"unlock","command_id":"c1"}')


def test_gateway_hears_nothing_of_another_gateway(clients: dict[str, Client]) -> None:
    api, gateway, other = clients[API_USER], clients[GATEWAY_A], clients[GATEWAY_B]
    assert _granted(gateway.subscribe(_cmd(GATEWAY_A)))
    gateway.subscribe("#")  # may be granted or refused; either way nothing foreign may arrive
    gateway.subscribe(_cmd(GATEWAY_B))
    api.publish(_cmd(GATEWAY_B), b"for gateway B only")
    other.publish(_status(GATEWAY_B), b'{"online":true}')
    # A later command for A marks the point by which the foreign messages would have arrived.
    api.publish(_cmd(GATEWAY_A), b"marker")
    received = [gateway.next_message()]
    received += gateway.drain()
    assert (_cmd(GATEWAY_A), b"marker") in received
    foreign = [(topic, payload) for topic, payload in received if GATEWAY_B in topic]
    assert foreign == [], f"gateway A received another gateway's traffic: {foreign}"


def test_api_receives_gateway_status_acks_and_events(clients: dict[str, Client]) -> None:
    api, gateway = clients[API_USER], clients[GATEWAY_A]
    for topic in ("citykey/v1/gw/+/status", "citykey/v1/gw/+/event", "citykey/v1/gw/+/ack/api-1"):
        assert _granted(api.subscribe(topic)), f"the API may not subscribe to {topic}"
    base = f"citykey/v1/gw/{GATEWAY_A}"
    expected = [
        (f"{base}/status", b'{"online":true}'),
        (f"{base}/event", b'{"kind":"relocked"}'),
        (f"{base}/ack/api-1", b'{"result":"unlocked"}'),
    ]
    for topic, payload in expected:
        gateway.publish(topic, payload, retain=topic.endswith("/status"))
    received = [api.next_message() for _ in expected]
    assert sorted(received) == sorted(expected)
    gateway.publish(f"{base}/status", b"", retain=True)  # clear the retained status


def test_gateway_cannot_forge_another_gateways_traffic(clients: dict[str, Client]) -> None:
    api, gateway = clients[API_USER], clients[GATEWAY_A]
    assert _granted(api.subscribe("citykey/v1/gw/+/status"))
    assert _granted(api.subscribe("citykey/v1/gw/+/ack/+"))
    api.drain()  # retained status from earlier tests, if any
    gateway.publish(_status(GATEWAY_B), b'{"online":true,"forged":true}', retain=True)
    gateway.publish(f"citykey/v1/gw/{GATEWAY_B}/ack/api-1", b'{"forged":true}')
    gateway.publish(_status(GATEWAY_A), b'{"online":true}', retain=True)  # the marker
    received = [api.next_message(), *api.drain()]
    assert received == [(_status(GATEWAY_A), b'{"online":true}')]
    gateway.publish(_status(GATEWAY_A), b"", retain=True)


def test_gateway_cannot_send_commands(clients: dict[str, Client]) -> None:
    gateway, other = clients[GATEWAY_A], clients[GATEWAY_B]
    api = clients[API_USER]
    assert _granted(other.subscribe(_cmd(GATEWAY_B)))
    gateway.publish(_cmd(GATEWAY_B), b"forged command")
    api.publish(_cmd(GATEWAY_B), b"marker")
    received = [other.next_message(), *other.drain()]
    assert received == [(_cmd(GATEWAY_B), b"marker")]


def test_healthcheck_user_reads_broker_uptime(broker: Broker) -> None:
    client = Client(broker, HEALTHCHECK_USER)
    assert not client.connect().is_failure
    try:
        assert _granted(client.subscribe("$SYS/broker/uptime"))
        topic, _ = client.next_message(timeout=15)  # $SYS is published every 10 s, retained
        assert topic == "$SYS/broker/uptime"
    finally:
        client.close()


def test_key_set_goes_from_api_to_gateways_only(clients: dict[str, Client]) -> None:
    api, gateway, other = clients[API_USER], clients[GATEWAY_A], clients[GATEWAY_B]
    keys = "citykey/v1/keys"
    assert _granted(gateway.subscribe(keys))
    gateway.publish(keys, b'{"keys":["forged"]}', retain=True)
    api.publish(keys, b'{"keys":[]}', retain=True)
    assert [gateway.next_message(), *gateway.drain()] == [(keys, b'{"keys":[]}')]
    assert _granted(other.subscribe(keys))
    assert other.next_message() == (keys, b'{"keys":[]}')  # retained
    api.publish(keys, b"", retain=True)


def test_mode_goes_from_api_to_its_gateway_only(clients: dict[str, Client]) -> None:
    api, gateway, other = clients[API_USER], clients[GATEWAY_A], clients[GATEWAY_B]
    own, foreign = f"citykey/v1/gw/{GATEWAY_A}/mode", f"citykey/v1/gw/{GATEWAY_B}/mode"
    assert _granted(gateway.subscribe(own))
    gateway.subscribe(foreign)
    other.publish(own, b"forged-by-another-gateway", retain=True)
    gateway.publish(own, b"forged-by-itself", retain=True)
    api.publish(foreign, b"for-b", retain=True)
    api.publish(own, b"signed-mode", retain=True)
    assert [gateway.next_message(), *gateway.drain()] == [(own, b"signed-mode")]
    api.publish(own, b"", retain=True)
    api.publish(foreign, b"", retain=True)


def test_api_clears_a_removed_gateways_retained_status(clients: dict[str, Client]) -> None:
    api, gateway = clients[API_USER], clients[GATEWAY_A]
    gateway.publish(_status(GATEWAY_A), b'{"online":false}', retain=True)
    api.publish(_status(GATEWAY_A), b"", retain=True)  # what deleting the gateway does
    late = Client(gateway._broker, API_USER)
    assert not late.connect().is_failure
    try:
        assert _granted(late.subscribe(_status(GATEWAY_A)))
        assert late.drain() == [], "the retained status survived the API's clear"
    finally:
        late.close()


def test_revocation_list_goes_from_api_to_its_gateway_only(clients: dict[str, Client]) -> None:
    api, gateway, other = clients[API_USER], clients[GATEWAY_A], clients[GATEWAY_B]
    own = f"citykey/v1/gw/{GATEWAY_A}/revocations"
    foreign = f"citykey/v1/gw/{GATEWAY_B}/revocations"
    assert _granted(gateway.subscribe(own))
    gateway.subscribe(foreign)
    other.publish(own, b"forged-by-another-gateway", retain=True)
    gateway.publish(own, b"forged-by-itself", retain=True)  # e.g. to empty its own list
    api.publish(foreign, b"for-b", retain=True)
    api.publish(own, b"signed-list", retain=True)
    assert [gateway.next_message(), *gateway.drain()] == [(own, b"signed-list")]
    api.publish(own, b"", retain=True)
    api.publish(foreign, b"", retain=True)


def test_event_acks_go_from_the_api_to_their_gateway_only(clients: dict[str, Client]) -> None:
    api, gateway, other = clients[API_USER], clients[GATEWAY_A], clients[GATEWAY_B]
    own, foreign = f"citykey/v1/gw/{GATEWAY_A}/evack", f"citykey/v1/gw/{GATEWAY_B}/evack"
    assert _granted(gateway.subscribe(own))
    gateway.subscribe(foreign)
    other.publish(own, b"forged-by-another-gateway")
    api.publish(foreign, b"for-b")
    api.publish(own, b"event-ack")
    assert [gateway.next_message(), *gateway.drain()] == [(own, b"event-ack")]
