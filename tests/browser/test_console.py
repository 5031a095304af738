"""The manager console in a real browser: a manager grants Ola a door and Ola opens it; a
lockdown (with its confirmation step) makes every gateway refuse, and the citizen sees why.
Takes the console screenshots in docs/img/ (desktop viewport)."""

import re

from playwright.sync_api import Page, expect

from api.demo import BUILDING_ID, CITIZEN_ID, MANAGER_ID, OTHER_CITIZEN_ID
from tests.browser.conftest import (
    OFFLINE_GATEWAY_ID,
    ONLINE_DOOR_IDS,
    ONLINE_GATEWAY_IDS,
    LiveApi,
    screenshot,
    sign_in_dev,
)

UNLOCKED = re.compile(r"Unlocked until \d\d:\d\d:\d\d")
LIBRARY = "Grünerløkka library"


def test_manager_grants_ola_a_door_and_ola_opens_it(desktop_page: Page, page: Page) -> None:
    manager, ola = desktop_page, page
    door_id = ONLINE_DOOR_IDS[1]
    sign_in_dev(manager, MANAGER_ID, "/console")
    expect(manager.get_by_role("heading", level=1)).to_have_text("Buildings and doors")
    row = manager.locator(f'tr[data-door="{door_id}"]')
    expect(row).to_contain_text("online")
    # The fleet reported every lock's state at start (citykey-sim --report-state).
    expect(row.locator('[data-field="lock"]')).to_have_text("locked")
    expect(row.locator('[data-field="battery"]')).to_contain_text("%")

    manager.get_by_role("link", name="Grants", exact=True).click()
    manager.locator("#g-subject").fill(OTHER_CITIZEN_ID)
    manager.locator("#g-target").select_option(f"door:{door_id}")
    manager.locator("#g-note").fill("Volunteer, autumn term")
    with manager.expect_navigation():
        manager.get_by_role("button", name="Grant access").click()
    expect(manager.get_by_role("status").first).to_contain_text("Access granted to Ola Nordmann")
    expect(manager.locator("table.grants")).to_contain_text("Volunteer, autumn term")

    # A scheduled grant for the makerspace group, so the calendar has more than public hours.
    manager.locator("#g-group").select_option(label="Makerspace volunteers")
    manager.locator("#g-target").select_option(f"door:{ONLINE_DOOR_IDS[3]}")
    for day in ("1", "3"):
        manager.locator(f'input[name="days"][value="{day}"]').check()
    manager.locator('input[name="start"]').fill("17:00")
    manager.locator('input[name="end"]').fill("21:30")
    manager.locator("#g-note").fill("Makerspace evenings")
    with manager.expect_navigation():
        manager.get_by_role("button", name="Grant access").click()
    expect(manager.get_by_role("status").first).to_contain_text(
        "Access granted to Makerspace volunteers"
    )
    screenshot(manager, "console-grants")

    manager.get_by_role("link", name="Hours", exact=True).click()
    expect(manager.locator(".cal-block.public")).to_have_count(7)
    expect(manager.locator(".cal-block.grant")).to_have_count(2)
    screenshot(manager, "console-calendar")

    # The manager watches the overview while Ola opens the door: the row changes by itself.
    manager.get_by_role("link", name="Overview", exact=True).click()
    sign_in_dev(ola, OTHER_CITIZEN_ID)
    door = ola.locator(f"#door-{door_id}")
    door.scroll_into_view_if_needed()
    door.get_by_role("button", name=re.compile("Open")).click()
    expect(door.get_by_role("status")).to_contain_text(UNLOCKED)
    # Unlocked for the door's 5 s, polled every 2 s: the row shows it without a reload.
    expect(row.locator('[data-field="lock"]')).to_have_text("unlocked", timeout=10_000)
    expect(manager.locator("body.live")).to_have_count(1)
    screenshot(manager, "console-overview")


def test_lockdown_with_confirmation_blocks_an_unlock(
    desktop_page: Page, page: Page, live_api: LiveApi
) -> None:
    manager, kari = desktop_page, page
    door_id = ONLINE_DOOR_IDS[0]
    # Kari's page is open before the lockdown: her Open button is there, and must be refused.
    sign_in_dev(kari, CITIZEN_ID)
    expect(kari.locator(f"#door-{door_id}").get_by_role("button")).to_be_visible()

    sign_in_dev(manager, MANAGER_ID, f"/console/lockdown?building={BUILDING_ID}")
    try:
        manager.get_by_role("link", name=re.compile(f"Lock down {LIBRARY}")).click()
        expect(manager.get_by_role("heading", level=1)).to_have_text(f"Lock down {LIBRARY}?")
        expect(manager.get_by_role("alert")).to_contain_text("Every door will refuse unlocks")
        manager.locator("#ld-reason").fill("Police operation in the area")
        with manager.expect_navigation():
            manager.get_by_role("button", name=f"Yes, lock down {LIBRARY}").click()
        expect(manager.locator(".lockdown-on")).to_contain_text("Police operation in the area")
        # Every running gateway acknowledges (the panel refreshes itself); the unplugged one
        # cannot.
        for gateway_id in ONLINE_GATEWAY_IDS:
            ack = manager.locator(f'tr[data-gateway="{gateway_id}"] [data-ack="yes"]')
            expect(ack).to_have_count(1)
        expect(manager.locator(f'tr[data-gateway="{OFFLINE_GATEWAY_ID}"]')).to_contain_text(
            "not yet"
        )
        screenshot(manager, "console-lockdown")

        door = kari.locator(f"#door-{door_id}")
        door.get_by_role("button", name=re.compile("Open")).click()
        expect(door.get_by_role("status")).to_contain_text(re.compile("lockdown", re.I))

        with manager.expect_navigation():
            manager.get_by_role("button", name="Lift lockdown").click()
        expect(manager.get_by_role("status").first).to_contain_text("Lockdown lifted")
    finally:
        # Never leave the shared demo building locked down for the tests that follow.
        with live_api.client(MANAGER_ID) as client:
            client.delete(f"/v1/buildings/{BUILDING_ID}/lockdown")

    manager.get_by_role("link", name="Audit log").click()
    manager.locator('select[name="building_id"]').select_option(BUILDING_ID)
    with manager.expect_navigation():
        manager.get_by_role("button", name="Filter").click()
    expect(manager.locator("table.audit")).to_contain_text("building.lockdown_started")
    expect(manager.locator("table.audit")).to_contain_text("deny")
    screenshot(manager, "console-audit")
    with manager.expect_download() as download:
        manager.get_by_role("link", name="Export CSV").click()
    assert download.value.suggested_filename.startswith("citykey-audit-")


def test_console_forms_work_without_javascript(page_no_js: Page) -> None:
    page = page_no_js
    sign_in_dev(page, MANAGER_ID, f"/console/hours?building={BUILDING_ID}")
    page.locator('input[name="date"]').fill("2031-12-25")
    page.locator('input[name="name"]').fill("Første juledag")
    with page.expect_navigation():
        page.get_by_role("button", name="Add holiday").click()
    expect(page.get_by_role("status").first).to_contain_text("Første juledag")
    expect(page.locator("table.holidays")).to_contain_text("2031-12-25")
    with page.expect_navigation():
        page.locator("table.holidays tr", has_text="2031-12-25").get_by_role(
            "button", name="Remove"
        ).click()
    expect(page.get_by_role("status").first).to_contain_text("Holiday removed")
