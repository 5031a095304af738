"""Gateways over the real API, PostgreSQL and Mosquitto: credentials shown once and stored
as a hash only, live online state from the broker, conflicts, audit without secrets."""

import asyncio
import json

from api.gateways import credentials
from api.gateways.models import Gateway
from tests.conftest import ApiHarness
from tests.manage.helpers_org import add_admin, all_pages, audit_for, error_code, seed_org
from tests.support import World, unique


async def stored_hash(api: ApiHarness, gateway_id: str) -> str | None:
    async with api.state.sessions() as session:
        gateway = await session.get(Gateway, gateway_id)
        assert gateway is not None
        return gateway.credential_hash


async def test_credential_is_shown_once_and_stored_as_a_hash(api: ApiHarness) -> None:
    org = await seed_org(api)
    manager = api.token_for(org.building_manager_id)
    wanted = unique("gw-lib")

    created = await api.client.post(
        f"/v1/buildings/{org.building_id}/gateways",
        json={"id": wanted, "name": "Ground floor"},
        headers=manager,
    )
    assert created.status_code == 201, created.text
    assert created.headers["cache-control"] == "no-store"
    body = created.json()
    assert body["gateway"]["id"] == wanted
    assert body["gateway"]["has_credential"] is True
    assert body["gateway"]["online"] is False
    credential = body["credential"]
    assert credential["username"] == wanted
    password = credential["password"]
    assert len(password) >= 32

    encoded = await stored_hash(api, wanted)
    assert encoded is not None
    assert encoded.startswith("scrypt$16384$8$1$")
    assert password not in encoded
    assert credentials.verify(password, encoded)
    assert not credentials.verify(password + "x", encoded)

    got = await api.client.get(f"/v1/gateways/{wanted}", headers=manager)
    assert got.status_code == 200
    assert "credential" not in got.json()
    assert "scrypt" not in got.text
    assert password not in got.text
    listed = await all_pages(api.client, f"/v1/buildings/{org.building_id}/gateways", manager)
    assert {g["id"] for g in listed} == {org.gateway_id, wanted}

    rotated = await api.client.post(f"/v1/gateways/{wanted}/credential", headers=manager)
    assert rotated.status_code == 200
    new_password = rotated.json()["password"]
    assert new_password != password
    encoded_after = await stored_hash(api, wanted)
    assert encoded_after is not None
    assert credentials.verify(new_password, encoded_after)
    assert not credentials.verify(password, encoded_after)

    renamed = await api.client.patch(
        f"/v1/gateways/{wanted}", json={"name": "Cellar"}, headers=manager
    )
    assert renamed.json()["name"] == "Cellar"
    assert (await api.client.delete(f"/v1/gateways/{wanted}", headers=manager)).status_code == 204

    rows = await audit_for(api, wanted)
    assert [r.action for r in rows] == [
        "gateway.created",
        "gateway.credential_rotated",
        "gateway.updated",
        "gateway.deleted",
    ]
    dumped = json.dumps([r.detail for r in rows])
    for secret in (password, new_password, encoded, encoded_after, "scrypt$", "credential_hash"):
        assert secret not in dumped
    assert all(r.building_id == org.building_id for r in rows)


async def test_gateway_ids_and_conflicts(api: ApiHarness) -> None:
    org = await seed_org(api)
    manager = api.token_for(org.manager_id)
    url = f"/v1/buildings/{org.building_id}/gateways"
    for bad in ("a/b", "#", "+", "citykey-api", "HealthCheck", "x" * 65, ""):
        response = await api.client.post(url, json={"id": bad, "name": "x"}, headers=manager)
        assert response.status_code == 422, bad
        assert error_code(response) == "validation_error"
    taken = await api.client.post(url, json={"id": org.gateway_id, "name": "x"}, headers=manager)
    assert taken.status_code == 409
    assert error_code(taken) == "gateway_exists"

    generated = await api.client.post(url, json={"name": "Auto"}, headers=manager)
    assert generated.status_code == 201
    assert generated.json()["gateway"]["id"].startswith("gw_")

    in_use = await api.client.delete(f"/v1/gateways/{org.gateway_id}", headers=manager)
    assert in_use.status_code == 409
    assert error_code(in_use) == "gateway_in_use"
    assert in_use.json()["error"]["doors"] == 1


async def test_live_online_state_comes_from_the_broker(api: ApiHarness, world: World) -> None:
    admin = api.token_for(await add_admin(api))
    gateway_id, doors = await world.add_gateway()
    before = await api.client.get(f"/v1/gateways/{gateway_id}", headers=admin)
    assert before.json()["online"] is False
    assert before.json()["last_seen"] is None

    running = await world.start_gateway(gateway_id, doors)
    live = await api.client.get(f"/v1/gateways/{gateway_id}", headers=admin)
    assert live.json()["online"] is True
    # The database catches up through the status tracker.
    async with asyncio.timeout(5):
        while (body := (await api.client.get(f"/v1/gateways/{gateway_id}", headers=admin)).json())[
            "last_seen"
        ] is None:
            await asyncio.sleep(0.02)
    assert body["recorded_online"] is True

    await running.stop()
    async with asyncio.timeout(5):
        while (await api.client.get(f"/v1/gateways/{gateway_id}", headers=admin)).json()["online"]:
            await asyncio.sleep(0.02)


def test_verify_refuses_malformed_and_unbounded_hashes() -> None:
    encoded = credentials.hash_password("secret", n=2**10)
    assert credentials.verify("secret", encoded)
    scheme, n, r, p, salt, key = encoded.split("$")
    for broken in (
        "",
        "secret",
        f"bcrypt${n}${r}${p}${salt}${key}",
        f"{scheme}$1000${r}${p}${salt}${key}",  # n not a power of two
        f"{scheme}${2**30}${r}${p}${salt}${key}",  # would need gigabytes
        f"{scheme}${n}$0${p}${salt}${key}",
        f"{scheme}${n}${r}${p}$!!${key}",
        f"{scheme}${n}${r}${p}${salt}$",
        f"{scheme}${n}${r}${p}${salt}",
    ):
        assert not credentials.verify("secret", broken), broken
    # Same password, new salt, different hash.
    assert credentials.hash_password("secret", n=2**10) != encoded
