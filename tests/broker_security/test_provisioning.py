"""Provisioning a gateway through the API creates its broker account on a real mosquitto
(dynamic security plugin); the real gateway code logs in with the credential shown once and
opens a door; rotation retires the old password at once; failures change nothing."""

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from sqlalchemy import select

from api.broker_accounts.acl import ADMIN_USER, gateway_client_id, gateway_role
from api.broker_accounts.dynsec import DynsecAccounts, DynsecClient
from api.gateways import credentials
from api.gateways.models import Gateway
from tests.broker_security.broker import DynsecMosquitto, connect_result, probe
from tests.broker_security.conftest import running_api, secure_settings
from tests.broker_security.estate import Estate
from tests.conftest import ApiHarness
from tests.support import unique


async def broker_client(broker: DynsecMosquitto, username: str) -> dict[str, object] | None:
    """The plugin's record of ``username`` (None when there is none), asked as the admin."""
    [response] = await DynsecClient(broker.address(ADMIN_USER), "test").execute(
        [{"command": "getClient", "username": username}]
    )
    if response.get("error") == "Client not found":
        return None
    assert "error" not in response, response
    client: dict[str, object] = response["data"]["client"]
    return client


async def stored_hash(api: ApiHarness, gateway_id: str) -> str | None:
    async with api.state.sessions() as session:
        gateway = await session.get(Gateway, gateway_id)
        return None if gateway is None else gateway.credential_hash


async def test_provisioned_gateway_logs_in_and_opens_a_door(
    pg_database_url: str,
    key_dir: Path,
    dynsec_broker: DynsecMosquitto,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every subscription the real API and gateway code make, with the broker's answer: a topic
    # one of them uses but its role lacks would otherwise fail silently.
    subscriptions: list[tuple[str, object, bool]] = []
    original = aiomqtt.Client.subscribe

    async def spy(self: aiomqtt.Client, topic: Any, *args: Any, **kwargs: Any) -> Any:
        reasons = await original(self, topic, *args, **kwargs)
        granted = all(not getattr(r, "is_failure", r == 128) for r in reasons)
        subscriptions.append((self.identifier, topic, granted))
        return reasons

    monkeypatch.setattr(aiomqtt.Client, "subscribe", spy)
    async with running_api(secure_settings(pg_database_url, key_dir, dynsec_broker)) as api:
        estate = await Estate.create(api, dynsec_broker)
        gateway = await estate.provision(doors=2)

        account = await broker_client(dynsec_broker, gateway.gateway_id)
        assert account is not None, "provisioning created no broker user"
        assert account.get("clientid") == gateway_client_id(gateway.gateway_id)
        roles = account.get("roles")
        assert isinstance(roles, list)
        assert [role["rolename"] for role in roles] == [gateway_role(gateway.gateway_id)]
        encoded = await stored_hash(api, gateway.gateway_id)
        assert encoded is not None
        assert encoded.startswith("scrypt$")
        assert gateway.password not in encoded
        assert credentials.verify(gateway.password, encoded)

        running = await estate.start(gateway)  # the real gateway code, with its credential
        try:
            door_id = next(iter(gateway.doors))
            assert await estate.unlock(door_id) == 200
            assert running.gateway.actuations == 1
            assert running.lock.state(gateway.doors[door_id]).unlock_count == 1
        finally:
            await running.stop()
    clients = {client for client, _, _ in subscriptions}
    assert gateway_client_id(gateway.gateway_id) in clients
    assert api.state.settings.instance_id in clients
    refused = [(client, topic) for client, topic, granted in subscriptions if not granted]
    assert refused == [], f"subscriptions the broker refused: {refused}"


async def test_rotation_retires_the_old_password_at_once(
    secure_api: ApiHarness, dynsec_broker: DynsecMosquitto
) -> None:
    estate = await Estate.create(secure_api, dynsec_broker)
    gateway = await estate.provision()
    client_id = gateway_client_id(gateway.gateway_id)
    async with probe(gateway.address(dynsec_broker), client_id) as old_session:
        started = time.perf_counter()
        rotated = await secure_api.client.post(
            f"/v1/gateways/{gateway.gateway_id}/credential", headers=estate.manager
        )
        assert rotated.status_code == 200, rotated.text
        new_password = rotated.json()["password"]
        async with asyncio.timeout(5):
            while old_session.disconnected_at is None:
                await asyncio.sleep(0.005)
        cut = (old_session.disconnected_at - started) * 1000
    print(f"\nrotation: the session opened with the old password was closed {cut:.1f} ms after")
    print("  POST /credential was sent")
    old = await connect_result(gateway.address(dynsec_broker), client_id)
    new = await connect_result(gateway.address(dynsec_broker, new_password), client_id)
    print(f"  old password: {old}; new password: {new}")
    assert old.startswith("refused")
    assert new == "accepted"
    encoded = await stored_hash(secure_api, gateway.gateway_id)
    assert encoded is not None
    assert credentials.verify(new_password, encoded)


async def test_a_gateway_cannot_take_over_another_broker_user(
    secure_api: ApiHarness, dynsec_broker: DynsecMosquitto
) -> None:
    """A gateway id equal to the plugin administrator's user name is refused, and the
    administrator's account is left as it was."""
    estate = await Estate.create(secure_api, dynsec_broker)
    response = await secure_api.client.post(
        f"/v1/buildings/{estate.org.building_id}/gateways",
        json={"id": ADMIN_USER, "name": "Impostor"},
        headers=estate.manager,
    )
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "broker_account_conflict"
    missing = await secure_api.client.get(f"/v1/gateways/{ADMIN_USER}", headers=estate.manager)
    assert missing.status_code == 404
    admin = await broker_client(dynsec_broker, ADMIN_USER)
    assert admin is not None
    assert "clientid" not in admin
    assert await connect_result(dynsec_broker.address(ADMIN_USER), unique("admin")) == "accepted"


async def test_broker_failures_change_nothing(
    secure_api: ApiHarness,
    dynsec_broker: DynsecMosquitto,
    pg_database_url: str,
    key_dir: Path,
) -> None:
    """With the administrator's login wrong, or nothing listening, creating, rotating and
    deleting answer 503 broker_unavailable and leave database and broker as they were."""
    estate = await Estate.create(secure_api, dynsec_broker)
    gateway = await estate.provision()
    await estate.remove_doors(gateway)
    before = await stored_hash(secure_api, gateway.gateway_id)
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"mqtt://{ADMIN_USER}:x@127.0.0.1:{sock.getsockname()[1]}"
    wrong = f"mqtt://{ADMIN_USER}:wrong-password@127.0.0.1:{dynsec_broker.port}"
    for label, admin_url in (("wrong admin password", wrong), ("broker unreachable", dead)):
        settings = secure_settings(pg_database_url, key_dir, dynsec_broker, admin_url=admin_url)
        async with running_api(settings) as broken:
            manager = broken.token_for(estate.org.building_manager_id)
            wanted = unique("gw-never")
            started = time.perf_counter()
            created = await broken.client.post(
                f"/v1/buildings/{estate.org.building_id}/gateways",
                json={"id": wanted, "name": "Never"},
                headers=manager,
            )
            took = (time.perf_counter() - started) * 1000
            rotated = await broken.client.post(
                f"/v1/gateways/{gateway.gateway_id}/credential", headers=manager
            )
            deleted = await broken.client.delete(
                f"/v1/gateways/{gateway.gateway_id}", headers=manager
            )
            print(
                f"\n{label}: create {created.status_code} in {took:.0f} ms, rotate "
                f"{rotated.status_code}, delete {deleted.status_code}"
            )
            for response in (created, rotated, deleted):
                assert response.status_code == 503, response.text
                assert response.json()["error"]["code"] == "broker_unavailable"
            assert (
                await broken.client.get(f"/v1/gateways/{wanted}", headers=manager)
            ).status_code == 404
            assert await broker_client(dynsec_broker, wanted) is None
        assert await stored_hash(secure_api, gateway.gateway_id) == before
        client_id = gateway_client_id(gateway.gateway_id)
        assert await connect_result(gateway.address(dynsec_broker), client_id) == "accepted"
    rows = await _gateway_rows(secure_api, gateway.gateway_id)
    assert rows == 1


async def _gateway_rows(api: ApiHarness, gateway_id: str) -> int:
    async with api.state.sessions() as session:
        result = await session.execute(select(Gateway).where(Gateway.id == gateway_id))  # type: ignore[arg-type]
        return len(result.scalars().all())


async def test_administrators_side_by_side_each_get_their_own_answers(
    dynsec_broker: DynsecMosquitto,
) -> None:
    """Two API instances administer the broker at once: every response goes to every
    administrator, and each picks its own by correlation data."""
    instances = [
        DynsecAccounts(dynsec_broker.address(ADMIN_USER), f"api-side-{n}") for n in range(2)
    ]
    gateway_ids = [unique("gw-side") for _ in range(10)]
    await asyncio.gather(
        *(
            instances[i % 2].provision_gateway(gateway_id, f"password-{i}")
            for i, gateway_id in enumerate(gateway_ids)
        )
    )
    for i, gateway_id in enumerate(gateway_ids):
        login = dynsec_broker.address(gateway_id, f"password-{i}")
        assert await connect_result(login, gateway_client_id(gateway_id)) == "accepted"
    await asyncio.gather(
        *(instances[i % 2].revoke_gateway(gateway_id) for i, gateway_id in enumerate(gateway_ids))
    )
    for gateway_id in gateway_ids:
        assert await broker_client(dynsec_broker, gateway_id) is None
