"""Buildings, doors and holidays over the real API and PostgreSQL: object-level scope (other
owners' objects are 404 whatever the method), validation, conflicts, and the audit."""

import asyncio
from datetime import date

from sqlalchemy import text

from api.access.models import Grant
from api.buildings.models import Building, Holiday
from tests.conftest import ApiHarness
from tests.manage.helpers_org import (
    add_admin,
    add_building,
    add_gateway,
    all_pages,
    audit_for,
    error_code,
    seed_org,
)
from tests.support import unique


async def test_a_manager_of_owner_a_finds_nothing_of_owner_b(api: ApiHarness) -> None:
    a, b = await seed_org(api), await seed_org(api)
    for who in (a.manager_id, a.building_manager_id):
        headers = api.token_for(who)
        calls: list[tuple[str, str, object, str]] = [
            ("GET", f"/v1/buildings/{b.building_id}", None, "building_not_found"),
            ("PATCH", f"/v1/buildings/{b.building_id}", {"name": "x"}, "building_not_found"),
            ("DELETE", f"/v1/buildings/{b.building_id}", None, "building_not_found"),
            ("GET", f"/v1/buildings/{b.building_id}/doors", None, "building_not_found"),
            (
                "POST",
                f"/v1/buildings/{b.building_id}/doors",
                {"name": "x", "gateway_id": b.gateway_id, "channel": 7},
                "building_not_found",
            ),
            ("GET", f"/v1/buildings/{b.building_id}/holidays", None, "building_not_found"),
            (
                "POST",
                f"/v1/buildings/{b.building_id}/holidays",
                {"date": "2031-01-01", "name": "x"},
                "building_not_found",
            ),
            ("GET", f"/v1/buildings/{b.building_id}/gateways", None, "building_not_found"),
            (
                "POST",
                f"/v1/buildings/{b.building_id}/gateways",
                {"name": "x"},
                "building_not_found",
            ),
            ("GET", f"/v1/doors/{b.door_id}", None, "door_not_found"),
            ("PATCH", f"/v1/doors/{b.door_id}", {"enabled": False}, "door_not_found"),
            ("DELETE", f"/v1/doors/{b.door_id}", None, "door_not_found"),
            ("GET", f"/v1/doors/{b.door_id}/status", None, "door_not_found"),
            ("DELETE", f"/v1/holidays/{b.holiday_id}", None, "holiday_not_found"),
            ("GET", f"/v1/gateways/{b.gateway_id}", None, "gateway_not_found"),
            ("PATCH", f"/v1/gateways/{b.gateway_id}", {"name": "x"}, "gateway_not_found"),
            ("DELETE", f"/v1/gateways/{b.gateway_id}", None, "gateway_not_found"),
            ("POST", f"/v1/gateways/{b.gateway_id}/credential", None, "gateway_not_found"),
            # A parent named in the body is checked like one in the path.
            (
                "POST",
                "/v1/buildings",
                {"name": "x", "owner_id": b.owner_id, "timezone": "Europe/Oslo"},
                "owner_not_found",
            ),
            (
                "POST",
                f"/v1/buildings/{a.building_id}/doors",
                {"name": "x", "gateway_id": b.gateway_id, "channel": 7},
                "gateway_not_found",
            ),
        ]
        for method, url, body, code in calls:
            response = await api.client.request(method, url, json=body, headers=headers)
            assert response.status_code == 404, (who, method, url, response.text)
            assert error_code(response) == code, (who, method, url)
            # Indistinguishable from an id that does not exist at all.
            ghost = unique("ghost")
            for real in (b.building_id, b.door_id, b.gateway_id, b.holiday_id, b.owner_id):
                if real in url or (body and real in str(body)):
                    missing = await api.client.request(
                        method,
                        url.replace(real, ghost),
                        json={k: ghost if v == real else v for k, v in body.items()}
                        if isinstance(body, dict)
                        else body,
                        headers=headers,
                    )
                    assert missing.status_code == 404
                    assert missing.json() == response.json() | {
                        "error": response.json()["error"]
                        | {"message": response.json()["error"]["message"].replace(real, ghost)}
                    }, (method, url)
                    break

        buildings = await all_pages(api.client, "/v1/buildings", headers, limit=1)
        assert [x["id"] for x in buildings] == [a.building_id]

    # Nothing of B changed.
    admin = api.token_for(await add_admin(api))
    assert (await api.client.get(f"/v1/doors/{b.door_id}", headers=admin)).json()["enabled"]
    holidays = await all_pages(api.client, f"/v1/buildings/{b.building_id}/holidays", admin)
    assert [h["id"] for h in holidays] == [b.holiday_id]
    gateways = await all_pages(api.client, f"/v1/buildings/{b.building_id}/gateways", admin)
    assert [(g["id"], g["has_credential"]) for g in gateways] == [(b.gateway_id, False)]


async def test_building_manager_sees_only_their_building(api: ApiHarness) -> None:
    org = await seed_org(api)
    other = await add_building(api, org.owner_id, name="Sports hall")
    building_manager = api.token_for(org.building_manager_id)
    owner_manager = api.token_for(org.manager_id)

    mine = await all_pages(api.client, "/v1/buildings", building_manager)
    assert [b["id"] for b in mine] == [org.building_id]
    hidden = await api.client.get(f"/v1/buildings/{other}", headers=building_manager)
    assert hidden.status_code == 404
    # The owner's manager sees both, by name.
    both = await all_pages(api.client, "/v1/buildings", owner_manager, limit=1)
    assert [b["id"] for b in both] == [org.building_id, other]
    # A building manager cannot create buildings (the owner is not theirs).
    create = await api.client.post(
        "/v1/buildings",
        json={"name": "New", "owner_id": org.owner_id, "timezone": "Europe/Oslo"},
        headers=building_manager,
    )
    assert create.status_code == 404
    assert error_code(create) == "owner_not_found"


async def test_building_lifecycle_and_validation(api: ApiHarness) -> None:
    org = await seed_org(api)
    manager = api.token_for(org.manager_id)

    for body in (
        {"name": "Hall", "owner_id": org.owner_id, "timezone": "Mars/Olympus"},
        {"name": "Hall", "owner_id": org.owner_id, "timezone": "../../etc/passwd"},
        {"name": "Hall", "owner_id": org.owner_id},
        {"name": "", "owner_id": org.owner_id, "timezone": "Europe/Oslo"},
    ):
        response = await api.client.post("/v1/buildings", json=body, headers=manager)
        assert response.status_code == 422, body
        assert error_code(response) == "validation_error"

    created = await api.client.post(
        "/v1/buildings",
        json={"name": "Hall", "owner_id": org.owner_id, "timezone": "America/New_York"},
        headers=manager,
    )
    assert created.status_code == 201, created.text
    building = created.json()
    assert building["timezone"] == "America/New_York"
    assert building["lockdown_since"] is None
    building_id = building["id"]
    # The creator (a manager of the owner) manages the new building at once.
    patched = await api.client.patch(
        f"/v1/buildings/{building_id}",
        json={"name": "Sports hall", "timezone": "Europe/Oslo"},
        headers=manager,
    )
    assert patched.status_code == 200
    assert (patched.json()["name"], patched.json()["timezone"]) == ("Sports hall", "Europe/Oslo")
    move = await api.client.patch(
        f"/v1/buildings/{building_id}", json={"owner_id": unique("own")}, headers=manager
    )
    assert move.status_code == 403
    assert error_code(move) == "admin_only"

    holiday = await api.client.post(
        f"/v1/buildings/{building_id}/holidays",
        json={"date": "2031-12-25", "name": "Christmas"},
        headers=manager,
    )
    assert holiday.status_code == 201
    gateway_id = await add_gateway(api, building_id)
    blocked = await api.client.delete(f"/v1/buildings/{building_id}", headers=manager)
    assert blocked.status_code == 409
    assert blocked.json()["error"]["code"] == "building_not_empty"
    assert blocked.json()["error"]["dependents"] == {"gateways": 1}
    assert (
        await api.client.delete(f"/v1/gateways/{gateway_id}", headers=manager)
    ).status_code == 204

    deleted = await api.client.delete(f"/v1/buildings/{building_id}", headers=manager)
    assert deleted.status_code == 204
    async with api.state.sessions() as session:
        assert await session.get(Building, building_id) is None
        assert await session.get(Holiday, holiday.json()["id"]) is None

    rows = await audit_for(api, building_id)
    assert [r.action for r in rows] == ["building.created", "building.updated", "building.deleted"]
    assert all(r.building_id == building_id and r.actor == org.manager_id for r in rows)
    assert rows[1].detail["before"]["timezone"] == "America/New_York"
    assert rows[2].detail["before"]["holidays"][0]["name"] == "Christmas"


async def test_building_with_doors_is_not_deleted(api: ApiHarness) -> None:
    org = await seed_org(api)
    response = await api.client.delete(
        f"/v1/buildings/{org.building_id}", headers=api.token_for(org.manager_id)
    )
    assert response.status_code == 409
    assert error_code(response) == "building_not_empty"
    assert response.json()["error"]["dependents"]["doors"] == 1


async def test_doors_create_list_update_delete(api: ApiHarness) -> None:
    org = await seed_org(api)
    manager = api.token_for(org.building_manager_id)
    url = f"/v1/buildings/{org.building_id}/doors"

    named = unique("door")
    created = await api.client.post(
        url,
        json={"id": named, "name": "Back door", "gateway_id": org.gateway_id, "channel": 2},
        headers=manager,
    )
    assert created.status_code == 201, created.text
    door = created.json()
    assert (door["id"], door["channel"], door["default_unlock_seconds"], door["enabled"]) == (
        named,
        2,
        5,
        True,
    )
    generated = await api.client.post(
        url,
        json={
            "name": "Cellar",
            "gateway_id": org.gateway_id,
            "channel": 3,
            "default_unlock_seconds": 10,
        },
        headers=manager,
    )
    assert generated.status_code == 201
    assert generated.json()["id"].startswith("door_")

    listed = await all_pages(api.client, url, manager, limit=2)
    assert [d["name"] for d in listed] == ["Back door", "Cellar", "Main entrance"]

    taken = await api.client.post(
        url, json={"name": "Twin", "gateway_id": org.gateway_id, "channel": 2}, headers=manager
    )
    assert taken.status_code == 409
    assert error_code(taken) == "channel_taken"
    same_id = await api.client.post(
        url,
        json={"id": named, "name": "Twin", "gateway_id": org.gateway_id, "channel": 9},
        headers=manager,
    )
    assert same_id.status_code == 409
    assert error_code(same_id) == "door_exists"
    for bad in (
        {"id": "a/b", "name": "x", "gateway_id": org.gateway_id, "channel": 4},
        {"id": "+", "name": "x", "gateway_id": org.gateway_id, "channel": 4},
        {"name": "x", "gateway_id": org.gateway_id, "channel": -1},
        {"name": "x", "gateway_id": org.gateway_id, "channel": 4, "default_unlock_seconds": 0},
    ):
        response = await api.client.post(url, json=bad, headers=manager)
        assert response.status_code == 422, bad
        assert error_code(response) == "validation_error"

    patched = await api.client.patch(
        f"/v1/doors/{named}",
        json={"name": "Back door (east)", "enabled": False, "default_unlock_seconds": 8},
        headers=manager,
    )
    assert patched.status_code == 200
    assert (patched.json()["enabled"], patched.json()["default_unlock_seconds"]) == (False, 8)
    moved = await api.client.patch(
        f"/v1/doors/{named}", json={"gateway_id": org.gateway_id}, headers=manager
    )
    assert moved.status_code == 422

    deleted = await api.client.delete(f"/v1/doors/{named}", headers=manager)
    assert deleted.status_code == 204
    assert (await api.client.get(f"/v1/doors/{named}", headers=manager)).status_code == 404
    rows = await audit_for(api, named)
    assert [r.action for r in rows] == ["door.created", "door.updated", "door.deleted"]
    assert all(r.door_id == named and r.building_id == org.building_id for r in rows)
    assert rows[1].detail["before"]["enabled"] is True
    assert rows[1].detail["after"]["enabled"] is False


async def test_door_needs_a_gateway_of_its_own_building(api: ApiHarness) -> None:
    org = await seed_org(api)
    annex = await add_building(api, org.owner_id)
    response = await api.client.post(
        f"/v1/buildings/{annex}/doors",
        json={"name": "Annex door", "gateway_id": org.gateway_id, "channel": 5},
        headers=api.token_for(org.manager_id),
    )
    assert response.status_code == 422
    assert error_code(response) == "gateway_in_other_building"


async def test_door_named_by_a_grant_is_not_deleted(api: ApiHarness) -> None:
    org = await seed_org(api)
    async with api.state.sessions() as session:
        session.add(Grant(id=unique("grt"), user_id=org.manager_id, door_id=org.door_id))
        await session.commit()
    response = await api.client.delete(
        f"/v1/doors/{org.door_id}", headers=api.token_for(org.manager_id)
    )
    assert response.status_code == 409
    assert error_code(response) == "door_in_use"
    assert response.json()["error"]["references"] == {"grants": 1}


async def test_holidays_by_date_range(api: ApiHarness) -> None:
    org = await seed_org(api)
    manager = api.token_for(org.building_manager_id)
    url = f"/v1/buildings/{org.building_id}/holidays"
    for day, name in (("2030-12-25", "Christmas"), ("2030-01-01", "New year"), ("2030-12-26", "2")):
        response = await api.client.post(url, json={"date": day, "name": name}, headers=manager)
        assert response.status_code == 201, response.text

    duplicate = await api.client.post(
        url, json={"date": "2030-12-25", "name": "Again"}, headers=manager
    )
    assert duplicate.status_code == 409
    assert error_code(duplicate) == "holiday_exists"
    bad = await api.client.post(url, json={"date": "2030-02-30", "name": "x"}, headers=manager)
    assert bad.status_code == 422

    every = await all_pages(api.client, url, manager, limit=1)
    assert [h["date"] for h in every] == ["2030-01-01", "2030-05-17", "2030-12-25", "2030-12-26"]
    response = await api.client.get(
        url, params={"from": "2030-05-01", "to": "2030-12-25"}, headers=manager
    )
    assert [h["date"] for h in response.json()["items"]] == ["2030-05-17", "2030-12-25"]
    inverted = await api.client.get(
        url, params={"from": "2030-12-31", "to": "2030-01-01"}, headers=manager
    )
    assert inverted.status_code == 422
    assert error_code(inverted) == "invalid_range"

    christmas = next(h for h in every if h["date"] == "2030-12-25")
    assert (
        await api.client.delete(f"/v1/holidays/{christmas['id']}", headers=manager)
    ).status_code == 204
    again = await api.client.delete(f"/v1/holidays/{christmas['id']}", headers=manager)
    assert again.status_code == 404
    assert error_code(again) == "holiday_not_found"
    rows = await audit_for(api, christmas["id"])
    assert [r.action for r in rows] == ["holiday.created", "holiday.deleted"]
    assert rows[0].detail["after"]["date"] == date(2030, 12, 25).isoformat()


async def test_door_deleted_while_its_status_is_being_written(api: ApiHarness) -> None:
    """A gateway event folded into door_status in another, still open transaction must not
    turn the door's deletion into a 500 (foreign key): the delete waits for it."""
    org = await seed_org(api)
    manager = api.token_for(org.building_manager_id)
    created = await api.client.post(
        f"/v1/buildings/{org.building_id}/doors",
        json={"name": "Shed", "gateway_id": org.gateway_id, "channel": 7},
        headers=manager,
    )
    door_id = created.json()["id"]
    async with api.state.sessions() as writer:
        await writer.execute(
            text("INSERT INTO door_status (door_id, alarms) VALUES (:d, '[]')"), {"d": door_id}
        )
        deleting = asyncio.create_task(api.client.delete(f"/v1/doors/{door_id}", headers=manager))
        await asyncio.sleep(0.3)  # the delete now waits for this transaction's lock
        await writer.commit()
    response = await deleting
    assert response.status_code == 204, response.text
