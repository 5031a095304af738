"""The foundation's end-to-end path over real PostgreSQL and Mosquitto, and every error it
answers, each produced by a real situation."""

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlmodel import col, select

from api.audit.models import AuditEvent
from api.keys.keyring import KeyRing, KeyState, SigningKey
from api.unlock.tokens import UnlockTokenMinter
from citykey_protocol.codes import AckResult, TokenRejection
from citykey_protocol.messages import UnlockCommand
from tests.conftest import ApiHarness
from tests.support import AckListener, World


async def audit_rows(api: ApiHarness, command_id: str) -> list[AuditEvent]:
    async with api.state.sessions() as session:
        statement = (
            select(AuditEvent)
            .where(AuditEvent.command_id == command_id)
            .order_by(col(AuditEvent.id))
        )
        return list((await session.execute(statement)).scalars().all())


async def test_unlock_opens_the_door_then_it_relocks(api: ApiHarness, world: World) -> None:
    gateway_id, doors = await world.add_gateway(doors=2)
    door_id = next(iter(doors))
    await world.grant(world.citizen_id, building=True)
    gateway = await world.start_gateway(gateway_id, doors)

    response = await api.client.post(
        f"/v1/doors/{door_id}/unlock", json={"seconds": 1}, headers=api.token_for(world.citizen_id)
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "unlocked"
    assert body["door_id"] == door_id
    channel = gateway.lock.state(gateway.channel(door_id))
    assert channel.locked is False
    assert channel.unlock_count == 1
    async with asyncio.timeout(5):
        while not channel.locked:
            await asyncio.sleep(0.05)
    assert [kind for _, kind in channel.history] == ["unlocked", "locked"]
    rows = await audit_rows(api, body["command_id"])
    assert [(r.action, r.decision, r.result) for r in rows] == [
        ("unlock.requested", "allow", None),
        ("unlock.completed", "allow", "unlocked"),
    ]
    assert rows[1].latency_ms is not None


async def test_no_grant_is_refused_with_a_reason(api: ApiHarness, world: World) -> None:
    gateway_id, doors = await world.add_gateway()
    gateway = await world.start_gateway(gateway_id, doors)
    door_id = next(iter(doors))

    response = await api.client.post(
        f"/v1/doors/{door_id}/unlock", headers=api.token_for(world.stranger_id)
    )

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "no_grant"
    assert gateway.lock.state(1).unlock_count == 0


async def test_expired_and_future_grants_say_so(api: ApiHarness, world: World) -> None:
    gateway_id, doors = await world.add_gateway(doors=2)
    await world.start_gateway(gateway_id, doors)
    past, future = list(doors)
    now = datetime.now(UTC)
    await world.grant(world.citizen_id, door_id=past, valid_until=now - timedelta(hours=1))
    await world.grant(world.citizen_id, door_id=future, valid_from=now + timedelta(hours=1))
    headers = api.token_for(world.citizen_id)

    expired = await api.client.post(f"/v1/doors/{past}/unlock", headers=headers)
    early = await api.client.post(f"/v1/doors/{future}/unlock", headers=headers)

    assert (expired.status_code, expired.json()["error"]["code"]) == (403, "expired")
    assert (early.status_code, early.json()["error"]["code"]) == (403, "not_yet_valid")


async def test_unknown_door_is_404(api: ApiHarness, world: World) -> None:
    response = await api.client.post(
        "/v1/doors/no-such-door/unlock", headers=api.token_for(world.citizen_id)
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "door_not_found"


async def test_garbage_body_is_422(api: ApiHarness, world: World) -> None:
    _gateway_id, doors = await world.add_gateway()
    headers = {**api.token_for(world.citizen_id), "Content-Type": "application/json"}
    door = next(iter(doors))

    garbage = await api.client.post(
        f"/v1/doors/{door}/unlock", content=b"{not json", headers=headers
    )
    wrong_type = await api.client.post(
        f"/v1/doors/{door}/unlock", json={"seconds": "long"}, headers=headers
    )

    assert (garbage.status_code, garbage.json()["error"]["code"]) == (422, "malformed_json")
    assert (wrong_type.status_code, wrong_type.json()["error"]["code"]) == (422, "validation_error")


async def test_missing_or_bad_bearer_is_401(api: ApiHarness, world: World) -> None:
    missing = await api.client.post("/v1/doors/x/unlock")
    forged = await api.client.post(
        "/v1/doors/x/unlock", headers={"Authorization": "Bearer abc.def.ghi"}
    )
    assert (missing.status_code, missing.json()["error"]["code"]) == (401, "unauthorized")
    assert (forged.status_code, forged.json()["error"]["code"]) == (401, "invalid_token")
    assert missing.headers["www-authenticate"] == "Bearer"


async def test_stopped_gateway_answers_503_from_retained_status(
    api: ApiHarness, world: World
) -> None:
    gateway_id, doors = await world.add_gateway()
    await world.grant(world.citizen_id, building=True)
    gateway = await world.start_gateway(gateway_id, doors)
    await gateway.stop()
    # Its goodbye (retained offline status) normally arrives in milliseconds; if it was lost,
    # the broker's last will says the same after 1.5 keepalives (30 s). Bounded either way.
    async with asyncio.timeout(60):
        while api.state.relay.gateway_online(gateway_id):
            await asyncio.sleep(0.01)

    response = await api.client.post(
        f"/v1/doors/{next(iter(doors))}/unlock", headers=api.token_for(world.citizen_id)
    )

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "gateway_offline"


async def test_gateway_that_never_answers_gives_504(api: ApiHarness, world: World) -> None:
    gateway_id, doors = await world.add_gateway()
    await world.grant(world.citizen_id, building=True)
    mute = await world.start_mute_gateway(gateway_id)

    response = await api.client.post(
        f"/v1/doors/{next(iter(doors))}/unlock", headers=api.token_for(world.citizen_id)
    )

    assert response.status_code == 504
    assert response.json()["error"]["code"] == "gateway_timeout"
    assert mute.received == 1
    rows = await audit_rows(api, response.json()["error"]["command_id"])
    assert rows[-1].result == "timeout"


async def test_jammed_lock_is_409(api: ApiHarness, world: World) -> None:
    gateway_id, doors = await world.add_gateway()
    await world.grant(world.citizen_id, building=True)
    gateway = await world.start_gateway(gateway_id, doors)
    gateway.lock.jam(1)

    response = await api.client.post(
        f"/v1/doors/{next(iter(doors))}/unlock", headers=api.token_for(world.citizen_id)
    )

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "lock_jammed"
    assert gateway.lock.state(1).locked is True


def command_for(token: str, door_id: str) -> UnlockCommand:
    return UnlockCommand(
        command_id=str(uuid.uuid4()), door=door_id, token=token, reply_to="placeholder"
    )


async def test_republished_command_is_not_actuated_twice(api: ApiHarness, world: World) -> None:
    gateway_id, doors = await world.add_gateway()
    gateway = await world.start_gateway(gateway_id, doors)
    door_id = next(iter(doors))
    token, _ = api.state.minter.mint(
        gateway_id=gateway_id, door_id=door_id, subject=world.citizen_id, seconds=1
    )
    command = command_for(token, door_id)

    async with AckListener(world.broker, gateway_id) as probe:
        first = await probe.send(command)
        again = await probe.send(command)

    assert first.result is AckResult.UNLOCKED
    assert (again.result, again.reason) == (AckResult.DENIED, TokenRejection.REPLAYED)
    assert gateway.lock.state(1).unlock_count == 1


async def test_token_for_gateway_a_is_refused_by_gateway_b(api: ApiHarness, world: World) -> None:
    gateway_a, doors_a = await world.add_gateway()
    gateway_b, doors_b = await world.add_gateway()
    running_b = await world.start_gateway(gateway_b, doors_b)
    token, _ = api.state.minter.mint(
        gateway_id=gateway_a, door_id=next(iter(doors_a)), subject=world.citizen_id, seconds=1
    )

    async with AckListener(world.broker, gateway_b) as probe:
        ack = await probe.send(command_for(token, next(iter(doors_b))))

    assert (ack.result, ack.reason) == (AckResult.DENIED, TokenRejection.WRONG_GATEWAY)
    assert running_b.lock.state(1).unlock_count == 0


async def test_expired_token_is_refused(api: ApiHarness, world: World) -> None:
    gateway_id, doors = await world.add_gateway()
    gateway = await world.start_gateway(gateway_id, doors)
    door_id = next(iter(doors))
    stale = UnlockTokenMinter(
        api.state.keyring, api.state.settings.issuer, lifetime_s=30, clock=lambda: time.time() - 120
    )
    token, _ = stale.mint(gateway_id=gateway_id, door_id=door_id, subject="u", seconds=1)

    async with AckListener(world.broker, gateway_id) as probe:
        ack = await probe.send(command_for(token, door_id))

    assert (ack.result, ack.reason) == (AckResult.DENIED, TokenRejection.EXPIRED)
    assert gateway.lock.state(1).unlock_count == 0


async def test_token_signed_by_an_unknown_key_is_refused(
    api: ApiHarness, world: World, tmp_path: Path
) -> None:
    gateway_id, doors = await world.add_gateway()
    gateway = await world.start_gateway(gateway_id, doors)
    door_id = next(iter(doors))
    rogue_ring = KeyRing.initialize(tmp_path / "rogue")
    rogue = UnlockTokenMinter(rogue_ring, api.state.settings.issuer, lifetime_s=30)
    token, _ = rogue.mint(gateway_id=gateway_id, door_id=door_id, subject="u", seconds=1)
    # Same key id as the real key, different private key: the signature must fail.
    impostor_key = SigningKey(
        api.state.keyring.active.kid, KeyState.ACTIVE, rogue_ring.active.private_key
    )
    impostor_ring = KeyRing([impostor_key])
    impostor = UnlockTokenMinter(impostor_ring, api.state.settings.issuer, lifetime_s=30)
    forged, _ = impostor.mint(gateway_id=gateway_id, door_id=door_id, subject="u", seconds=1)

    async with AckListener(world.broker, gateway_id) as probe:
        unknown = await probe.send(command_for(token, door_id))
        bad_signature = await probe.send(command_for(forged, door_id))

    assert (unknown.result, unknown.reason) == (AckResult.DENIED, TokenRejection.UNKNOWN_KEY)
    assert (bad_signature.result, bad_signature.reason) == (
        AckResult.DENIED,
        TokenRejection.BAD_SIGNATURE,
    )
    assert gateway.lock.state(1).unlock_count == 0
