"""Lockdown end to end: the API, real PostgreSQL, real Mosquitto and the real gateway code
driving simulated locks; and what someone holding the broker password cannot do about it."""

import asyncio
import base64
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select

from api.audit.models import AuditEvent
from api.keys.keyring import KeyRing
from citykey_protocol.codes import AckResult, CommandRefusal, ModeRejection
from citykey_protocol.messages import Ack, UnlockCommand
from citykey_protocol.modes import MODE_REJECTED_EVENT, MODE_TOKEN_TYPE
from citykey_protocol.topics import GatewayTopics
from tests.conftest import ApiHarness
from tests.modes.conftest import EventListener, start_gateway, wait_for
from tests.support import AckListener, World, unique

pytestmark = pytest.mark.usefixtures("clean_modes")


async def unlock_via_api(api: ApiHarness, world: World, door_id: str) -> Any:
    return await api.client.post(
        f"/v1/doors/{door_id}/unlock", json={"seconds": 1}, headers=api.token_for(world.citizen_id)
    )


async def unlock_directly(api: ApiHarness, world: World, gateway_id: str, door_id: str) -> Ack:
    """A validly signed unlock command sent straight to the gateway, bypassing the API."""
    token, _ = api.state.minter.mint(
        gateway_id=gateway_id, door_id=door_id, subject=world.citizen_id, seconds=1
    )
    command = UnlockCommand(command_id=str(uuid.uuid4()), door=door_id, token=token, reply_to="x")
    async with AckListener(world.broker, gateway_id) as probe:
        return await probe.send(command)


async def lockdown_view(api: ApiHarness, world: World, headers: dict[str, str]) -> Any:
    response = await api.client.get(f"/v1/buildings/{world.building_id}/lockdown", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def wait_all_acknowledged(
    api: ApiHarness, world: World, headers: dict[str, str]
) -> dict[str, Any]:
    """Poll GET .../lockdown until every gateway has acknowledged (bounded: about 8 s)."""
    view: dict[str, Any] = {}
    for _ in range(200):
        view = await lockdown_view(api, world, headers)
        if view["all_acknowledged"]:
            return view
        await asyncio.sleep(0.04)
    raise AssertionError(f"gateways never acknowledged: {view}")


def reported_version(api: ApiHarness, gateway_id: str) -> int | None:
    """The mode version in the gateway's latest status, as the API's relay heard it."""
    status = api.state.relay.gateway_status(gateway_id)
    return status.mode_version if status is not None else None


async def test_lockdown_suspends_access_at_the_api_and_at_every_gateway_until_lifted(
    api: ApiHarness, world: World, manager: dict[str, str], tmp_path: Path
) -> None:
    await world.grant(world.citizen_id, building=True)
    (gw_a, doors_a), (gw_b, doors_b) = await world.add_gateway(), await world.add_gateway()
    door_a, door_b = next(iter(doors_a)), next(iter(doors_b))
    gateway_a = await start_gateway(world, gw_a, doors_a, tmp_path / "a")
    gateway_b = await start_gateway(world, gw_b, doors_b, tmp_path / "b")
    assert (await unlock_via_api(api, world, door_a)).status_code == 200

    started = await api.client.post(
        f"/v1/buildings/{world.building_id}/lockdown",
        json={"reason": "  Police operation  "},
        headers=manager,
    )

    assert started.status_code == 200, started.text
    body = started.json()
    assert body["lockdown"] is True
    assert body["reason"] == "Police operation"
    assert body["by_name"] == "Mona Manager"
    assert {g["gateway_id"] for g in body["gateways"]} == {gw_a, gw_b}
    view = await wait_all_acknowledged(api, world, manager)
    assert all(g["online"] and g["acknowledged_at"] for g in view["gateways"])
    assert {g["acknowledged_version"] for g in view["gateways"]} == {view["mode_version"]}
    # The door opened a moment ago is locked again, not left to its timer.
    assert gateway_a.lock.state(1).locked

    refused = await unlock_via_api(api, world, door_b)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "lockdown"
    ack = await unlock_directly(api, world, gw_b, door_b)
    assert (ack.result, ack.reason) == (AckResult.DENIED, CommandRefusal.LOCKDOWN.value)
    assert gateway_b.lock.state(1).unlock_count == 0

    again = await api.client.post(
        f"/v1/buildings/{world.building_id}/lockdown", json={"reason": "x"}, headers=manager
    )
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "already_in_lockdown"

    lifted = await api.client.delete(f"/v1/buildings/{world.building_id}/lockdown", headers=manager)
    assert lifted.status_code == 200, lifted.text
    assert lifted.json()["lockdown"] is False
    await wait_all_acknowledged(api, world, manager)
    assert not gateway_a.gateway.modes.lockdown
    assert not gateway_b.gateway.modes.lockdown
    assert (await unlock_via_api(api, world, door_b)).status_code == 200
    assert (await unlock_directly(api, world, gw_a, door_a)).result is AckResult.UNLOCKED

    async with api.state.sessions() as session:
        rows = (
            (
                await session.execute(
                    select(AuditEvent)
                    .where(
                        col(AuditEvent.building_id) == world.building_id,
                        col(AuditEvent.action).like("building.lockdown%"),
                    )
                    .order_by(col(AuditEvent.id))
                )
            )
            .scalars()
            .all()
        )
    assert [r.action for r in rows] == ["building.lockdown_started", "building.lockdown_lifted"]
    start_detail = rows[0].detail
    assert start_detail["before"]["lockdown_since"] is None
    assert start_detail["after"]["lockdown_reason"] == "Police operation"
    assert rows[1].detail["after"]["lockdown_since"] is None


async def test_lockdown_endpoints_refuse_what_they_must(
    api: ApiHarness, world: World, manager: dict[str, str]
) -> None:
    path = f"/v1/buildings/{world.building_id}/lockdown"
    citizen = api.token_for(world.citizen_id)
    assert (await api.client.get(path, headers=citizen)).json()["error"]["code"] == "manager_only"
    outsider_path = f"/v1/buildings/{unique('bld-not-mine')}/lockdown"
    for method in ("GET", "DELETE"):
        response = await api.client.request(method, outsider_path, headers=manager)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "building_not_found"
    lift = await api.client.delete(path, headers=manager)
    assert (lift.status_code, lift.json()["error"]["code"]) == (409, "not_in_lockdown")
    for bad in ({}, {"reason": "   "}, {"reason": "x" * 501}, {"reason": "x", "extra": 1}):
        response = await api.client.post(path, json=bad, headers=manager)
        assert response.status_code == 422, bad
        assert response.json()["error"]["code"] == "validation_error"
    view = await lockdown_view(api, world, manager)
    assert view["lockdown"] is False
    assert view["gateways"] == []


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_a_broker_intruder_cannot_lift_a_lockdown(
    api: ApiHarness, world: World, manager: dict[str, str], tmp_path: Path
) -> None:
    """Someone with broker access publishes mode messages: signed by their own key, tampered
    with, addressed to another gateway, or a genuine but older one replayed. The gateway
    refuses each, says why in an event, and stays locked down."""
    gateway_id, doors = await world.add_gateway()
    door_id = next(iter(doors))
    running = await start_gateway(world, gateway_id, doors, tmp_path / "gw")
    topics = GatewayTopics(gateway_id)
    path = f"/v1/buildings/{world.building_id}/lockdown"

    async with (
        world.broker.client(unique("intruder")) as intruder,
        EventListener(world.broker, gateway_id) as events,
    ):
        # A genuine message that lifts... and is then superseded by a new lockdown.
        await api.client.post(path, json={"reason": "first"}, headers=manager)
        await api.client.delete(path, headers=manager)
        old_lift = await retained_mode(world, gateway_id)
        await api.client.post(path, json={"reason": "second"}, headers=manager)
        await wait_all_acknowledged(api, world, manager)
        version = running.gateway.modes.version
        genuine = await retained_mode(world, gateway_id)
        header, claims, signature = genuine.decode().split(".")
        lifted_claims = {**json.loads(base64.urlsafe_b64decode(claims + "==")), "lockdown": False}

        rogue = KeyRing.initialize(tmp_path / "rogue")
        attempts = [
            (
                rogue.sign({**lifted_claims, "ver": version + 100}, MODE_TOKEN_TYPE).encode(),
                ModeRejection.UNKNOWN_KEY,
            ),
            (
                f"{header}.{_b64({**lifted_claims, 'ver': version + 100})}.{signature}".encode(),
                ModeRejection.BAD_SIGNATURE,
            ),
            (signed_for(api, unique("gw-other"), version + 100), ModeRejection.WRONG_GATEWAY),
            (old_lift, ModeRejection.STALE_VERSION),
        ]
        for count, (payload, reason) in enumerate(attempts):
            await intruder.publish(topics.mode, payload, qos=1, retain=True)
            event = await events.next_of_kind(MODE_REJECTED_EVENT, count)
            assert event.data["reason"] == reason.value
            assert event.data["current_version"] == version
            assert running.gateway.modes.lockdown
            assert running.gateway.modes.version == version
        ack = await unlock_directly(api, world, gateway_id, door_id)
        assert ack.reason == CommandRefusal.LOCKDOWN.value
        assert running.lock.state(1).unlock_count == 0


def signed_for(api: ApiHarness, gateway_id: str, version: int) -> bytes:
    """A genuine lift message, signed by the API's key but addressed to another gateway."""
    claims = {
        "iss": api.state.settings.issuer,
        "aud": gateway_id,
        "iat": 0,
        "ver": version,
        "lockdown": False,
        "holds": [],
    }
    return api.state.keyring.sign(claims, MODE_TOKEN_TYPE).encode()


async def retained_mode(world: World, gateway_id: str) -> bytes:
    """The mode message the broker holds for ``gateway_id`` now."""
    async with world.broker.client(unique("peek")) as client:
        await client.subscribe(GatewayTopics(gateway_id).mode, qos=1)
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            assert message.payload
            return message.payload
    raise AssertionError("no retained mode message")


async def test_lockdown_survives_a_gateway_restart_even_without_the_retained_message(
    api: ApiHarness, world: World, manager: dict[str, str], tmp_path: Path
) -> None:
    gateway_id, doors = await world.add_gateway()
    door_id = next(iter(doors))
    first = await start_gateway(world, gateway_id, doors, tmp_path / "gw")
    path = f"/v1/buildings/{world.building_id}/lockdown"
    await api.client.post(path, json={"reason": "drill"}, headers=manager)
    await wait_all_acknowledged(api, world, manager)
    version = first.gateway.modes.version

    await first.stop()
    world.gateways.remove(first)
    async with world.broker.client(unique("intruder")) as intruder:
        await intruder.publish(GatewayTopics(gateway_id).mode, b"", qos=1, retain=True)
    second = await start_gateway(world, gateway_id, doors, tmp_path / "gw")

    assert second.gateway.modes.lockdown
    assert second.gateway.modes.version == version
    ack = await unlock_directly(api, world, gateway_id, door_id)
    assert (ack.result, ack.reason) == (AckResult.DENIED, CommandRefusal.LOCKDOWN.value)
    await wait_for(
        lambda: reported_version(api, gateway_id) == version,
        "the restarted gateway reports the lockdown version",
    )

    await api.client.delete(path, headers=manager)
    await wait_all_acknowledged(api, world, manager)
    assert (await unlock_directly(api, world, gateway_id, door_id)).result is AckResult.UNLOCKED
