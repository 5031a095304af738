"""Public opening hours over HTTP against the real PostgreSQL, and the self-service library
case end to end through AccessService.decide at fixed instants."""

from datetime import UTC, date, datetime
from typing import Any

from api.access.policy import Decision, DenyReason, RuleKind
from api.access.service import AccessService
from api.identity.models import User
from tests.conftest import ApiHarness
from tests.manage.helpers_access import (
    Site,
    add_citizen,
    add_holiday,
    add_manager,
    add_scope,
    add_site,
    changes,
    code,
    every_page,
)
from tests.support import unique

LIBRARY = {"weekly": [{"weekday": d, "start": "07:00", "end": "23:00"} for d in range(7)]}


async def add_rule(
    api: ApiHarness, manager_id: str, door_id: str, expect: int = 201, **body: Any
) -> dict[str, Any]:
    response = await api.client.post(
        f"/v1/doors/{door_id}/public-access",
        json={"schedule": LIBRARY, **body},
        headers=api.token_for(manager_id),
    )
    assert response.status_code == expect, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def decide(api: ApiHarness, user_id: str, door_id: str, now: datetime) -> Decision:
    async with api.state.sessions() as session:
        user = await session.get(User, user_id)
        assert user is not None
        found = await AccessService(session).decide(user, door_id, now)
    assert found is not None
    decision = found[-1]
    assert isinstance(decision, Decision)
    return decision


def oslo(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    """A wall-clock time in Oslo, as the UTC instant (2030: UTC+1 in winter, +2 in summer)."""
    offset = 2 if 4 <= month <= 9 else 1
    return datetime(year, month, day, hour - offset, minute, tzinfo=UTC)


async def test_self_service_library_seven_to_eleven_age_fifteen(api: ApiHarness) -> None:
    site = await add_site(api)
    door = site.door_id
    rule = await add_rule(api, site.building_manager_id, door, min_age=15)
    sixteen = await add_citizen(api, birth_date=date(2014, 1, 1))
    fourteen = await add_citizen(api, birth_date=date(2016, 1, 1))
    birthday = await add_citizen(api, birth_date=date(2015, 6, 12))
    unknown_age = await add_citizen(api)
    await add_holiday(api, site.building_id, date(2030, 6, 14))

    # Wednesday 12 June 2030.
    at_ten = await decide(api, sixteen, door, oslo(2030, 6, 12, 10))
    too_young = await decide(api, fourteen, door, oslo(2030, 6, 12, 10))
    turns_fifteen_today = await decide(api, birthday, door, oslo(2030, 6, 12, 10))
    no_birth_date = await decide(api, unknown_age, door, oslo(2030, 6, 12, 10))
    late = await decide(api, sixteen, door, oslo(2030, 6, 12, 23, 30))
    holiday = await decide(api, sixteen, door, oslo(2030, 6, 14, 10))
    winter_early = await decide(api, sixteen, door, oslo(2030, 1, 15, 6, 30))

    assert at_ten.allowed
    assert (at_ten.rule_id, at_ten.rule_kind) == (rule["id"], RuleKind.PUBLIC)
    assert (too_young.allowed, too_young.reason) == (False, DenyReason.NOT_ELIGIBLE)
    assert turns_fifteen_today.allowed
    assert (no_birth_date.allowed, no_birth_date.reason) == (False, DenyReason.NOT_ELIGIBLE)
    assert (late.allowed, late.reason) == (False, DenyReason.OUTSIDE_SCHEDULE)
    assert late.next_window == datetime(2030, 6, 13, 5, tzinfo=UTC)  # 07:00 Oslo next day
    assert (holiday.allowed, holiday.reason) == (False, DenyReason.HOLIDAY)
    assert holiday.next_window == datetime(2030, 6, 15, 5, tzinfo=UTC)
    assert (winter_early.allowed, winter_early.reason) == (False, DenyReason.OUTSIDE_SCHEDULE)
    assert winter_early.next_window == datetime(2030, 1, 15, 6, tzinfo=UTC)  # 07:00 in winter


async def test_rules_are_created_changed_deleted_and_audited(api: ApiHarness) -> None:
    site = await add_site(api)
    headers = api.token_for(site.owner_manager_id)
    citizen = await add_citizen(api, birth_date=date(2000, 1, 1))
    at_ten = oslo(2030, 6, 12, 10)

    rule = await add_rule(api, site.owner_manager_id, site.door_id, min_age=15)
    url = f"/v1/public-access/{rule['id']}"
    fetched = await api.client.get(url, headers=headers)
    open_before = await decide(api, citizen, site.door_id, at_ten)
    switched_off = await api.client.patch(
        url, json={"enabled": False, "min_age": None}, headers=headers
    )
    closed = await decide(api, citizen, site.door_id, at_ten)
    null_schedule = await api.client.patch(url, json={"schedule": None}, headers=headers)
    deleted = await api.client.delete(url, headers=headers)
    gone = await api.client.get(url, headers=headers)

    assert rule["door_id"] == site.door_id
    assert (rule["building_id"], rule["timezone"]) == (site.building_id, "Europe/Oslo")
    assert (rule["min_age"], rule["group_id"], rule["enabled"]) == (15, None, True)
    assert rule["respect_holidays"] is True
    assert fetched.json() == rule
    assert open_before.allowed
    assert switched_off.status_code == 200
    assert (switched_off.json()["enabled"], switched_off.json()["min_age"]) == (False, None)
    assert (closed.allowed, closed.reason) == (False, DenyReason.NO_GRANT)
    assert (null_schedule.status_code, code(null_schedule)) == (422, "validation_error")
    assert deleted.status_code == 204
    assert (gone.status_code, code(gone)) == (404, "public_access_not_found")
    rows = await changes(api, rule["id"])
    assert [r.action for r in rows] == [
        "public_access.created",
        "public_access.updated",
        "public_access.deleted",
    ]
    assert all(r.door_id == site.door_id for r in rows)
    assert all(r.building_id == site.building_id for r in rows)
    created, updated, removed = (r.detail for r in rows)
    assert created["before"] is None
    assert created["after"]["min_age"] == 15
    assert (updated["before"]["enabled"], updated["after"]["enabled"]) == (True, False)
    assert (updated["before"]["min_age"], updated["after"]["min_age"]) == (15, None)
    assert removed["before"]["id"] == rule["id"]
    assert removed["after"] is None


async def test_group_limited_public_hours(api: ApiHarness) -> None:
    site = await add_site(api)
    other = await add_site(api)
    member, outsider = await add_citizen(api), await add_citizen(api)
    headers = api.token_for(site.owner_manager_id)
    created = await api.client.post(
        "/v1/groups", json={"owner_id": site.owner_id, "name": unique("g")}, headers=headers
    )
    group_id = created.json()["id"]
    await api.client.put(f"/v1/groups/{group_id}/members/{member}", headers=headers)
    both = await add_manager(api, owner_id=site.owner_id)
    await add_scope(api, both, owner_id=other.owner_id)

    await add_rule(api, site.building_manager_id, site.door_id, group_id=group_id)
    mismatch = await add_rule(api, both, other.door_id, 422, group_id=group_id)
    unseen = await add_rule(api, other.owner_manager_id, other.door_id, 404, group_id=group_id)
    allowed = await decide(api, member, site.door_id, oslo(2030, 6, 12, 10))
    refused = await decide(api, outsider, site.door_id, oslo(2030, 6, 12, 10))

    assert mismatch["error"]["code"] == "group_owner_mismatch"
    assert unseen["error"]["code"] == "group_not_found"
    assert allowed.allowed
    assert (refused.allowed, refused.reason) == (False, DenyReason.NOT_ELIGIBLE)


async def test_scope_validation_and_pages(api: ApiHarness) -> None:
    site: Site = await add_site(api)
    other = await add_site(api)
    manager = site.building_manager_id
    headers = api.token_for(manager)
    made = [(await add_rule(api, manager, site.door_id))["id"] for _ in range(3)]
    stranger = api.token_for(other.owner_manager_id)

    listed, pages = await every_page(
        api.client, f"/v1/doors/{site.door_id}/public-access", headers, limit=2
    )
    foreign_list = await api.client.get(f"/v1/doors/{site.door_id}/public-access", headers=stranger)
    foreign_get = await api.client.get(f"/v1/public-access/{made[0]}", headers=stranger)
    foreign_patch = await api.client.patch(
        f"/v1/public-access/{made[0]}", json={"enabled": False}, headers=stranger
    )
    foreign_delete = await api.client.delete(f"/v1/public-access/{made[0]}", headers=stranger)
    foreign_create = await add_rule(api, other.owner_manager_id, site.door_id, 404)
    unknown_door = await add_rule(api, manager, "door-nope", 404)
    empty = await add_rule(api, manager, site.door_id, 422, schedule={"weekly": []})
    negative_age = await add_rule(api, manager, site.door_id, 422, min_age=-1)
    typo = await add_rule(api, manager, site.door_id, 422, min_agee=15)

    assert ([r["id"] for r in listed], pages) == (made, 2)
    assert (foreign_list.status_code, code(foreign_list)) == (404, "door_not_found")
    for response in (foreign_get, foreign_patch, foreign_delete):
        assert (response.status_code, code(response)) == (404, "public_access_not_found")
    assert foreign_create["error"]["code"] == "door_not_found"
    assert unknown_door["error"]["code"] == "door_not_found"
    assert empty["error"]["code"] == "empty_schedule"
    assert negative_age["error"]["code"] == "validation_error"
    assert typo["error"]["code"] == "validation_error"
