"""Groups and their members over HTTP, against the real PostgreSQL: scope rules (404 out of
scope, 403 group_read_only for building managers), validation, idempotent membership, audit,
pagination."""

from typing import Any

from api.identity.models import Role
from tests.conftest import ApiHarness
from tests.manage.helpers_access import (
    Site,
    add_admin,
    add_citizen,
    add_manager,
    add_site,
    add_user,
    changes,
    code,
    every_page,
)


async def new_group(api: ApiHarness, site: Site, name: str = "Choir") -> dict[str, Any]:
    response = await api.client.post(
        "/v1/groups",
        json={"owner_id": site.owner_id, "name": name, "description": "Tuesdays"},
        headers=api.token_for(site.owner_manager_id),
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_owner_manager_creates_renames_and_deletes_a_group(api: ApiHarness) -> None:
    site = await add_site(api)
    headers = api.token_for(site.owner_manager_id)

    group = await new_group(api, site, "  Choir  ")
    fetched = await api.client.get(f"/v1/groups/{group['id']}", headers=headers)
    renamed = await api.client.patch(
        f"/v1/groups/{group['id']}", json={"name": "Adult choir"}, headers=headers
    )
    deleted = await api.client.delete(f"/v1/groups/{group['id']}", headers=headers)
    gone = await api.client.get(f"/v1/groups/{group['id']}", headers=headers)

    assert group["name"] == "Choir"  # trimmed
    assert (group["owner_id"], group["member_count"], group["writable"]) == (
        site.owner_id,
        0,
        True,
    )
    assert fetched.json() == group
    assert renamed.status_code == 200
    assert (renamed.json()["name"], renamed.json()["description"]) == ("Adult choir", "Tuesdays")
    assert deleted.status_code == 204
    assert (gone.status_code, code(gone)) == (404, "group_not_found")
    rows = await changes(api, group["id"])
    assert [r.action for r in rows] == ["group.created", "group.updated", "group.deleted"]
    assert {r.actor for r in rows} == {site.owner_manager_id}
    created, updated, removed = (r.detail for r in rows)
    assert created["before"] is None
    assert created["after"]["name"] == "Choir"
    assert (updated["before"]["name"], updated["after"]["name"]) == ("Choir", "Adult choir")
    assert removed["before"]["member_ids"] == []
    assert removed["after"] is None


async def test_bad_group_input_gets_clear_errors(api: ApiHarness) -> None:
    site = await add_site(api)
    headers = api.token_for(site.owner_manager_id)
    group = await new_group(api, site)

    blank = await api.client.post(
        "/v1/groups", json={"owner_id": site.owner_id, "name": "   "}, headers=headers
    )
    typo = await api.client.post(
        "/v1/groups", json={"owner_id": site.owner_id, "name": "X", "nmae": "Y"}, headers=headers
    )
    unknown_owner = await api.client.post(
        "/v1/groups", json={"owner_id": "own-nope", "name": "X"}, headers=headers
    )
    duplicate = await api.client.post(
        "/v1/groups", json={"owner_id": site.owner_id, "name": "choir"}, headers=headers
    )
    null_name = await api.client.patch(
        f"/v1/groups/{group['id']}", json={"name": None}, headers=headers
    )
    owner_change = await api.client.patch(
        f"/v1/groups/{group['id']}", json={"owner_id": "own-other"}, headers=headers
    )

    assert (blank.status_code, code(blank)) == (422, "validation_error")
    assert (typo.status_code, code(typo)) == (422, "validation_error")
    assert (unknown_owner.status_code, code(unknown_owner)) == (404, "owner_not_found")
    assert (duplicate.status_code, code(duplicate)) == (409, "group_name_taken")
    assert (null_name.status_code, code(null_name)) == (422, "validation_error")
    assert (owner_change.status_code, code(owner_change)) == (422, "validation_error")


async def test_scope_out_of_scope_is_404_read_only_is_403(api: ApiHarness) -> None:
    site = await add_site(api)
    other = await add_site(api)
    group = await new_group(api, site)
    member = await add_citizen(api)
    url = f"/v1/groups/{group['id']}"
    stranger = api.token_for(other.owner_manager_id)
    reader = api.token_for(site.building_manager_id)

    # Another owner's manager: the group does not exist for them.
    for response in (
        await api.client.get(url, headers=stranger),
        await api.client.patch(url, json={"name": "Mine"}, headers=stranger),
        await api.client.delete(url, headers=stranger),
        await api.client.get(f"{url}/members", headers=stranger),
        await api.client.put(f"{url}/members/{member}", headers=stranger),
    ):
        assert (response.status_code, code(response)) == (404, "group_not_found")
    foreign = await api.client.post(
        "/v1/groups", json={"owner_id": site.owner_id, "name": "X"}, headers=stranger
    )
    assert (foreign.status_code, code(foreign)) == (404, "owner_not_found")
    listed = await api.client.get("/v1/groups", headers=stranger)
    assert group["id"] not in {g["id"] for g in listed.json()["items"]}

    # The building's manager may read (to use the group in grants) but not change.
    seen = await api.client.get(url, headers=reader)
    assert (seen.status_code, seen.json()["writable"]) == (200, False)
    assert (await api.client.get(f"{url}/members", headers=reader)).status_code == 200
    for response in (
        await api.client.patch(url, json={"name": "Mine"}, headers=reader),
        await api.client.delete(url, headers=reader),
        await api.client.put(f"{url}/members/{member}", headers=reader),
        await api.client.delete(f"{url}/members/{member}", headers=reader),
        await api.client.post(
            "/v1/groups", json={"owner_id": site.owner_id, "name": "X"}, headers=reader
        ),
    ):
        assert (response.status_code, code(response)) == (403, "group_read_only")

    # Citizens are not managers at all; admins may do anything.
    citizen = await api.client.get(url, headers=api.token_for(member))
    assert (citizen.status_code, code(citizen)) == (403, "manager_only")
    admin = api.token_for(await add_admin(api))
    assert (await api.client.put(f"{url}/members/{member}", headers=admin)).status_code == 201
    assert (await api.client.get(url, headers=admin)).json()["writable"] is True


async def test_membership_is_idempotent_and_audited(api: ApiHarness) -> None:
    site = await add_site(api)
    group = await new_group(api, site)
    headers = api.token_for(site.owner_manager_id)
    citizen = await add_citizen(api)
    members_url = f"/v1/groups/{group['id']}/members"

    first = await api.client.put(f"{members_url}/{citizen}", headers=headers)
    again = await api.client.put(f"{members_url}/{citizen}", headers=headers)
    unknown = await api.client.put(f"{members_url}/u-nobody", headers=headers)
    listing = await api.client.get(members_url, headers=headers)
    count = (await api.client.get(f"/v1/groups/{group['id']}", headers=headers)).json()
    removed = await api.client.delete(f"{members_url}/{citizen}", headers=headers)
    removed_again = await api.client.delete(f"{members_url}/{citizen}", headers=headers)
    after = await api.client.get(members_url, headers=headers)

    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json() == first.json()
    assert first.json()["user_id"] == citizen
    assert first.json()["added_by"] == site.owner_manager_id
    assert (unknown.status_code, code(unknown)) == (404, "user_not_found")
    assert [m["user_id"] for m in listing.json()["items"]] == [citizen]
    assert count["member_count"] == 1
    assert removed.status_code == 204
    assert (removed_again.status_code, code(removed_again)) == (404, "member_not_found")
    assert after.json() == {"items": [], "next_cursor": None}
    rows = [r for r in await changes(api, group["id"]) if r.action.startswith("group.member")]
    assert [r.action for r in rows] == ["group.member_added", "group.member_removed"]
    added, gone = (r.detail for r in rows)
    assert added["before"] is None
    assert added["after"]["user_id"] == citizen
    assert gone["before"]["user_id"] == citizen
    assert gone["after"] is None
    assert all(r.actor == site.owner_manager_id for r in rows)


async def test_listings_paginate_in_creation_order(api: ApiHarness) -> None:
    site = await add_site(api)
    headers = api.token_for(site.owner_manager_id)
    created = [(await new_group(api, site, f"Group {i}"))["id"] for i in range(5)]
    group_id = created[0]
    members = [await add_citizen(api) for _ in range(5)]
    for user_id in members:
        response = await api.client.put(f"/v1/groups/{group_id}/members/{user_id}", headers=headers)
        assert response.status_code == 201

    groups, group_pages = await every_page(
        api.client, "/v1/groups", headers, limit=2, params={"owner_id": site.owner_id}
    )
    listed_members, member_pages = await every_page(
        api.client, f"/v1/groups/{group_id}/members", headers, limit=2
    )
    as_reader, _ = await every_page(
        api.client,
        "/v1/groups",
        api.token_for(site.building_manager_id),
        limit=50,
        params={"owner_id": site.owner_id},
    )
    other_owner = await api.client.get(
        "/v1/groups", params={"owner_id": "own-elsewhere"}, headers=headers
    )
    garbage = await api.client.get("/v1/groups", params={"cursor": "not-a-cursor"}, headers=headers)
    too_big = await api.client.get("/v1/groups", params={"limit": 1000}, headers=headers)

    assert [g["id"] for g in groups] == created
    assert group_pages == 3
    assert groups[0]["member_count"] == 5
    assert [m["user_id"] for m in listed_members] == members
    assert member_pages == 3
    assert [g["id"] for g in as_reader] == created
    assert not any(g["writable"] for g in as_reader)
    assert other_owner.json() == {"items": [], "next_cursor": None}
    assert (garbage.status_code, code(garbage)) == (422, "invalid_cursor")
    assert (too_big.status_code, code(too_big)) == (422, "validation_error")


async def test_a_group_in_use_cannot_be_deleted(api: ApiHarness) -> None:
    site = await add_site(api)
    group = await new_group(api, site)
    headers = api.token_for(site.owner_manager_id)
    citizen = await add_citizen(api)
    await api.client.put(f"/v1/groups/{group['id']}/members/{citizen}", headers=headers)
    grant = await api.client.post(
        "/v1/grants",
        json={"subject": {"group_id": group["id"]}, "target": {"building_id": site.building_id}},
        headers=headers,
    )
    assert grant.status_code == 201, grant.text

    refused = await api.client.delete(f"/v1/groups/{group['id']}", headers=headers)
    still = await api.client.get(f"/v1/groups/{group['id']}", headers=headers)

    assert (refused.status_code, code(refused)) == (409, "group_in_use")
    assert refused.json()["error"]["grants"] == 1
    assert still.json()["member_count"] == 1


async def test_a_manager_without_scope_sees_nothing(api: ApiHarness) -> None:
    site = await add_site(api)
    await new_group(api, site)
    lonely = await add_manager(api)
    citizen_only = await add_user(api, "u-cit", Role.CITIZEN)

    listed = await api.client.get("/v1/groups", headers=api.token_for(lonely))
    refused = await api.client.get("/v1/groups", headers=api.token_for(citizen_only))
    anonymous = await api.client.get("/v1/groups")

    assert listed.json() == {"items": [], "next_cursor": None}
    assert (refused.status_code, code(refused)) == (403, "manager_only")
    assert (anonymous.status_code, code(anonymous)) == (401, "unauthorized")
