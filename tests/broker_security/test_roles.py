"""The dynamic-security roles against deploy/mosquitto/acl (the readable reference), the
bootstrap that writes the plugin's first file, and the fixed users on the real broker."""

import asyncio
import json
from pathlib import Path

import pytest

from api.broker_accounts import DynsecAccounts
from api.broker_accounts.acl import (
    ADMIN_USER,
    API_USER,
    CONTROL_TOPIC,
    HEALTHCHECK_USER,
    UPTIME_TOPIC,
    Acl,
    api_acls,
    gateway_acls,
    gateway_client_id,
    healthcheck_acls,
    read,
    write,
)
from api.broker_accounts.bootstrap import build_config, main
from citykey_protocol.topics import KEYSET_TOPIC, GatewayTopics
from tests.broker_security.broker import DynsecMosquitto, probe
from tests.broker_security.test_provisioning import broker_client
from tests.support import unique

ACL_FILE = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "acl"
Rules = set[tuple[str, str]]


def _acl_file() -> tuple[dict[str, Rules], Rules]:
    """(rules per ``user`` section, ``pattern`` rules) of the ACL file, as (access, topic)."""
    users: dict[str, Rules] = {}
    patterns: Rules = set()
    current: Rules | None = None
    for raw in ACL_FILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        if keyword == "user":
            current = users.setdefault(rest.strip(), set())
            continue
        access, _, topic = rest.partition(" ")
        if access not in ("read", "write", "readwrite"):
            access, topic = "readwrite", rest
        target = patterns if keyword == "pattern" else current
        assert target is not None, f"acl: {line!r} outside a user section"
        target.add((access, topic.strip()))
    return users, patterns


def _as_dynsec(rules: Rules, gateway_id: str | None = None) -> set[Acl]:
    acls: set[Acl] = set()
    for access, topic in rules:
        if gateway_id is not None:
            topic = topic.replace("%u", gateway_id)
        if access in ("read", "readwrite"):
            acls.update(read(topic))
        if access in ("write", "readwrite"):
            acls.update(write(topic))
    return acls


def _diff(what: str, code: list[Acl], expected: set[Acl]) -> str:
    return (
        f"{what}: api/broker_accounts/acl.py and deploy/mosquitto/acl disagree; only in the "
        f"code: {sorted(set(code) - expected, key=str)}; only in the file: "
        f"{sorted(expected - set(code), key=str)}. Change both."
    )


def test_dynsec_roles_grant_exactly_what_the_acl_file_grants() -> None:
    users, patterns = _acl_file()
    expected_api = _as_dynsec(users[API_USER])
    assert set(api_acls()) == expected_api, _diff("citykey-api", api_acls(), expected_api)
    expected_health = _as_dynsec(users[HEALTHCHECK_USER])
    assert set(healthcheck_acls()) == expected_health, _diff(
        "healthcheck", healthcheck_acls(), expected_health
    )
    expected_gateway = _as_dynsec(patterns, "gw-x")
    assert set(gateway_acls("gw-x")) == expected_gateway, _diff(
        "a gateway", gateway_acls("gw-x"), expected_gateway
    )


def test_a_gateway_role_names_no_wildcard_but_its_ack_topics() -> None:
    for acl in gateway_acls("gw-x"):
        if "+" in acl.topic or "#" in acl.topic:
            assert acl == Acl("publishClientSend", "citykey/v1/gw/gw-x/ack/+"), acl


def test_bootstrap_writes_the_file_once_and_needs_every_password(tmp_path: Path) -> None:
    target = tmp_path / "dynamic-security.json"
    env = {"MQTT_ADMIN_PASSWORD": "a" * 24, "MQTT_API_PASSWORD": "b" * 24}
    assert main([str(target)], env) == 2  # the health check's password is missing
    assert not target.exists()
    env["MQTT_HEALTHCHECK_PASSWORD"] = "c" * 24
    assert main([str(target), "--gateway", "sim-gw-0001=MQTT_SIM"], env) == 2
    env["MQTT_SIM"] = "d" * 24
    assert main([str(target), "--gateway", "sim-gw-0001=MQTT_SIM"], env) == 0
    written = json.loads(target.read_text())
    assert target.stat().st_mode & 0o777 == 0o600
    users = {client["username"]: client for client in written["clients"]}
    assert set(users) == {ADMIN_USER, API_USER, HEALTHCHECK_USER, "sim-gw-0001"}
    assert users["sim-gw-0001"]["clientid"] == gateway_client_id("sim-gw-0001")
    assert "a" * 24 not in target.read_text()
    assert written["defaultACLAccess"] == {
        "publishClientSend": False,
        "publishClientReceive": False,
        "subscribe": False,
        "unsubscribe": True,
    }
    env["MQTT_ADMIN_PASSWORD"] = "changed"
    assert main([str(target)], env) == 0  # an existing file is never replaced
    assert json.loads(target.read_text()) == written
    with pytest.raises(ValueError, match="another component"):
        build_config(
            admin_password="a", api_password="b", healthcheck_password="c", gateways={API_USER: "x"}
        )


async def test_healthcheck_reads_the_uptime_only(dynsec_broker: DynsecMosquitto) -> None:
    async with probe(dynsec_broker.address(HEALTHCHECK_USER), unique("hc")) as health:
        assert not await health.subscribe("#")
        assert not await health.subscribe(KEYSET_TOPIC)
        assert await health.subscribe(UPTIME_TOPIC)
        async with asyncio.timeout(15):  # $SYS is published every 10 s
            while not health.received:
                await asyncio.sleep(0.05)
        assert {topic for topic, _ in health.received} == {UPTIME_TOPIC}


async def test_only_the_api_user_sends_commands_and_key_sets(
    dynsec_broker: DynsecMosquitto,
) -> None:
    """The administrator and the health check are refused on application topics, and the
    API's user cannot administer accounts."""
    gateway_id = unique("gw-roles")
    topics = GatewayTopics(gateway_id)
    accounts = DynsecAccounts(dynsec_broker.address(ADMIN_USER), "test-roles")
    await accounts.provision_gateway(gateway_id, "roles-test-password")
    try:
        login = dynsec_broker.address(gateway_id, "roles-test-password")
        async with (
            probe(login, gateway_client_id(gateway_id)) as gateway,
            probe(dynsec_broker.address(ADMIN_USER), unique("adm")) as admin,
            probe(dynsec_broker.address(HEALTHCHECK_USER), unique("hc")) as health,
            probe(dynsec_broker.address(API_USER), unique("api")) as api,
        ):
            assert await gateway.subscribe(topics.commands)
            for intruder in (admin, health):
                await intruder.publish(topics.commands, b"forged command")
            await api.publish(
                CONTROL_TOPIC,
                json.dumps(
                    {
                        "commands": [
                            {"command": "createClient", "username": "x-api", "password": "p"}
                        ]
                    }
                ).encode(),
            )
            await api.publish(topics.commands, b"marker")
            await gateway.wait_for(topics.commands, b"marker")
            assert await gateway.quiet() == [(topics.commands, b"marker")]
        assert await broker_client(dynsec_broker, "x-api") is None
    finally:
        await accounts.revoke_gateway(gateway_id)
