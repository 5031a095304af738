"""The API side of offline unlock on real PostgreSQL: issuing key-bound tokens under the unlock
policy, listing and revoking them, the hook for revoked grants, and the lifetime cap."""

import asyncio
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import jwt
import pytest
from sqlmodel import col, select

from api.access import policy
from api.access.models import Grant
from api.audit.models import AuditEvent
from api.gateways.models import Gateway as GatewayRow
from api.offline.models import OfflineToken
from api.offline.revocations import REPUBLISH_INTERVAL_S, RevocationPublisher
from api.offline.service import revoke_for_grants
from api.offline.window import allowed_until
from api.schedules import Schedule, TimeRange
from citykey_protocol.offline import OFFLINE_TOKEN_TYPE
from citykey_protocol.topics import GatewayTopics
from firmware_sim.phone import SimulatedPhone
from tests.conftest import ApiHarness
from tests.support import World, unique

pytestmark = pytest.mark.usefixtures("offline_cleanup")


async def request_token(
    api: ApiHarness, user_id: str, door_id: str, public_key: Any
) -> tuple[int, dict[str, Any]]:
    response = await api.client.post(
        f"/v1/doors/{door_id}/tokens",
        json={"public_key": public_key},
        headers=api.token_for(user_id),
    )
    return response.status_code, response.json()


async def audit_actions(api: ApiHarness, door_id: str) -> list[tuple[str, str | None, str | None]]:
    async with api.state.sessions() as session:
        statement = (
            select(AuditEvent)
            .where(
                col(AuditEvent.door_id) == door_id,
                col(AuditEvent.action).like("offline_token.%"),
            )
            .order_by(col(AuditEvent.id))
        )
        rows = (await session.execute(statement)).scalars().all()
    return [(r.action, r.decision, r.reason) for r in rows]


async def add_grant(api: ApiHarness, **fields: Any) -> str:
    grant_id = unique("grt")
    async with api.state.sessions() as session:
        session.add(Grant(id=grant_id, **fields))
        await session.commit()
    return grant_id


async def test_a_token_is_bound_to_the_apps_key_and_decided_like_an_unlock(
    api: ApiHarness, world: World
) -> None:
    gateway_id, doors = await world.add_gateway()
    door_id = next(iter(doors))
    await world.grant(world.citizen_id, door_id=door_id)
    phone = SimulatedPhone()

    status, body = await request_token(api, world.citizen_id, door_id, phone.public_jwk)

    assert status == 201, body
    header = jwt.get_unverified_header(body["token"])
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert header == {
        "alg": "ES256",
        "kid": api.state.keyring.active.kid,
        "typ": OFFLINE_TOKEN_TYPE,
    }
    assert claims["aud"] == gateway_id
    assert claims["door"] == door_id
    assert claims["sub"] == world.citizen_id
    assert claims["dur"] == 5
    assert claims["cnf"] == {"jkt": phone.thumbprint} == {"jkt": body["key_thumbprint"]}
    assert claims["exp"] - claims["iat"] == api.state.settings.offline_token_lifetime_s == 900
    assert claims["jti"] == body["jti"]
    async with api.state.sessions() as session:
        row = await session.get(OfflineToken, body["jti"])
    assert row is not None
    assert row.key_thumbprint == phone.thumbprint
    assert row.rule_id is not None
    assert await audit_actions(api, door_id) == [("offline_token.issued", "allow", None)]

    # Refusals are the unlock endpoint's, and audited.
    status, refused = await request_token(api, world.stranger_id, door_id, phone.public_jwk)
    assert (status, refused["error"]["code"]) == (403, "no_grant")
    status, missing = await request_token(api, world.citizen_id, "no-such-door", phone.public_jwk)
    assert (status, missing["error"]["code"]) == (404, "door_not_found")
    assert (await audit_actions(api, door_id))[-1] == ("offline_token.refused", "deny", "no_grant")

    # Figure: issuing over the in-process ASGI client, policy + sign + insert + audit. One
    # token per door of a 20-door gateway: the per-citizen, per-door rate limit stays clear.
    _, many = await world.add_gateway(doors=20)
    await world.grant(world.citizen_id, building=True)
    durations = []
    for each in many:
        started = time.perf_counter()
        status, _ = await request_token(api, world.citizen_id, each, phone.public_jwk)
        durations.append((time.perf_counter() - started) * 1000)
        assert status == 201
    print(
        f"\n[offline] issuing an offline token (in-process API, PostgreSQL): "
        f"median {statistics.median(durations):.2f} ms (n=20)"
    )


@pytest.mark.parametrize(
    "public_key",
    [
        "not a key",
        {"kty": "RSA", "n": "sXch", "e": "AQAB"},
        {"kty": "EC", "crv": "P-384", "x": "AAAA", "y": "AAAA"},
        {"kty": "EC", "crv": "P-256", "x": "short", "y": "short"},
        # A point that is not on the curve (x = y = 1).
        {"kty": "EC", "crv": "P-256", "x": "A" * 42 + "E", "y": "A" * 42 + "E"},
    ],
)
async def test_anything_but_a_p256_public_jwk_is_refused(
    api: ApiHarness, world: World, public_key: Any
) -> None:
    _, doors = await world.add_gateway()
    door_id = next(iter(doors))
    await world.grant(world.citizen_id, door_id=door_id)
    status, body = await request_token(api, world.citizen_id, door_id, public_key)
    assert (status, body["error"]["code"]) == (422, "bad_public_key"), body


async def test_a_private_key_is_refused_and_never_stored(api: ApiHarness, world: World) -> None:
    _, doors = await world.add_gateway()
    door_id = next(iter(doors))
    await world.grant(world.citizen_id, door_id=door_id)
    private = {**SimulatedPhone().public_jwk, "d": "c2VjcmV0"}
    status, body = await request_token(api, world.citizen_id, door_id, private)
    assert (status, body["error"]["code"]) == (422, "bad_public_key")
    assert "private" in body["error"]["message"]


async def test_use_limited_access_works_online_only(api: ApiHarness, world: World) -> None:
    _, doors = await world.add_gateway()
    door_id = next(iter(doors))
    await add_grant(api, user_id=world.citizen_id, door_id=door_id, max_uses=3)
    status, body = await request_token(api, world.citizen_id, door_id, SimulatedPhone().public_jwk)
    assert (status, body["error"]["code"]) == (403, "offline_not_available")
    async with api.state.sessions() as session:
        grant = (
            await session.execute(select(Grant).where(col(Grant.door_id) == door_id))
        ).scalar_one()
    assert grant.use_count == 0  # nothing consumed
    # An unlimited rule beside it does back a token, and is the rule it rests on.
    unlimited = await world.grant(world.citizen_id, building=True)
    status, body = await request_token(api, world.citizen_id, door_id, SimulatedPhone().public_jwk)
    assert status == 201, body
    async with api.state.sessions() as session:
        row = await session.get(OfflineToken, body["jti"])
    assert row is not None
    assert row.rule_id == unlimited


async def test_a_token_never_outlives_the_access_window(api: ApiHarness, world: World) -> None:
    _, doors = await world.add_gateway()
    door_id = next(iter(doors))
    zone = ZoneInfo("Europe/Oslo")  # the building's timezone
    now_local = datetime.now(zone)
    opened = now_local - timedelta(hours=1)
    closes = (now_local + timedelta(minutes=5)).replace(second=0, microsecond=0)
    schedule = Schedule(
        weekly=[TimeRange(weekday=opened.weekday(), start=opened.time(), end=closes.time())]
    )
    await add_grant(
        api,
        user_id=world.citizen_id,
        door_id=door_id,
        schedule=schedule.model_dump(mode="json"),
        respect_holidays=False,
    )
    status, body = await request_token(api, world.citizen_id, door_id, SimulatedPhone().public_jwk)
    assert status == 201, body
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert abs(claims["exp"] - closes.timestamp()) <= 1  # not iat + 15 minutes


def test_allowed_until_bisects_to_the_end_of_the_window() -> None:
    door = policy.DoorFacts(door_id="d", timezone="UTC")
    now = datetime(2026, 3, 2, 21, 50, 12, tzinfo=UTC)  # a Monday
    rule = policy.AccessRule(
        id="g",
        schedule=Schedule(
            weekly=[
                TimeRange(
                    weekday=0, start=datetime(1, 1, 1, 8).time(), end=datetime(1, 1, 1, 22).time()
                )
            ]
        ),
    )
    until = allowed_until(door, [rule], now, now + timedelta(minutes=15))
    assert until is not None
    assert timedelta(0) <= datetime(2026, 3, 2, 22, tzinfo=UTC) - until <= timedelta(seconds=1)
    assert allowed_until(door, [rule], now, now + timedelta(minutes=5)) == now + timedelta(
        minutes=5
    )
    late = datetime(2026, 3, 2, 22, 30, tzinfo=UTC)
    assert allowed_until(door, [rule], late, late + timedelta(minutes=15)) is None
    expiring = policy.AccessRule(id="v", valid_until=now + timedelta(seconds=100))
    ends = allowed_until(door, [expiring], now, now + timedelta(hours=1))
    assert ends is not None
    assert now + timedelta(seconds=99) <= ends < now + timedelta(seconds=100)


async def test_my_tokens_are_listed_and_only_i_can_revoke_them(
    api: ApiHarness, world: World
) -> None:
    gateway_id, doors = await world.add_gateway()
    door_id = next(iter(doors))
    await world.grant(world.citizen_id, door_id=door_id)
    phone = SimulatedPhone()
    _, first = await request_token(api, world.citizen_id, door_id, phone.public_jwk)
    _, second = await request_token(api, world.citizen_id, door_id, phone.public_jwk)
    mine = api.token_for(world.citizen_id)

    listed = (await api.client.get("/v1/me/offline-tokens", headers=mine)).json()
    assert {t["jti"] for t in listed} == {first["jti"], second["jti"]}
    assert all(t["active"] and "token" not in t for t in listed)
    others = (
        await api.client.get("/v1/me/offline-tokens", headers=api.token_for(world.stranger_id))
    ).json()
    assert others == []

    theft = await api.client.delete(
        f"/v1/me/offline-tokens/{first['jti']}", headers=api.token_for(world.stranger_id)
    )
    assert (theft.status_code, theft.json()["error"]["code"]) == (404, "offline_token_not_found")
    revoked = await api.client.delete(f"/v1/me/offline-tokens/{first['jti']}", headers=mine)
    assert revoked.status_code == 200
    assert revoked.json()["active"] is False
    again = await api.client.delete(f"/v1/me/offline-tokens/{first['jti']}", headers=mine)
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]  # idempotent
    assert [a for a in await audit_actions(api, door_id) if a[0] == "offline_token.revoked"] == [
        ("offline_token.revoked", None, None)
    ]
    version = await revocations_version(api, gateway_id)
    assert version >= int((time.time() - 60) * 1000)  # at least the time in milliseconds


async def test_revoking_a_grant_revokes_its_offline_tokens_through_the_hook(
    api: ApiHarness, world: World
) -> None:
    gateway_id, doors = await world.add_gateway()
    door_id = next(iter(doors))
    grant_id = await world.grant(world.citizen_id, door_id=door_id)
    _, issued = await request_token(api, world.citizen_id, door_id, SimulatedPhone().public_jwk)
    state = api.state
    async with world.broker.client(unique("listen")) as listener:
        await listener.subscribe(GatewayTopics(gateway_id).revocations, qos=1)
        async with state.sessions() as session:
            concerned = await revoke_for_grants(session, [grant_id], actor="u-manager")
            await session.commit()
        assert concerned == {gateway_id}
        # The app's own publisher carries it out at its next pass (every 5 s).
        started = time.perf_counter()
        async with asyncio.timeout(REPUBLISH_INTERVAL_S + 3):
            message = await anext(aiter(listener.messages))
        print(
            f"\n[offline] grant revoked to list published by the background pass: "
            f"{(time.perf_counter() - started) * 1000:.0f} ms (pass every "
            f"{REPUBLISH_INTERVAL_S:.0f} s)"
        )
    assert isinstance(message.payload, bytes)
    claims = jwt.decode(message.payload, options={"verify_signature": False})
    assert claims["jtis"] == [issued["jti"]]
    assert claims["aud"] == gateway_id
    assert claims["ver"] == await revocations_version(api, gateway_id)
    assert ("offline_token.revoked", None, None) in await audit_actions(api, door_id)

    # Another process (say, just restarted) draws a version of its own once, then only
    # re-sends the current one when due for a refresh.
    other = RevocationPublisher(
        state.sessions, state.relay, state.keyring, state.settings.issuer, refresh_s=0.0
    )
    assert await other.sync([gateway_id]) == [gateway_id]
    drawn = await revocations_version(api, gateway_id)
    assert drawn > claims["ver"]
    assert await other.sync([gateway_id]) == [gateway_id]
    assert await revocations_version(api, gateway_id) == drawn
    quiet = RevocationPublisher(state.sessions, state.relay, state.keyring, state.settings.issuer)
    assert await quiet.sync([gateway_id]) == [gateway_id]
    assert await quiet.sync([gateway_id]) == []  # nothing new, no refresh due


async def revocations_version(api: ApiHarness, gateway_id: str) -> int:
    async with api.state.sessions() as session:
        row = await session.get(GatewayRow, gateway_id)
    assert row is not None
    return row.revocations_version
