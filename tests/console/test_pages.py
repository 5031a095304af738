"""The console pages render for a manager, refuse others in HTML, and hide other owners'
objects (404 exactly like a missing one)."""

from datetime import UTC, datetime, timedelta

from api.bookings.models import Booking, BookingClient
from api.identity.models import Role
from tests.conftest import ApiHarness
from tests.console.helpers import sign_in
from tests.manage.helpers_org import add_user, seed_org
from tests.support import unique

PAGES = (
    "/console",
    "/console/grants",
    "/console/groups",
    "/console/hours",
    "/console/bookings",
    "/console/lockdown",
    "/console/audit",
    "/console/gateways",
)


async def test_every_page_renders_for_a_manager(api: ApiHarness) -> None:
    org = await seed_org(api)
    client = await sign_in(api, org.manager_id)
    for url in PAGES:
        response = await client.get(url)
        assert response.status_code == 200, (url, response.text)
        assert response.headers["content-type"].startswith("text/html")
        assert 'src="/static/console.js"' in response.text
    overview = await client.get("/console")
    assert org.door_id in overview.text
    assert "Main entrance" in overview.text
    hours = await client.get("/console/hours", params={"building": org.building_id})
    assert "17." in hours.text  # the seeded holiday


async def test_door_rows_fragment_and_door_detail(api: ApiHarness) -> None:
    org = await seed_org(api)
    client = await sign_in(api, org.manager_id)
    part = await client.get(f"/console/buildings/{org.building_id}/doors.part")
    assert part.status_code == 200
    assert part.headers["cache-control"] == "no-store"
    assert f'data-door="{org.door_id}"' in part.text
    assert "offline" in part.text  # the gateway never connected
    assert "<html" not in part.text
    detail = await client.get(f"/console/doors/{org.door_id}")
    assert detail.status_code == 200
    assert "Main entrance" in detail.text


async def test_citizen_gets_a_friendly_403_page(api: ApiHarness) -> None:
    citizen = await add_user(api, "u-cit", Role.CITIZEN)
    client = await sign_in(api, citizen)
    response = await client.get("/console", headers={"Accept": "text/html"})
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")
    assert "Not allowed" in response.text
    assert 'data-code="manager_only"' in response.text


async def test_signed_out_visitor_is_sent_to_sign_in(api: ApiHarness) -> None:
    response = await api.client.get("/console/audit", headers={"Accept": "text/html"})
    assert response.status_code == 303
    assert response.headers["location"] == "/app/login?next=/console/audit"


async def test_other_owners_objects_are_not_found(api: ApiHarness) -> None:
    mine, theirs = await seed_org(api), await seed_org(api)
    client = await sign_in(api, mine.manager_id)
    for url in (
        f"/console/doors/{theirs.door_id}",
        f"/console/buildings/{theirs.building_id}/doors.part",
        f"/console/hours?building={theirs.building_id}",
        f"/console/lockdown?building={theirs.building_id}",
        f"/console/lockdown/{theirs.building_id}/confirm",
        f"/console/gateways?building={theirs.building_id}",
        "/console/doors/no-such-door",
    ):
        response = await client.get(url)
        assert response.status_code == 404, url
        assert "Not found" in response.text
    overview = await client.get("/console")
    assert theirs.door_id not in overview.text


async def test_bookings_from_booking_systems_of_my_owners_only(api: ApiHarness) -> None:
    mine, theirs = await seed_org(api), await seed_org(api)
    now = datetime.now(UTC)
    async with api.state.sessions() as session:
        for org, external in ((mine, "mine-123"), (theirs, "theirs-456")):
            client_id = unique("bc")
            session.add(
                BookingClient(id=client_id, name="Aktiv", owner_id=org.owner_id, secret_hash="x")
            )
            await session.flush()
            session.add(
                Booking(
                    id=unique("bkg"),
                    client_id=client_id,
                    external_id=external,
                    version=1,
                    valid_from=now,
                    valid_until=now + timedelta(hours=2),
                    document={"doors": [org.door_id], "buildings": [], "recipients": []},
                )
            )
        await session.commit()
    client = await sign_in(api, mine.manager_id)
    page = await client.get("/console/bookings")
    assert "mine-123" in page.text
    assert "theirs-456" not in page.text
