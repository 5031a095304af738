"""Sharing a door: who may share what, for when; a share dies with its original, checked by
the access decision and by a real unlock through a running gateway."""

from datetime import UTC, datetime, timedelta
from typing import Any

from api.access.models import Grant
from api.access.policy import DenyReason, RuleKind
from api.schedules import Schedule
from tests.citizen.helpers import (
    add_building,
    add_grant,
    add_group_with,
    add_owner,
    add_user,
    audit_actions,
    decide,
    error_code,
    get_grant,
    revoke,
)
from tests.conftest import ApiHarness
from tests.support import World


def window(start_h: float, end_h: float) -> dict[str, str]:
    now = datetime.now(UTC)
    return {
        "valid_from": (now + timedelta(hours=start_h)).isoformat(),
        "valid_until": (now + timedelta(hours=end_h)).isoformat(),
    }


def share_body(door_id: str, recipient: str, start_h: float = -0.1, end_h: float = 2) -> Any:
    return {"door_id": door_id, "recipient_user_id": recipient, **window(start_h, end_h)}


async def test_share_lets_the_recipient_in_and_either_side_may_revoke(api: ApiHarness) -> None:
    sharer, friend, third = await add_user(api), await add_user(api), await add_user(api)
    building, (door,) = await add_building(api)
    schedule = Schedule.every_day(datetime.min.time(), datetime.min.time()).model_dump(mode="json")
    original = await add_grant(
        api,
        user_id=sharer,
        building_id=building,
        shareable=True,
        schedule=schedule,
        valid_until=datetime.now(UTC) + timedelta(days=7),
    )
    assert (await decide(api, friend, door)).reason is DenyReason.NO_GRANT

    created = await api.client.post(
        "/v1/me/shares", json=share_body(door, friend), headers=api.token_for(sharer)
    )

    assert created.status_code == 201, created.text
    share = created.json()
    assert share["parent_grant_id"] == original
    assert (share["sharer_user_id"], share["recipient_user_id"]) == (sharer, friend)
    assert (share["door_id"], share["building_id"], share["status"]) == (door, building, "active")
    row = await get_grant(api, share["grant_id"])
    assert (row.user_id, row.door_id, row.created_by) == (friend, door, sharer)
    assert row.schedule == schedule, "a share never opens at a time the original could not"
    assert row.shareable is False
    decision = await decide(api, friend, door)
    assert (decision.allowed, decision.rule_kind) == (True, RuleKind.SHARE)

    given = (await api.client.get("/v1/me/shares", headers=api.token_for(sharer))).json()
    received = (await api.client.get("/v1/me/shares", headers=api.token_for(friend))).json()
    assert [s["grant_id"] for s in given["given"]] == [share["grant_id"]]
    assert [s["grant_id"] for s in received["received"]] == [share["grant_id"]]
    assert received["given"] == []

    doors = (await api.client.get("/v1/me/doors", headers=api.token_for(friend))).json()
    listed = [d for b in doors if b["building_id"] == building for d in b["doors"]]
    assert [(d["door_id"], d["via"]) for d in listed] == [(door, "share")]

    outsider = await api.client.delete(
        f"/v1/me/shares/{share['grant_id']}", headers=api.token_for(third)
    )
    assert (outsider.status_code, error_code(outsider)) == (404, "share_not_found")
    not_a_share = await api.client.delete(
        f"/v1/me/shares/{original}", headers=api.token_for(sharer)
    )
    assert (not_a_share.status_code, error_code(not_a_share)) == (404, "share_not_found")

    declined = await api.client.delete(
        f"/v1/me/shares/{share['grant_id']}", headers=api.token_for(friend)
    )
    again = await api.client.delete(
        f"/v1/me/shares/{share['grant_id']}", headers=api.token_for(sharer)
    )

    assert (declined.status_code, again.status_code) == (204, 204)
    assert (await decide(api, friend, door)).reason is DenyReason.REVOKED
    assert (await get_grant(api, share["grant_id"])).revoked_by == friend
    assert await audit_actions(api, share["grant_id"]) == [
        (sharer, "share.created"),
        (friend, "share.revoked"),
    ], "revoking twice is audited once"
    after = (await api.client.get("/v1/me/shares", headers=api.token_for(sharer))).json()
    assert after["given"] == []


async def test_what_may_not_be_shared(api: ApiHarness) -> None:
    owner = await add_owner(api)
    me, friend = await add_user(api), await add_user(api)
    headers = api.token_for(me)
    now = datetime.now(UTC)
    _, (plain, via_group, limited, expired, bounded, unshared) = await add_building(
        api, owner, doors=6
    )
    await add_grant(api, user_id=me, door_id=plain, shareable=False)
    group = await add_group_with(api, owner, me)
    await add_grant(api, group_id=group, door_id=via_group, shareable=True)
    await add_grant(api, user_id=me, door_id=limited, shareable=True, max_uses=3)
    await add_grant(
        api, user_id=me, door_id=expired, shareable=True, valid_until=now - timedelta(hours=1)
    )
    await add_grant(
        api, user_id=me, door_id=bounded, shareable=True, valid_until=now + timedelta(hours=1)
    )

    async def refusal(body: Any) -> tuple[int, str]:
        response = await api.client.post("/v1/me/shares", json=body, headers=headers)
        return response.status_code, error_code(response)

    assert await refusal(share_body(plain, friend)) == (403, "not_shareable")
    assert await refusal(share_body(via_group, friend)) == (403, "not_shareable")
    assert await refusal(share_body(limited, friend)) == (403, "not_shareable")
    assert await refusal(share_body(expired, friend)) == (403, "not_shareable")
    assert await refusal(share_body(unshared, friend)) == (403, "not_shareable")
    assert await refusal(share_body(bounded, friend, 0, 2)) == (422, "window_outside_original")
    assert await refusal(share_body(bounded, me, 0, 0.5)) == (422, "cannot_share_with_self")
    assert await refusal(share_body(bounded, "u-nobody", 0, 0.5)) == (422, "unknown_recipient")
    assert await refusal(share_body("no-such-door", friend)) == (404, "door_not_found")
    assert await refusal(share_body(bounded, friend, 0.5, 0.2)) == (422, "invalid_window")
    assert await refusal(share_body(bounded, friend, -3, -2)) == (422, "invalid_window")
    naive = {**share_body(bounded, friend), "valid_from": "2030-01-01T10:00:00"}
    assert await refusal(naive) == (422, "validation_error")

    fits = await api.client.post(
        "/v1/me/shares", json=share_body(bounded, friend, 0.1, 0.5), headers=headers
    )
    assert fits.status_code == 201, fits.text
    assert fits.json()["status"] == "upcoming"


async def test_a_share_dies_with_its_original_at_the_door(api: ApiHarness, world: World) -> None:
    gateway_id, doors = await world.add_gateway()
    door = next(iter(doors))
    running = await world.start_gateway(gateway_id, doors)
    original = await add_grant(
        api, user_id=world.citizen_id, building_id=world.building_id, shareable=True
    )
    created = await api.client.post(
        "/v1/me/shares",
        json=share_body(door, world.stranger_id),
        headers=api.token_for(world.citizen_id),
    )
    assert created.status_code == 201, created.text
    stranger = api.token_for(world.stranger_id)

    opened = await api.client.post(f"/v1/doors/{door}/unlock", headers=stranger)
    assert opened.status_code == 200, opened.text

    await revoke(api, original)
    decision = await decide(api, world.stranger_id, door)
    refused = await api.client.post(f"/v1/doors/{door}/unlock", headers=stranger)

    assert (decision.allowed, decision.reason) == (False, DenyReason.REVOKED)
    assert (refused.status_code, error_code(refused)) == (403, "revoked")
    assert running.lock.state(running.channel(door)).unlock_count == 1
    shares = (await api.client.get("/v1/me/shares", headers=stranger)).json()
    assert [s["status"] for s in shares["received"]] == ["ended"]
    history = (await api.client.get("/v1/me/activity", headers=stranger)).json()["items"]
    assert [(i["action"], i["decision"], i["reason"]) for i in history[:3]] == [
        ("unlock.requested", "deny", "revoked"),
        ("unlock.completed", "allow", None),
        ("unlock.requested", "allow", None),
    ]


async def test_a_share_dies_when_its_original_expires(api: ApiHarness) -> None:
    sharer, friend = await add_user(api), await add_user(api)
    _, (door,) = await add_building(api)
    original = await add_grant(
        api,
        user_id=sharer,
        door_id=door,
        shareable=True,
        valid_until=datetime.now(UTC) + timedelta(hours=5),
    )
    created = await api.client.post(
        "/v1/me/shares", json=share_body(door, friend, -0.1, 4), headers=api.token_for(sharer)
    )
    assert created.status_code == 201
    assert (await decide(api, friend, door)).allowed

    async with api.state.sessions() as session:
        row = await session.get(Grant, original)
        assert row is not None
        row.valid_until = datetime.now(UTC) - timedelta(seconds=1)
        await session.commit()

    assert (await decide(api, friend, door)).reason is DenyReason.REVOKED
