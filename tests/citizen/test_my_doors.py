"""GET /v1/me/doors and GET /v1/me/activity over the real API and PostgreSQL."""

from datetime import UTC, datetime, timedelta
from typing import Any

from api.audit.models import AuditEvent
from tests.citizen.helpers import add_building, add_grant, add_owner, add_user, error_code
from tests.conftest import ApiHarness


def buildings_by_id(body: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {b["building_id"]: b for b in body}


def doors_by_id(building: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["door_id"]: d for d in building["doors"]}


async def test_my_doors_now_later_and_not_mine(api: ApiHarness) -> None:
    now = datetime.now(UTC)
    owner = await add_owner(api)
    me = await add_user(api)
    stranger = await add_user(api)
    library, (live, later, ended, revoked) = await add_building(api, owner, doors=4, name="Library")
    hall, hall_doors = await add_building(api, owner, doors=2, name="Hall")
    await add_grant(api, user_id=me, door_id=live)
    starts = (now + timedelta(hours=3)).replace(microsecond=0)
    await add_grant(api, user_id=me, door_id=later, valid_from=starts)
    await add_grant(api, user_id=me, door_id=ended, valid_until=now - timedelta(days=1))
    await add_grant(api, user_id=me, door_id=revoked, revoked_at=now - timedelta(minutes=1))
    await add_grant(api, user_id=me, building_id=hall)

    response = await api.client.get("/v1/me/doors", headers=api.token_for(me))

    assert response.status_code == 200, response.text
    mine = buildings_by_id(response.json())
    assert mine[library]["building_name"] == "Library"
    assert mine[library]["timezone"] == "Europe/Oslo"
    doors = doors_by_id(mine[library])
    assert set(doors) == {live, later}, "ended and revoked grants are not 'my doors'"
    assert doors[live] == {
        "door_id": live,
        "name": "Door 1",
        "can_open_now": True,
        "reason": None,
        "next_window": None,
        "via": "grant",
    }
    assert doors[later]["can_open_now"] is False
    assert doors[later]["reason"] == "not_yet_valid"
    assert datetime.fromisoformat(doors[later]["next_window"]) == starts
    assert set(doors_by_id(mine[hall])) == set(hall_doors)
    assert all(d["can_open_now"] for d in mine[hall]["doors"])

    theirs = await api.client.get("/v1/me/doors", headers=api.token_for(stranger))
    assert theirs.status_code == 200
    assert not {library, hall} & set(buildings_by_id(theirs.json()))


async def test_lockdown_keeps_live_doors_and_drops_dead_ones(api: ApiHarness) -> None:
    me = await add_user(api)
    building, (live, ended) = await add_building(api, doors=2, lockdown=True)
    await add_grant(api, user_id=me, door_id=live)
    await add_grant(
        api, user_id=me, door_id=ended, valid_until=datetime.now(UTC) - timedelta(days=30)
    )

    response = await api.client.get("/v1/me/doors", headers=api.token_for(me))

    doors = doors_by_id(buildings_by_id(response.json())[building])
    # The policy answers "lockdown" for both doors before looking at grants; the list still
    # leaves out the door whose only grant ended a month ago.
    assert set(doors) == {live}
    assert (doors[live]["can_open_now"], doors[live]["reason"]) == (False, "lockdown")


async def test_my_doors_needs_a_signed_in_user(api: ApiHarness) -> None:
    response = await api.client.get("/v1/me/doors")
    assert (response.status_code, error_code(response)) == (401, "unauthorized")


async def test_activity_is_mine_only_newest_first_and_paginated(api: ApiHarness) -> None:
    me = await add_user(api)
    other = await add_user(api)
    _, (door,) = await add_building(api)
    base = datetime.now(UTC) - timedelta(minutes=10)
    async with api.state.sessions() as session:
        for minute, (actor, action, result) in enumerate(
            [
                (me, "unlock.requested", None),
                (me, "unlock.completed", "unlocked"),
                (other, "unlock.requested", None),
                (me, "share.created", None),
                (me, "unlock.requested", None),
            ]
        ):
            session.add(
                AuditEvent(
                    ts=base + timedelta(minutes=minute),
                    actor=actor,
                    action=action,
                    door_id=door,
                    decision="allow",
                    result=result,
                    command_id=f"cmd-{minute}",
                )
            )
        await session.commit()
    headers = api.token_for(me)

    first = await api.client.get("/v1/me/activity?limit=2", headers=headers)
    assert first.status_code == 200, first.text
    page = first.json()
    cursor = page["next_cursor"]
    second = (
        await api.client.get(f"/v1/me/activity?limit=2&cursor={cursor}", headers=headers)
    ).json()

    commands = [i["command_id"] for i in page["items"] + second["items"]]
    assert commands == ["cmd-4", "cmd-1", "cmd-0"], "own unlock rows only, newest first"
    assert second["next_cursor"] is None
    assert page["items"][0]["door_name"] == "Door 1"
    assert page["items"][1]["result"] == "unlocked"

    bad = await api.client.get("/v1/me/activity?cursor=garbage", headers=headers)
    assert (bad.status_code, error_code(bad)) == (422, "invalid_cursor")
    too_many = await api.client.get("/v1/me/activity?limit=1000", headers=headers)
    assert (too_many.status_code, error_code(too_many)) == (422, "validation_error")
