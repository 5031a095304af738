"""Phone verification: the code through the development sender, its limits, and grants that
waited for the number becoming the citizen's."""

import asyncio
import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import update
from sqlmodel import col, select

from api.access.policy import DenyReason
from api.bookings.models import PhoneVerification
from api.identity.models import User
from api.me.phone_sender import dev_phone_sender
from api.me.service import hash_code
from tests.citizen.helpers import (
    add_building,
    add_grant,
    add_user,
    audit_actions,
    decide,
    error_code,
    get_grant,
)
from tests.conftest import ApiHarness


def new_phone() -> str:
    """A unique Norwegian mobile number for this test (the database is shared)."""
    return f"+479{secrets.randbelow(10**7):07d}"


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


async def request_code(api: ApiHarness, user_id: str, phone: str) -> str:
    response = await api.client.post(
        "/v1/me/phone", json={"phone": phone}, headers=api.token_for(user_id)
    )
    assert response.status_code == 202, response.text
    code = dev_phone_sender(api.state).last_code(phone)
    assert code is not None
    return code


async def test_verifying_a_number_claims_the_grants_waiting_for_it(api: ApiHarness) -> None:
    me = await add_user(api)
    phone = new_phone()
    _, (door, other_door) = await add_building(api, doors=2)
    waiting = await add_grant(api, subject_phone=phone, door_id=door, created_by="client:x")
    await add_grant(api, subject_phone=new_phone(), door_id=other_door)
    withdrawn = await add_grant(
        api, subject_phone=phone, door_id=other_door, revoked_at=datetime.now(UTC)
    )
    assert (await decide(api, me, door)).reason is DenyReason.NO_GRANT
    headers = api.token_for(me)

    started = await api.client.post("/v1/me/phone", json={"phone": phone}, headers=headers)
    assert started.status_code == 202, started.text
    assert started.json()["attempts_allowed"] == 5
    expires = datetime.fromisoformat(started.json()["expires_at"])
    assert timedelta(minutes=9) < expires - datetime.now(UTC) <= timedelta(minutes=10)
    code = dev_phone_sender(api.state).last_code(phone)
    assert code is not None
    assert len(code) == 6
    async with api.state.sessions() as session:
        stored = (
            await session.execute(
                select(PhoneVerification).where(col(PhoneVerification.user_id) == me)
            )
        ).scalar_one()
    assert code not in stored.code_hash
    assert stored.code_hash == hash_code(stored.id, code)

    verified = await api.client.post("/v1/me/phone/verify", json={"code": code}, headers=headers)

    assert verified.status_code == 200, verified.text
    assert verified.json()["phone"] == phone
    assert verified.json()["claimed_grants"] == 1
    claimed = await get_grant(api, waiting)
    assert (claimed.user_id, claimed.subject_phone) == (me, None)
    assert (await decide(api, me, door)).allowed
    assert (await decide(api, me, other_door)).reason is DenyReason.NO_GRANT
    assert (await get_grant(api, withdrawn)).subject_phone == phone, "history stays as it was"
    async with api.state.sessions() as session:
        user = await session.get(User, me)
        assert user is not None
        assert (user.phone, user.phone_verified_at is not None) == (phone, True)
    assert await audit_actions(api, waiting) == [(me, "grant.claimed")]
    assert await audit_actions(api, me) == [(me, "user.phone_verified")]
    replay = await api.client.post("/v1/me/phone/verify", json={"code": code}, headers=headers)
    assert (replay.status_code, error_code(replay)) == (404, "verification_not_found")


async def test_five_wrong_codes_lock_the_code(api: ApiHarness) -> None:
    me = await add_user(api)
    phone = new_phone()
    code = await request_code(api, me, phone)
    headers = api.token_for(me)

    lefts = []
    for _ in range(5):
        response = await api.client.post(
            "/v1/me/phone/verify", json={"code": wrong(code)}, headers=headers
        )
        assert (response.status_code, error_code(response)) == (422, "wrong_code")
        lefts.append(response.json()["error"]["attempts_left"])
    locked = await api.client.post("/v1/me/phone/verify", json={"code": code}, headers=headers)

    assert lefts == [4, 3, 2, 1, 0], "each wrong attempt is counted, though the request fails"
    assert (locked.status_code, error_code(locked)) == (429, "too_many_attempts")

    fresh = await request_code(api, me, phone)
    ok = await api.client.post("/v1/me/phone/verify", json={"code": fresh}, headers=headers)
    assert ok.status_code == 200, ok.text


async def test_expired_code_and_bad_input(api: ApiHarness) -> None:
    me = await add_user(api)
    headers = api.token_for(me)
    nothing = await api.client.post("/v1/me/phone/verify", json={"code": "123456"}, headers=headers)
    assert (nothing.status_code, error_code(nothing)) == (404, "verification_not_found")
    code = await request_code(api, me, new_phone())
    async with api.state.sessions() as session:
        await session.execute(
            update(PhoneVerification)
            .where(col(PhoneVerification.user_id) == me)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        await session.commit()

    expired = await api.client.post("/v1/me/phone/verify", json={"code": code}, headers=headers)

    assert (expired.status_code, error_code(expired)) == (410, "code_expired")
    for bad in ("4791234567", "+0791234567", "+47 912 34 567", "+47", "+4791234567890123"):
        response = await api.client.post("/v1/me/phone", json={"phone": bad}, headers=headers)
        assert (response.status_code, error_code(response)) == (422, "validation_error"), bad
    short = await api.client.post("/v1/me/phone/verify", json={"code": "12345"}, headers=headers)
    assert (short.status_code, error_code(short)) == (422, "validation_error")


async def test_codes_per_hour_are_limited(api: ApiHarness) -> None:
    me = await add_user(api)
    for _ in range(5):
        await request_code(api, me, new_phone())
    sixth = await api.client.post(
        "/v1/me/phone", json={"phone": new_phone()}, headers=api.token_for(me)
    )
    assert (sixth.status_code, error_code(sixth)) == (429, "too_many_codes")


async def test_a_number_verified_by_someone_else_is_taken(api: ApiHarness) -> None:
    phone = new_phone()
    await add_user(api, phone=phone)
    me = await add_user(api)
    code = await request_code(api, me, phone)

    taken = await api.client.post(
        "/v1/me/phone/verify", json={"code": code}, headers=api.token_for(me)
    )

    assert (taken.status_code, error_code(taken)) == (409, "phone_taken")
    async with api.state.sessions() as session:
        user = await session.get(User, me)
        assert user is not None
        assert user.phone is None


async def test_concurrent_guesses_cannot_exceed_the_attempt_limit(api: ApiHarness) -> None:
    me = await add_user(api)
    code = await request_code(api, me, new_phone())
    headers = api.token_for(me)

    responses = await asyncio.gather(
        *(
            api.client.post("/v1/me/phone/verify", json={"code": wrong(code)}, headers=headers)
            for _ in range(8)
        )
    )

    codes = sorted(error_code(r) for r in responses)
    assert codes == ["too_many_attempts"] * 3 + ["wrong_code"] * 5
