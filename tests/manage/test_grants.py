"""Grants over HTTP against the real PostgreSQL: datetimes that must say which instant they
mean, scope and owner rules, listing filters and pages, changes and revocation with their
audit trail, and revocation felt by the very next unlock through a real gateway."""

from datetime import UTC, date, datetime, timedelta
from typing import Any

from api.access.models import Grant
from api.access.policy import DenyReason
from api.access.service import AccessService
from api.bookings.models import Booking, BookingClient
from api.identity.models import User
from tests.conftest import ApiHarness
from tests.manage.helpers_access import (
    Site,
    add_building,
    add_citizen,
    add_manager,
    add_scope,
    add_site,
    changes,
    code,
    every_page,
)
from tests.support import World, unique

DAILY = {"weekly": [{"weekday": d, "start": "07:00", "end": "23:00"} for d in range(7)]}


async def post_grant(
    api: ApiHarness, manager_id: str, expect: int = 201, **body: Any
) -> dict[str, Any]:
    response = await api.client.post("/v1/grants", json=body, headers=api.token_for(manager_id))
    assert response.status_code == expect, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def new_group(api: ApiHarness, site: Site, *members: str) -> str:
    headers = api.token_for(site.owner_manager_id)
    response = await api.client.post(
        "/v1/groups", json={"owner_id": site.owner_id, "name": unique("g")}, headers=headers
    )
    assert response.status_code == 201, response.text
    group_id: str = response.json()["id"]
    for user_id in members:
        added = await api.client.put(f"/v1/groups/{group_id}/members/{user_id}", headers=headers)
        assert added.status_code == 201
    return group_id


async def decide(api: ApiHarness, user_id: str, door_id: str, now: datetime) -> Any:
    async with api.state.sessions() as session:
        user = await session.get(User, user_id)
        assert user is not None
        found = await AccessService(session).decide(user, door_id, now)
    assert found is not None
    return found[-1]  # the decision comes last


async def test_a_grant_is_created_read_back_and_audited(api: ApiHarness) -> None:
    site = await add_site(api)
    citizen = await add_citizen(api)

    grant = await post_grant(
        api,
        site.building_manager_id,
        subject={"user_id": citizen},
        target={"door_id": site.door_id},
        valid_from="2030-01-10T08:00:00+01:00",
        valid_until="2030-06-01T00:00:00Z",
        schedule=DAILY,
        max_uses=3,
        shareable=True,
        note="Choir",
    )
    fetched = await api.client.get(
        f"/v1/grants/{grant['id']}", headers=api.token_for(site.owner_manager_id)
    )

    assert grant["subject"] == {"user_id": citizen, "group_id": None, "phone": None}
    assert grant["target"] == {"door_id": site.door_id, "building_id": None}
    assert grant["building_id"] == site.building_id
    assert datetime.fromisoformat(grant["valid_from"]) == datetime(2030, 1, 10, 7, tzinfo=UTC)
    assert datetime.fromisoformat(grant["valid_until"]) == datetime(2030, 6, 1, tzinfo=UTC)
    assert grant["schedule"]["weekly"][0] == {"weekday": 0, "start": "07:00:00", "end": "23:00:00"}
    assert (grant["max_uses"], grant["use_count"], grant["shareable"]) == (3, 0, True)
    assert grant["created_by"] == site.building_manager_id
    assert grant["revoked_at"] is None
    assert fetched.json() == grant
    [row] = await changes(api, grant["id"])
    assert (row.action, row.actor) == ("grant.created", site.building_manager_id)
    assert (row.building_id, row.door_id) == (site.building_id, site.door_id)
    assert row.detail["before"] is None
    assert row.detail["after"]["user_id"] == citizen


async def test_datetimes_must_name_their_instant(api: ApiHarness) -> None:
    site = await add_site(api)
    citizen = await add_citizen(api)
    manager = site.owner_manager_id
    base: dict[str, Any] = {
        "subject": {"user_id": citizen},
        "target": {"building_id": site.building_id},
    }

    local = await post_grant(
        api,
        manager,
        **base,
        valid_from="2030-01-15T07:00:00",
        valid_until="2030-07-15T23:00",
        timezone="Europe/Oslo",
    )
    offset_wins = await post_grant(
        api, manager, **base, valid_from="2030-01-15T07:00:00+00:00", timezone="Europe/Oslo"
    )
    naive = await post_grant(api, manager, 422, **base, valid_from="2030-01-15T07:00:00")
    gap = await post_grant(
        api, manager, 422, **base, valid_from="2030-03-31T02:30", timezone="Europe/Oslo"
    )
    repeated = await post_grant(
        api, manager, 422, **base, valid_until="2030-10-27T02:30", timezone="Europe/Oslo"
    )
    bad_zone = await post_grant(
        api, manager, 422, **base, valid_from="2030-01-15T07:00", timezone="Europe/Atlantis"
    )

    # Winter is UTC+1 and summer UTC+2 in Oslo.
    assert datetime.fromisoformat(local["valid_from"]) == datetime(2030, 1, 15, 6, tzinfo=UTC)
    assert datetime.fromisoformat(local["valid_until"]) == datetime(2030, 7, 15, 21, tzinfo=UTC)
    assert datetime.fromisoformat(offset_wins["valid_from"]) == datetime(2030, 1, 15, 7, tzinfo=UTC)
    assert naive["error"]["code"] == "naive_datetime"
    assert naive["error"]["field"] == "valid_from"
    assert gap["error"]["code"] == "nonexistent_local_time"
    assert repeated["error"]["code"] == "ambiguous_local_time"
    assert bad_zone["error"]["code"] == "invalid_timezone"


async def test_bad_grant_input_gets_clear_errors(api: ApiHarness) -> None:
    site = await add_site(api)
    citizen = await add_citizen(api)
    manager = site.owner_manager_id
    base: dict[str, Any] = {
        "subject": {"user_id": citizen},
        "target": {"door_id": site.door_id},
    }
    now = datetime.now(UTC)

    cases = {
        "invalid_window": {
            **base,
            "valid_from": "2030-02-01T00:00:00Z",
            "valid_until": "2030-02-01T00:00:00Z",
        },
        "already_expired": {**base, "valid_until": (now - timedelta(days=1)).isoformat()},
        "empty_schedule": {**base, "schedule": {"weekly": []}},
        "validation_error": {**base, "subject": {"user_id": citizen, "group_id": "grp-x"}},
    }
    for expected, body in cases.items():
        answer = await post_grant(api, manager, 422, **body)
        assert answer["error"]["code"] == expected, body
    for body in (
        {**base, "target": {}},
        {**base, "max_uses": 0},
        {**base, "schedule": {"weekly": [{"weekday": 7, "start": "07:00", "end": "08:00"}]}},
        {**base, "colour": "blue"},
    ):
        answer = await post_grant(api, manager, 422, **body)
        assert answer["error"]["code"] == "validation_error", body


async def test_scope_and_owner_rules(api: ApiHarness) -> None:
    site = await add_site(api)
    annex = await add_building(api, site.owner_id)
    other = await add_site(api)
    citizen = await add_citizen(api)
    group = await new_group(api, site, citizen)
    other_group = await new_group(api, other)
    both = await add_manager(api, owner_id=site.owner_id)
    await add_scope(api, both, owner_id=other.owner_id)

    # A building manager may give their owner's group access to their building.
    by_building_manager = await post_grant(
        api,
        site.building_manager_id,
        subject={"group_id": group},
        target={"door_id": site.door_id},
    )
    # The owner's group may open any building of the same owner.
    to_annex = await post_grant(
        api, both, subject={"group_id": group}, target={"building_id": annex.building_id}
    )
    mismatch = await post_grant(
        api, both, 422, subject={"group_id": group}, target={"building_id": other.building_id}
    )
    unseen_group = await post_grant(
        api,
        site.owner_manager_id,
        404,
        subject={"group_id": other_group},
        target={"building_id": site.building_id},
    )
    foreign_door = await post_grant(
        api,
        site.owner_manager_id,
        404,
        subject={"user_id": citizen},
        target={"door_id": other.door_id},
    )
    foreign_building = await post_grant(
        api,
        site.building_manager_id,
        404,
        subject={"user_id": citizen},
        target={"building_id": annex.building_id},
    )
    unknown_user = await post_grant(
        api,
        site.owner_manager_id,
        404,
        subject={"user_id": "u-nobody"},
        target={"door_id": site.door_id},
    )
    stranger = api.token_for(other.owner_manager_id)
    url = f"/v1/grants/{by_building_manager['id']}"

    assert by_building_manager["subject"]["group_id"] == group
    assert to_annex["building_id"] == annex.building_id
    assert mismatch["error"]["code"] == "group_owner_mismatch"
    assert unseen_group["error"]["code"] == "group_not_found"
    assert foreign_door["error"]["code"] == "door_not_found"
    assert foreign_building["error"]["code"] == "building_not_found"
    assert unknown_user["error"]["code"] == "user_not_found"
    for response in (
        await api.client.get(url, headers=stranger),
        await api.client.patch(url, json={"note": "x"}, headers=stranger),
        await api.client.delete(url, headers=stranger),
    ):
        assert (response.status_code, code(response)) == (404, "grant_not_found")
    annex_seen_by_building_manager = await api.client.get(
        f"/v1/grants/{to_annex['id']}", headers=api.token_for(site.building_manager_id)
    )
    assert annex_seen_by_building_manager.status_code == 404


async def test_listing_filters_and_pages(api: ApiHarness) -> None:
    site = await add_site(api, doors=2)
    first_door, second_door = site.door_ids
    kari, ola = await add_citizen(api), await add_citizen(api)
    group = await new_group(api, site, kari)
    manager = site.owner_manager_id
    made = [
        await post_grant(api, manager, subject={"user_id": kari}, target={"door_id": first_door}),
        await post_grant(api, manager, subject={"user_id": ola}, target={"door_id": second_door}),
        await post_grant(
            api, manager, subject={"group_id": group}, target={"building_id": site.building_id}
        ),
        await post_grant(
            api, manager, subject={"user_id": kari}, target={"building_id": site.building_id}
        ),
        await post_grant(api, manager, subject={"user_id": ola}, target={"door_id": first_door}),
    ]
    ids = [g["id"] for g in made]
    revoked = await api.client.delete(f"/v1/grants/{ids[4]}", headers=api.token_for(manager))
    assert revoked.status_code == 200
    headers = api.token_for(site.building_manager_id)

    async def listed(limit: int = 50, **params: Any) -> list[str]:
        items, _ = await every_page(api.client, "/v1/grants", headers, limit=limit, params=params)
        return [g["id"] for g in items]

    assert await listed(building_id=site.building_id) == ids[:4]
    assert await listed(building_id=site.building_id, include_revoked=True) == ids
    assert await listed(door_id=first_door) == [ids[0]]
    assert await listed(door_id=first_door, include_revoked="true") == [ids[0], ids[4]]
    assert await listed(user_id=kari) == [ids[0], ids[3]]
    assert await listed(group_id=group) == [ids[2]]
    assert await listed(user_id=ola, door_id=second_door) == [ids[1]]
    paged, pages = await every_page(
        api.client,
        "/v1/grants",
        headers,
        limit=2,
        params={"building_id": site.building_id, "include_revoked": True},
    )
    assert ([g["id"] for g in paged], pages) == (ids, 3)
    stranger = await add_site(api)
    outsider = await api.client.get(
        "/v1/grants",
        params={"building_id": site.building_id},
        headers=api.token_for(stranger.owner_manager_id),
    )
    assert outsider.json() == {"items": [], "next_cursor": None}
    bad = await api.client.get("/v1/grants", params={"cursor": "@@"}, headers=headers)
    assert (bad.status_code, code(bad)) == (422, "invalid_cursor")


async def test_changes_are_validated_and_audited(api: ApiHarness) -> None:
    site = await add_site(api)
    citizen = await add_citizen(api)
    manager = site.owner_manager_id
    headers = api.token_for(manager)
    grant = await post_grant(
        api,
        manager,
        subject={"user_id": citizen},
        target={"door_id": site.door_id},
        valid_from="2030-01-01T00:00:00Z",
        valid_until="2030-02-01T00:00:00Z",
        schedule=DAILY,
        max_uses=2,
    )
    url = f"/v1/grants/{grant['id']}"

    extended = await api.client.patch(
        url,
        json={"valid_until": "2030-03-01T00:00", "timezone": "Europe/Oslo", "note": "extended"},
        headers=headers,
    )
    cleared = await api.client.patch(
        url, json={"schedule": None, "max_uses": None, "shareable": True}, headers=headers
    )
    inverted = await api.client.patch(
        url, json={"valid_from": "2030-04-01T00:00:00Z"}, headers=headers
    )
    naive = await api.client.patch(url, json={"valid_from": "2030-01-02T00:00"}, headers=headers)
    null_note = await api.client.patch(url, json={"note": None}, headers=headers)
    nothing = await api.client.patch(url, json={}, headers=headers)

    assert extended.status_code == 200, extended.text
    assert datetime.fromisoformat(extended.json()["valid_until"]) == datetime(
        2030, 2, 28, 23, tzinfo=UTC
    )
    assert extended.json()["note"] == "extended"
    assert cleared.status_code == 200
    body = cleared.json()
    assert (body["schedule"], body["max_uses"], body["shareable"]) == (None, None, True)
    assert body["valid_from"] == grant["valid_from"]
    assert (inverted.status_code, code(inverted)) == (422, "invalid_window")
    assert (naive.status_code, code(naive)) == (422, "naive_datetime")
    assert (null_note.status_code, code(null_note)) == (422, "validation_error")
    assert nothing.json() == body
    rows = await changes(api, grant["id"])
    assert [r.action for r in rows] == ["grant.created", "grant.updated", "grant.updated"]
    first, second = rows[1].detail, rows[2].detail
    assert first["before"]["valid_until"].startswith("2030-02-01T00:00:00")
    assert first["after"]["valid_until"].startswith("2030-02-28T23:00:00")
    assert (first["before"]["note"], first["after"]["note"]) == ("", "extended")
    assert second["before"]["schedule"] is not None
    assert second["after"]["schedule"] is None
    assert (second["before"]["max_uses"], second["after"]["max_uses"]) == (2, None)

    await api.client.delete(url, headers=headers)
    after_revoke = await api.client.patch(url, json={"note": "late"}, headers=headers)
    assert (after_revoke.status_code, code(after_revoke)) == (409, "grant_revoked")


async def test_grants_of_bookings_are_changed_by_their_booking_system(api: ApiHarness) -> None:
    site = await add_site(api)
    citizen = await add_citizen(api)
    grant_id = unique("grt")
    async with api.state.sessions() as session:
        client = BookingClient(
            id=unique("bkc"), name="Booking", owner_id=site.owner_id, secret_hash="x"
        )
        session.add(client)
        await session.flush()
        booking = Booking(
            id=unique("bkg"),
            client_id=client.id,
            external_id=unique("ext"),
            version=1,
            valid_from=datetime(2030, 1, 1, tzinfo=UTC),
            valid_until=datetime(2030, 1, 2, tzinfo=UTC),
            document={},
        )
        session.add(booking)
        await session.flush()
        session.add(
            Grant(id=grant_id, user_id=citizen, door_id=site.door_id, booking_id=booking.id)
        )
        await session.commit()
    headers = api.token_for(site.owner_manager_id)

    patched = await api.client.patch(f"/v1/grants/{grant_id}", json={"note": "x"}, headers=headers)
    revoked = await api.client.delete(f"/v1/grants/{grant_id}", headers=headers)

    assert (patched.status_code, code(patched)) == (409, "grant_from_booking")
    assert revoked.status_code == 200
    assert revoked.json()["revoked_by"] == site.owner_manager_id


async def test_revocation_is_idempotent_and_kills_shares(api: ApiHarness) -> None:
    site = await add_site(api)
    owner, friend, friend_of_friend = [await add_citizen(api) for _ in range(3)]
    manager = site.owner_manager_id
    grant = await post_grant(
        api, manager, subject={"user_id": owner}, target={"door_id": site.door_id}, shareable=True
    )
    share_id, reshare_id = unique("grt"), unique("grt")
    async with api.state.sessions() as session:
        # Citizens share through their own endpoint; here the rows are what matters.
        session.add(
            Grant(id=share_id, user_id=friend, door_id=site.door_id, parent_grant_id=grant["id"])
        )
        await session.flush()
        session.add(
            Grant(
                id=reshare_id,
                user_id=friend_of_friend,
                door_id=site.door_id,
                parent_grant_id=share_id,
            )
        )
        await session.commit()
    now = datetime.now(UTC)
    assert (await decide(api, friend, site.door_id, now)).allowed
    headers = api.token_for(manager)

    first = await api.client.delete(f"/v1/grants/{grant['id']}", headers=headers)
    second = await api.client.delete(f"/v1/grants/{grant['id']}", headers=headers)
    share = await api.client.get(f"/v1/grants/{share_id}", headers=headers)
    reshare = await api.client.get(f"/v1/grants/{reshare_id}", headers=headers)

    assert first.status_code == 200
    assert first.json()["revoked_at"] is not None
    assert first.json()["revoked_by"] == manager
    assert second.json() == first.json()
    assert share.json()["revoked_at"] == first.json()["revoked_at"]
    assert reshare.json()["revoked_by"] == manager
    later = datetime.now(UTC) + timedelta(seconds=1)
    for user_id in (owner, friend, friend_of_friend):
        decision = await decide(api, user_id, site.door_id, later)
        assert (decision.allowed, decision.reason) == (False, DenyReason.REVOKED)
    for grant_id in (grant["id"], share_id, reshare_id):
        rows = [r for r in await changes(api, grant_id) if r.action == "grant.revoked"]
        assert len(rows) == 1, grant_id
        assert rows[0].detail["before"]["revoked_at"] is None
        assert rows[0].detail["after"]["revoked_by"] == manager


async def test_group_membership_decides_access(api: ApiHarness) -> None:
    site = await add_site(api)
    kari, ola = await add_citizen(api), await add_citizen(api)
    group = await new_group(api, site, kari)
    await post_grant(
        api,
        site.owner_manager_id,
        subject={"group_id": group},
        target={"building_id": site.building_id},
        schedule=DAILY,
    )
    # A Wednesday 10:00 in Oslo (UTC+2 in summer).
    at_ten = datetime(2030, 6, 12, 8, tzinfo=UTC)

    member = await decide(api, kari, site.door_id, at_ten)
    outsider = await decide(api, ola, site.door_id, at_ten)
    removed = await api.client.delete(
        f"/v1/groups/{group}/members/{kari}", headers=api.token_for(site.owner_manager_id)
    )
    former = await decide(api, kari, site.door_id, at_ten)

    assert member.allowed
    assert (outsider.allowed, outsider.reason) == (False, DenyReason.NO_GRANT)
    assert removed.status_code == 204
    assert (former.allowed, former.reason) == (False, DenyReason.NO_GRANT)


async def test_revocation_takes_effect_for_the_next_unlock(api: ApiHarness, world: World) -> None:
    gateway_id, doors = await world.add_gateway()
    door_id = next(iter(doors))
    await world.start_gateway(gateway_id, doors)
    manager = await add_manager(api, building_id=world.building_id)
    grant = await post_grant(
        api, manager, subject={"user_id": world.citizen_id}, target={"door_id": door_id}
    )
    citizen = api.token_for(world.citizen_id)

    before = await api.client.post(
        f"/v1/doors/{door_id}/unlock", json={"seconds": 1}, headers=citizen
    )
    revoked = await api.client.delete(f"/v1/grants/{grant['id']}", headers=api.token_for(manager))
    after = await api.client.post(
        f"/v1/doors/{door_id}/unlock", json={"seconds": 1}, headers=citizen
    )

    assert before.status_code == 200, before.text
    assert before.json()["status"] == "unlocked"
    assert revoked.status_code == 200
    assert (after.status_code, code(after)) == (403, "revoked")
    running = world.gateways[0]
    assert running.lock.state(running.channel(door_id)).unlock_count == 1


def test_the_dates_used_above_are_the_dst_change_days() -> None:
    # test_datetimes_must_name_their_instant relies on these being the last Sundays of March
    # and October 2030 (the spring-forward gap and the repeated fall-back hour in Oslo).
    for day in (date(2030, 3, 31), date(2030, 10, 27)):
        assert day.weekday() == 6
        assert (day + timedelta(days=7)).month != day.month
