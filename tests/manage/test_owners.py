"""Owners and manager scopes over the real API and PostgreSQL: who may do what, what other
owners' managers see (nothing), and the audit of every permission change."""

from api.identity.models import User
from api.owners.models import ManagerScope
from tests.conftest import ApiHarness
from tests.manage.helpers_org import (
    add_admin,
    add_citizen,
    add_user,
    all_pages,
    audit_actions,
    audit_for,
    error_code,
    seed_org,
)
from tests.support import unique


async def test_citizen_gets_manager_only_everywhere(api: ApiHarness) -> None:
    citizen = api.token_for(await add_citizen(api))
    org = await seed_org(api)
    calls = [
        ("GET", "/v1/owners"),
        ("POST", "/v1/owners"),
        ("GET", f"/v1/owners/{org.owner_id}"),
        ("GET", "/v1/buildings"),
        ("GET", f"/v1/buildings/{org.building_id}/doors"),
        ("GET", f"/v1/doors/{org.door_id}/status"),
        ("GET", f"/v1/gateways/{org.gateway_id}"),
        ("DELETE", f"/v1/holidays/{org.holiday_id}"),
        ("POST", f"/v1/buildings/{org.building_id}/managers"),
        ("GET", "/v1/audit"),
        ("GET", "/v1/audit.csv"),
    ]
    for method, url in calls:
        response = await api.client.request(method, url, headers=citizen, json={})
        assert response.status_code == 403, (method, url, response.text)
        assert error_code(response) == "manager_only"


async def test_admin_creates_renames_and_deletes_an_owner(api: ApiHarness) -> None:
    admin_id = await add_admin(api)
    admin = api.token_for(admin_id)

    created = await api.client.post("/v1/owners", json={"name": "  Bydel Sagene "}, headers=admin)
    assert created.status_code == 201, created.text
    owner = created.json()
    assert owner["name"] == "Bydel Sagene"
    owner_id = owner["id"]

    renamed = await api.client.patch(
        f"/v1/owners/{owner_id}", json={"name": "Bydel Gamle Oslo"}, headers=admin
    )
    assert renamed.status_code == 200
    assert renamed.json()["name"] == "Bydel Gamle Oslo"
    got = await api.client.get(f"/v1/owners/{owner_id}", headers=admin)
    assert got.json()["name"] == "Bydel Gamle Oslo"

    deleted = await api.client.delete(f"/v1/owners/{owner_id}", headers=admin)
    assert deleted.status_code == 204
    gone = await api.client.get(f"/v1/owners/{owner_id}", headers=admin)
    assert gone.status_code == 404
    assert error_code(gone) == "owner_not_found"

    rows = await audit_for(api, owner_id)
    assert [r.action for r in rows] == ["owner.created", "owner.updated", "owner.deleted"]
    assert all(r.actor == admin_id for r in rows)
    assert rows[1].detail["before"]["name"] == "Bydel Sagene"
    assert rows[1].detail["after"]["name"] == "Bydel Gamle Oslo"
    assert rows[2].detail["after"] is None


async def test_bad_owner_input_is_refused_with_codes(api: ApiHarness) -> None:
    admin = api.token_for(await add_admin(api))
    org = await seed_org(api)
    for body in ({"name": ""}, {"name": "   "}, {}, {"name": "x", "colour": "red"}):
        response = await api.client.post("/v1/owners", json=body, headers=admin)
        assert response.status_code == 422, body
        assert error_code(response) == "validation_error"
    null = await api.client.patch(f"/v1/owners/{org.owner_id}", json={"name": None}, headers=admin)
    assert null.status_code == 422
    bad_cursor = await api.client.get("/v1/owners?cursor=not-a-cursor", headers=admin)
    assert bad_cursor.status_code == 422
    assert error_code(bad_cursor) == "invalid_cursor"
    too_big = await api.client.get("/v1/owners?limit=1000", headers=admin)
    assert too_big.status_code == 422


async def test_managers_read_their_owner_only_and_cannot_create_or_delete(
    api: ApiHarness,
) -> None:
    a, b = await seed_org(api), await seed_org(api)
    manager = api.token_for(a.manager_id)

    listed = await all_pages(api.client, "/v1/owners", manager, limit=1)
    assert [o["id"] for o in listed] == [a.owner_id]
    assert (await api.client.get(f"/v1/owners/{a.owner_id}", headers=manager)).status_code == 200

    for method, body in (("GET", None), ("PATCH", {"name": "Mine now"}), ("DELETE", None)):
        response = await api.client.request(
            method, f"/v1/owners/{b.owner_id}", headers=manager, json=body
        )
        assert response.status_code == 404, (method, response.text)
        assert error_code(response) == "owner_not_found"
    response = await api.client.post(
        f"/v1/owners/{b.owner_id}/managers", json={"user_id": a.manager_id}, headers=manager
    )
    assert response.status_code == 404
    listing = await api.client.get(f"/v1/owners/{b.owner_id}/managers", headers=manager)
    assert listing.status_code == 404

    create = await api.client.post("/v1/owners", json={"name": "Mine"}, headers=manager)
    assert create.status_code == 403
    assert error_code(create) == "admin_only"
    delete = await api.client.delete(f"/v1/owners/{a.owner_id}", headers=manager)
    assert delete.status_code == 403
    assert error_code(delete) == "admin_only"

    # A manager of one building is not a manager of its owner.
    building_manager = api.token_for(a.building_manager_id)
    owner = await api.client.get(f"/v1/owners/{a.owner_id}", headers=building_manager)
    assert owner.status_code == 404
    assert await all_pages(api.client, "/v1/owners", building_manager) == []


async def test_owner_with_buildings_is_not_deleted(api: ApiHarness) -> None:
    admin = api.token_for(await add_admin(api))
    org = await seed_org(api)
    response = await api.client.delete(f"/v1/owners/{org.owner_id}", headers=admin)
    assert response.status_code == 409
    body = response.json()["error"]
    assert body["code"] == "owner_not_empty"
    assert body["dependents"] == {"buildings": 1}


async def test_owner_manager_scope_grants_the_role_and_is_audited(api: ApiHarness) -> None:
    admin_id = await add_admin(api)
    admin = api.token_for(admin_id)
    org = await seed_org(api)
    citizen_id = await add_citizen(api)
    citizen = api.token_for(citizen_id)
    assert (await api.client.get("/v1/buildings", headers=citizen)).status_code == 403

    added = await api.client.post(
        f"/v1/owners/{org.owner_id}/managers", json={"user_id": citizen_id}, headers=admin
    )
    assert added.status_code == 201, added.text
    assert added.json()["owner_id"] == org.owner_id
    assert added.json()["building_id"] is None

    async with api.state.sessions() as session:
        user = await session.get(User, citizen_id)
        assert user is not None
        assert user.roles == ["citizen", "manager"]
    buildings = await all_pages(api.client, "/v1/buildings", citizen)
    assert [b["id"] for b in buildings] == [org.building_id]

    again = await api.client.post(
        f"/v1/owners/{org.owner_id}/managers", json={"user_id": citizen_id}, headers=admin
    )
    assert again.status_code == 409
    assert error_code(again) == "manager_exists"
    nobody = await api.client.post(
        f"/v1/owners/{org.owner_id}/managers", json={"user_id": unique("u-none")}, headers=admin
    )
    assert nobody.status_code == 404
    assert error_code(nobody) == "user_not_found"

    managers = await all_pages(api.client, f"/v1/owners/{org.owner_id}/managers", admin, limit=1)
    assert sorted(m["user_id"] for m in managers) == sorted([org.manager_id, citizen_id])

    # Another manager of the owner may read, not name, owner managers.
    refused = await api.client.post(
        f"/v1/owners/{org.owner_id}/managers",
        json={"user_id": citizen_id},
        headers=api.token_for(org.manager_id),
    )
    assert refused.status_code == 403
    assert error_code(refused) == "admin_only"

    removed = await api.client.delete(
        f"/v1/owners/{org.owner_id}/managers/{citizen_id}", headers=admin
    )
    assert removed.status_code == 204
    assert await all_pages(api.client, "/v1/buildings", citizen) == []
    twice = await api.client.delete(
        f"/v1/owners/{org.owner_id}/managers/{citizen_id}", headers=admin
    )
    assert twice.status_code == 404
    assert error_code(twice) == "manager_not_found"

    role_rows = await audit_for(api, citizen_id)
    assert [(r.action, r.detail["before"], r.detail["after"]) for r in role_rows] == [
        ("user.roles_changed", {"roles": ["citizen"]}, {"roles": ["citizen", "manager"]})
    ]
    scope_rows = [
        r
        for r in await audit_actions(api, admin_id)
        if r.action.startswith("manager_scope.")
        and (r.detail["before"] or r.detail["after"])["user_id"] == citizen_id
    ]
    assert [r.action for r in scope_rows] == ["manager_scope.created", "manager_scope.deleted"]
    scope_id = scope_rows[0].detail["target"]["id"]
    assert scope_rows[1].detail["target"]["id"] == scope_id
    async with api.state.sessions() as session:
        assert await session.get(ManagerScope, scope_id) is None


async def test_building_managers_are_named_by_owner_managers(api: ApiHarness) -> None:
    a, b = await seed_org(api), await seed_org(api)
    owner_manager = api.token_for(a.manager_id)
    newcomer = await add_user(api, "u-new")

    added = await api.client.post(
        f"/v1/buildings/{a.building_id}/managers", json={"user_id": newcomer}, headers=owner_manager
    )
    assert added.status_code == 201, added.text
    assert added.json()["building_id"] == a.building_id
    buildings = await all_pages(api.client, "/v1/buildings", api.token_for(newcomer))
    assert [x["id"] for x in buildings] == [a.building_id]
    listed = await all_pages(
        api.client, f"/v1/buildings/{a.building_id}/managers", api.token_for(a.building_manager_id)
    )
    assert sorted(m["user_id"] for m in listed) == sorted([a.building_manager_id, newcomer])

    # The manager of the building alone may not name others.
    refused = await api.client.post(
        f"/v1/buildings/{a.building_id}/managers",
        json={"user_id": newcomer},
        headers=api.token_for(a.building_manager_id),
    )
    assert refused.status_code == 403
    assert error_code(refused) == "owner_manager_only"

    # Another owner's building is not found, for naming and for removing.
    for method, url in (
        ("POST", f"/v1/buildings/{b.building_id}/managers"),
        ("GET", f"/v1/buildings/{b.building_id}/managers"),
        ("DELETE", f"/v1/buildings/{b.building_id}/managers/{b.building_manager_id}"),
    ):
        response = await api.client.request(
            method, url, json={"user_id": newcomer}, headers=owner_manager
        )
        assert response.status_code == 404, (method, url)
        assert error_code(response) == "building_not_found"

    removed = await api.client.delete(
        f"/v1/buildings/{a.building_id}/managers/{newcomer}", headers=owner_manager
    )
    assert removed.status_code == 204
    rows = [r for r in await audit_actions(api, a.manager_id) if r.building_id == a.building_id]
    assert [r.action for r in rows] == [
        "manager_scope.created",
        "user.roles_changed",
        "manager_scope.deleted",
    ]
