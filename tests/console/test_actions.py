"""Console actions are form posts answered with 303 and a flash message; they go through the
same services as the JSON API (scope, validation, audit)."""

import csv
import io
import secrets
from datetime import date

from sqlalchemy import select
from sqlmodel import col

from api.access.models import Grant
from api.audit.models import AuditEvent
from api.audit.repository import AuditRepository
from api.buildings.models import Building
from api.identity.models import Role, User
from tests.conftest import ApiHarness
from tests.console.helpers import csrf_of, flashes, post_form, sign_in
from tests.manage.helpers_org import add_user, seed_org


async def _grants_of(api: ApiHarness, user_id: str) -> list[Grant]:
    async with api.state.sessions() as session:
        statement = select(Grant).where(col(Grant.user_id) == user_id)
        return list((await session.execute(statement)).scalars().all())


async def test_grant_and_revoke(api: ApiHarness) -> None:
    org = await seed_org(api)
    citizen = await add_user(api, "u-cit", Role.CITIZEN)
    client = await sign_in(api, org.manager_id)
    response = await post_form(
        client,
        "/console/grants",
        "/console/grants",
        {
            "subject": citizen,
            "target": f"door:{org.door_id}",
            "days": ["0", "2"],
            "start": "08:00",
            "end": "16:00",
            "note": "choir",
        },
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/console/grants"
    page = await flashes(client, "/console/grants")
    assert "Access granted to" in page
    assert citizen in page
    assert "Mon 08:00–16:00" in page
    [grant] = await _grants_of(api, citizen)
    assert grant.door_id == org.door_id
    assert grant.created_by == org.manager_id
    assert grant.schedule is not None
    assert len(grant.schedule["weekly"]) == 2
    # The calendar shows the scheduled grant on Monday and Wednesday.
    hours = await client.get("/console/hours", params={"building": org.building_id})
    assert hours.text.count("cal-block grant s16 e32") == 2

    response = await post_form(client, "/console/grants", f"/console/grants/{grant.id}/revoke", {})
    assert response.status_code == 303
    assert "revoked" in await flashes(client, "/console/grants")
    [grant] = await _grants_of(api, citizen)
    assert grant.revoked_at is not None


async def test_grant_by_verified_phone_number(api: ApiHarness) -> None:
    org = await seed_org(api)
    citizen = await add_user(api, "u-cit", Role.CITIZEN)
    phone = f"+479{secrets.randbelow(10**7):07d}"
    async with api.state.sessions() as session:
        user = await session.get(User, citizen)
        assert user is not None
        user.phone = phone
        await session.commit()
    client = await sign_in(api, org.manager_id)
    response = await post_form(
        client,
        "/console/grants",
        "/console/grants",
        {"subject": phone, "target": f"door:{org.door_id}"},
    )
    assert response.status_code == 303
    assert len(await _grants_of(api, citizen)) == 1
    await post_form(
        client,
        "/console/grants",
        "/console/grants",
        {"subject": "+4700000000", "target": f"door:{org.door_id}"},
    )
    assert "no citizen has verified the phone number" in await flashes(client, "/console/grants")


async def test_grant_with_a_window_in_building_time(api: ApiHarness) -> None:
    org = await seed_org(api)
    citizen = await add_user(api, "u-cit", Role.CITIZEN)
    client = await sign_in(api, org.manager_id)
    response = await post_form(
        client,
        "/console/grants",
        "/console/grants",
        {
            "subject": citizen,
            "target": f"building:{org.building_id}",
            "valid_from": "2031-01-10T08:00",
            "valid_until": "2031-01-10T10:00",
        },
    )
    assert response.status_code == 303
    [grant] = await _grants_of(api, citizen)
    assert grant.building_id == org.building_id
    assert grant.valid_from is not None
    assert grant.valid_from.hour == 7


async def test_refused_grant_comes_back_as_a_flash(api: ApiHarness) -> None:
    org = await seed_org(api)
    client = await sign_in(api, org.manager_id)
    response = await post_form(
        client,
        "/console/grants",
        "/console/grants",
        {"subject": "u-nobody", "target": f"door:{org.door_id}"},
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/console/grants"
    page = await flashes(client, "/console/grants")
    assert "no user &#39;u-nobody&#39;" in page
    response = await post_form(client, "/console/grants", "/console/grants", {"subject": "x"})
    assert response.status_code == 303  # the missing target is a flash too, not JSON
    assert "Please check the form" in await flashes(client, "/console/grants")


async def test_out_of_scope_target_is_not_found(api: ApiHarness) -> None:
    mine, theirs = await seed_org(api), await seed_org(api)
    citizen = await add_user(api, "u-cit", Role.CITIZEN)
    client = await sign_in(api, mine.manager_id)
    response = await post_form(
        client,
        "/console/grants",
        "/console/grants",
        {"subject": citizen, "target": f"door:{theirs.door_id}"},
    )
    assert response.status_code == 303
    assert "no door" in await flashes(client, "/console/grants")
    assert await _grants_of(api, citizen) == []


async def test_posts_without_the_csrf_token_are_refused(api: ApiHarness) -> None:
    org = await seed_org(api)
    citizen = await add_user(api, "u-cit", Role.CITIZEN)
    client = await sign_in(api, org.manager_id)
    for action, data in (
        ("/console/grants", {"subject": citizen, "target": f"door:{org.door_id}"}),
        (f"/console/lockdown/{org.building_id}", {"reason": "x", "confirm": "yes"}),
        ("/console/gateways", {"building_id": org.building_id, "name": "gw"}),
    ):
        response = await client.post(action, data={**data, "csrf_token": "forged"})
        assert response.status_code == 403, action
        assert 'data-code="csrf_failed"' in response.text
    assert await _grants_of(api, citizen) == []


async def test_citizen_cannot_post_console_forms(api: ApiHarness) -> None:
    citizen = await add_user(api, "u-cit", Role.CITIZEN)
    client = await sign_in(api, citizen)
    page = await client.get("/app/login")
    response = await client.post(
        "/console/grants",
        data={"subject": citizen, "target": "building:x", "csrf_token": csrf_of(page.text)},
    )
    assert response.status_code == 403
    assert "Not allowed" in response.text


async def test_groups_and_members(api: ApiHarness) -> None:
    org = await seed_org(api)
    citizen = await add_user(api, "u-cit", Role.CITIZEN)
    client = await sign_in(api, org.manager_id)
    response = await post_form(
        client, "/console/groups", "/console/groups", {"owner_id": org.owner_id, "name": "Choir"}
    )
    assert response.status_code == 303
    group_url = response.headers["location"]
    response = await post_form(client, group_url, f"{group_url}/members", {"user_id": citizen})
    assert response.status_code == 303
    page = await flashes(client, group_url)
    assert "added" in page
    assert citizen in page
    response = await post_form(client, group_url, f"{group_url}/members/{citizen}/remove", {})
    assert response.status_code == 303
    assert "removed" in await flashes(client, group_url)


async def test_add_and_remove_a_holiday(api: ApiHarness) -> None:
    org = await seed_org(api)
    client = await sign_in(api, org.manager_id)
    url = f"/console/hours?building={org.building_id}"
    response = await post_form(
        client,
        url,
        "/console/hours/holidays",
        {"building_id": org.building_id, "date": "2031-12-25", "name": "Første juledag"},
    )
    assert response.status_code == 303
    page = await flashes(client, url)
    assert "2031-12-25" in page
    assert "Første juledag" in page
    # The same date again is refused with the service's message.
    await post_form(
        client,
        url,
        "/console/hours/holidays",
        {"building_id": org.building_id, "date": "2031-12-25", "name": "again"},
    )
    assert "already has a holiday" in await flashes(client, url)
    listing = await client.get(url)
    holiday_id = listing.text.split("/console/hours/holidays/")[1].split("/delete")[0]
    response = await post_form(
        client,
        url,
        f"/console/hours/holidays/{holiday_id}/delete",
        {"building_id": org.building_id},
    )
    assert response.status_code == 303


async def test_manual_booking_is_a_windowed_grant(api: ApiHarness) -> None:
    org = await seed_org(api)
    citizen = await add_user(api, "u-cit", Role.CITIZEN)
    client = await sign_in(api, org.manager_id)
    response = await post_form(
        client,
        "/console/bookings",
        "/console/bookings",
        {
            "subject": citizen,
            "target": f"door:{org.door_id}",
            "date": date(2031, 3, 4).isoformat(),
            "start": "17:00",
            "end": "19:00",
            "purpose": "Choir rehearsal",
        },
    )
    assert response.status_code == 303
    page = await flashes(client, "/console/bookings")
    assert "Booked for" in page
    assert "Booking: Choir rehearsal" in page
    [grant] = await _grants_of(api, citizen)
    assert grant.valid_from is not None
    assert grant.valid_until is not None
    assert (grant.valid_until - grant.valid_from).total_seconds() == 7200


async def test_lockdown_needs_confirmation_then_lifts(api: ApiHarness) -> None:
    org = await seed_org(api)
    client = await sign_in(api, org.manager_id)
    confirm_url = f"/console/lockdown/{org.building_id}/confirm"
    confirm = await client.get(confirm_url)
    assert "Lock down Library?" in confirm.text
    assert "Every door will refuse unlocks" in confirm.text
    # Without the explicit confirm field nothing happens.
    response = await post_form(
        client, confirm_url, f"/console/lockdown/{org.building_id}", {"reason": "drill"}
    )
    assert response.status_code == 303
    async with api.state.sessions() as session:
        building = await session.get(Building, org.building_id)
        assert building is not None
        assert building.lockdown_since is None
    response = await post_form(
        client,
        confirm_url,
        f"/console/lockdown/{org.building_id}",
        {"reason": "drill", "confirm": "yes"},
    )
    assert response.status_code == 303
    page = await flashes(client, response.headers["location"])
    assert "Lockdown started. 0 of 1 gateways" in page
    assert "LOCKDOWN" in page
    assert "drill" in page
    part = await client.get(f"/console/lockdown/{org.building_id}/acks.part")
    assert f'data-gateway="{org.gateway_id}"' in part.text
    assert 'data-ack="no"' in part.text
    response = await post_form(
        client,
        f"/console/lockdown?building={org.building_id}",
        f"/console/lockdown/{org.building_id}/lift",
        {},
    )
    assert response.status_code == 303
    assert "Lockdown lifted" in await flashes(client, response.headers["location"])


async def test_gateway_credential_is_shown_once_and_not_stored(api: ApiHarness) -> None:
    org = await seed_org(api)
    client = await sign_in(api, org.manager_id)
    url = f"/console/gateways?building={org.building_id}"
    response = await post_form(
        client,
        url,
        "/console/gateways",
        {"building_id": org.building_id, "name": "Annex", "gateway_id": f"{org.gateway_id}-x"},
    )
    assert response.status_code == 201
    assert response.headers["cache-control"] == "no-store"
    password = response.text.split('id="cred-password" class="secret">')[1].split("<")[0]
    assert len(password) >= 20
    listing = await client.get(url)
    assert f"{org.gateway_id}-x" in listing.text
    assert password not in listing.text


async def test_audit_filters_pages_and_csv_escaping(api: ApiHarness) -> None:
    org = await seed_org(api)
    async with api.state.sessions() as session:
        repo = AuditRepository(session)
        repo.add(
            AuditEvent(
                actor="@evil",
                action="unlock.requested",
                building_id=org.building_id,
                door_id=org.door_id,
                decision="deny",
                reason='=HYPERLINK("http://x","y")',
                detail={"note": 'a,b\n"c"'},
            )
        )
        repo.add(
            AuditEvent(
                actor="u-someone",
                action="unlock.requested",
                building_id=org.building_id,
                door_id=org.door_id,
                decision="allow",
            )
        )
        await session.commit()
    client = await sign_in(api, org.manager_id)
    page = await client.get("/console/audit", params={"door_id": org.door_id, "decision": "deny"})
    assert page.status_code == 200
    assert "@evil" in page.text
    assert "u-someone" not in page.text
    bad = await client.get("/console/audit", params={"decision": "maybe"})
    assert bad.status_code == 422
    export = await client.get(
        "/console/audit.csv", params={"door_id": org.door_id, "start": "", "decision": ""}
    )
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("text/csv")
    assert export.headers["cache-control"] == "no-store"
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert len(rows) == 2
    evil = next(r for r in rows if r["decision"] == "deny")
    assert evil["actor"] == "'@evil"
    assert evil["reason"].startswith("'=HYPERLINK")
    assert evil["detail"] == '{"note":"a,b\\n\\"c\\""}'


async def test_audit_is_limited_to_the_managers_buildings(api: ApiHarness) -> None:
    mine, theirs = await seed_org(api), await seed_org(api)
    async with api.state.sessions() as session:
        AuditRepository(session).add(
            AuditEvent(actor="u-x", action="secret.thing", building_id=theirs.building_id)
        )
        await session.commit()
    client = await sign_in(api, mine.manager_id)
    page = await client.get("/console/audit", params={"action": "secret.thing"})
    assert "secret.thing</td>" not in page.text
    export = await client.get("/console/audit.csv", params={"action": "secret.thing"})
    assert list(csv.DictReader(io.StringIO(export.text))) == []
