"""``citykey keys ...``: the rotation commands, and their check of what gateways acknowledged
(against this module's own mosquitto, where the test plants retained gateway statuses)."""

import asyncio
import dataclasses
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.cli import app
from api.keys.keyring import KeyState, read_ring_file, write_ring_file
from bench.common import PrivateMosquitto
from citykey_protocol import messages
from citykey_protocol.messages import GatewayStatus
from citykey_protocol.topics import GatewayTopics
from citykey_protocol.transport import BrokerAddress

runner = CliRunner()


@pytest.fixture
def env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, private_mosquitto: PrivateMosquitto
) -> Path:
    key_dir = tmp_path / "keys"
    monkeypatch.setenv("CITYKEY_KEY_DIR", str(key_dir))
    monkeypatch.setenv("CITYKEY_MQTT_URL", private_mosquitto.url)
    return key_dir


def _keys(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["keys", *args])
    return result.exit_code, result.output


def _retain_status(url: str, gateway_id: str, keyset_version: int | None, online: bool) -> None:
    status = GatewayStatus(
        gateway_id=gateway_id, online=online, ts=0.0, keyset_version=keyset_version
    )

    async def publish() -> None:
        async with BrokerAddress.parse(url).client(f"plant-{gateway_id}") as client:
            topic = GatewayTopics(gateway_id).status
            await client.publish(topic, messages.encode(status), qos=1, retain=True)

    asyncio.run(publish())


def _states(key_dir: Path) -> list[str]:
    return [entry.state.value for entry in read_ring_file(key_dir).entries]


def test_a_rotation_step_by_step(env: Path, private_mosquitto: PrivateMosquitto) -> None:
    assert _keys("init")[0] == 0
    code, output = _keys("add-next")
    assert code == 0, output
    assert "added as next (key set v2)" in output

    # An online gateway still on v1 blocks activation: it would refuse the new key's tokens.
    _retain_status(private_mosquitto.url, "gw-lagging", 1, online=True)
    _retain_status(private_mosquitto.url, "gw-current", 2, online=True)
    code, output = _keys("activate")
    assert code == 1
    assert "gw-lagging (v1, online)" in output
    assert "gw-current" not in output
    assert _states(env) == ["active", "next"]

    code, output = _keys("status")
    assert code == 0, output
    assert "generation 2" in output
    assert "gw-current (v2, online)" in output

    _retain_status(private_mosquitto.url, "gw-lagging", 2, online=True)
    code, output = _keys("activate")
    assert code == 0, output
    assert _states(env) == ["retiring", "active"]

    # Not due yet: its last token may still be live.
    code, output = _keys("retire")
    assert code == 0, output
    assert "no retiring key is due yet" in output
    assert _states(env) == ["retiring", "active"]

    # Pretend the old key's tokens expired long ago: its retiring_since moves to 2000.
    ring = read_ring_file(env)
    aged = [
        dataclasses.replace(e, retiring_since=946_684_800.0) if e.state is KeyState.RETIRING else e
        for e in ring.entries
    ]
    write_ring_file(env, dataclasses.replace(ring, entries=tuple(aged)))
    # Every gateway the broker knows of, offline ones included, must trust the new key first:
    # one that is offline now and still on v2 would be stranded by the retirement.
    for gateway_id in ("gw-lagging", "gw-current"):
        _retain_status(private_mosquitto.url, gateway_id, 3, online=True)
    _retain_status(private_mosquitto.url, "gw-offline", 2, online=False)
    code, output = _keys("retire")
    assert code == 1
    assert "gw-offline (v2, offline)" in output
    assert _states(env) == ["retiring", "active"]

    _retain_status(private_mosquitto.url, "gw-offline", 3, online=False)
    code, output = _keys("retire")
    assert code == 0, output
    assert "retired" in output
    assert _states(env) == ["retired", "active"]
    print(f"\nkeys status after the rotation:\n{_keys('status')[1]}")


def test_rotate_with_force_and_no_retire(env: Path) -> None:
    assert _keys("init")[0] == 0
    code, output = _keys("rotate", "--force", "--no-retire")
    assert code == 0, output
    assert "fleet check skipped" in output
    assert "run 'citykey keys retire' after" in output
    assert _states(env) == ["retiring", "active"]
    # Resuming after an interrupted rotation reuses the next key that is already there.
    assert _keys("add-next")[0] == 0
    code, output = _keys("rotate", "--force", "--no-retire")
    assert code == 0, output
    assert "resuming" in output
    assert _states(env) == ["retiring", "retiring", "active"]


def test_errors_are_one_clear_line(env: Path) -> None:
    code, output = _keys("activate", "--force")
    assert code == 1
    assert "no key ring" in output
    assert _keys("init")[0] == 0
    code, output = _keys("activate", "--force")
    assert code == 1
    assert "no next key to activate" in output
