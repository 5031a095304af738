"""The citizen web app in a real browser: sign in, open a door, see why a door refused, use
the keyboard only. Takes the citizen screenshots in docs/img/."""

import re

from playwright.sync_api import Page, expect

from api.demo import CITIZEN_ID, OTHER_CITIZEN_ID
from tests.browser.conftest import (
    LATER_DOOR_ID,
    OFFLINE_DOOR_ID,
    ONLINE_DOOR_IDS,
    screenshot,
    sign_in_dev,
)

UNLOCKED = re.compile(r"Unlocked until \d\d:\d\d:\d\d")


def test_citizen_sees_keys_grouped_by_building_now_and_later(page: Page) -> None:
    sign_in_dev(page, CITIZEN_ID)
    expect(page).to_have_url(re.compile(r"/app$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(re.compile("My keys"))
    library = page.locator("section.building", has_text="Grünerløkka library")
    expect(library.get_by_role("button", name=re.compile("Open"))).to_have_count(
        len(ONLINE_DOOR_IDS) + 1  # the demo doors and the bike storage on the unplugged gateway
    )
    # A screen reader hears which door each Open button opens.
    expect(library.get_by_role("button", name="Open · Åpne Main entrance")).to_have_count(1)
    later = page.locator(f"#door-{LATER_DOOR_ID}")
    expect(later).to_contain_text("Next opening")
    expect(later).to_contain_text("Kan åpnes fra")
    expect(later.get_by_role("button")).to_have_count(0)
    screenshot(page, "citizen-keys")


def test_open_a_door_and_see_it_unlocked(page: Page) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    sign_in_dev(page, CITIZEN_ID)
    door = page.locator(f"#door-{ONLINE_DOOR_IDS[0]}")
    door.get_by_role("button", name=re.compile("Open")).click()
    status = door.get_by_role("status")
    expect(status).to_contain_text(UNLOCKED)
    expect(status).to_contain_text("Låst opp til")
    screenshot(page, "citizen-unlocked")
    # The countdown ends when the door has relocked (the demo doors open for 5 s).
    expect(status).to_contain_text("Locked again", timeout=30_000)
    assert not errors, errors


def test_a_refused_door_says_why_in_both_languages(page: Page) -> None:
    sign_in_dev(page, CITIZEN_ID)
    door = page.locator(f"#door-{OFFLINE_DOOR_ID}")
    door.scroll_into_view_if_needed()
    door.get_by_role("button", name=re.compile("Open")).click()
    status = door.get_by_role("status")
    expect(status).to_contain_text("The door is offline right now")
    expect(status).to_contain_text("Døren er uten nettforbindelse")
    screenshot(page, "citizen-refused")


def test_keyboard_only_open(page: Page) -> None:
    sign_in_dev(page, CITIZEN_ID)
    target = page.locator(f"#door-{ONLINE_DOOR_IDS[2]}").get_by_role("button")
    for _ in range(40):  # bounded: Tab through the page until that door's button
        page.keyboard.press("Tab")
        if target.evaluate("element => element === document.activeElement"):
            break
    expect(target).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator(f"#status-{ONLINE_DOOR_IDS[2]}")).to_contain_text(UNLOCKED)


def test_open_without_javascript_posts_the_form(page_no_js: Page) -> None:
    page = page_no_js
    sign_in_dev(page, CITIZEN_ID)
    door = page.locator(f"#door-{ONLINE_DOOR_IDS[2]}")
    with page.expect_navigation():
        door.get_by_role("button", name=re.compile("Open")).click()
    expect(page.locator(f"#status-{ONLINE_DOOR_IDS[2]}")).to_contain_text(UNLOCKED)


def test_activity_lists_my_openings_and_refusals(page: Page) -> None:
    sign_in_dev(page, CITIZEN_ID)
    door = page.locator(f"#door-{ONLINE_DOOR_IDS[0]}")
    door.get_by_role("button", name=re.compile("Open")).click()
    expect(door.get_by_role("status")).to_contain_text(UNLOCKED)
    page.get_by_role("link", name=re.compile("Activity")).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(re.compile("My activity"))
    rows = page.locator("table.activity tbody tr")
    expect(rows.first).to_contain_text("Opened")
    expect(page.locator("table.activity")).to_contain_text("Bike storage")
    screenshot(page, "citizen-activity")


def test_a_citizen_without_a_grant_has_no_library_keys(page: Page) -> None:
    sign_in_dev(page, OTHER_CITIZEN_ID)
    expect(page.get_by_role("heading", level=1)).to_have_text(re.compile("My keys"))
    # Doors the console tests never grant him (they give him [1] and [3]).
    for door_id in (ONLINE_DOOR_IDS[0], ONLINE_DOOR_IDS[2]):
        expect(page.locator(f"#door-{door_id}")).to_have_count(0)


def test_the_app_is_installable_and_its_service_worker_runs(page: Page) -> None:
    sign_in_dev(page, CITIZEN_ID)
    scope = page.evaluate("navigator.serviceWorker.ready.then(r => r.scope)")
    assert scope.endswith("/app")
    manifest = page.request.get("/app/manifest.webmanifest")
    assert manifest.ok
    assert manifest.json()["start_url"] == "/app"
    worker = page.request.get("/app/sw.js")
    assert worker.ok
    assert "never caches" in worker.text().lower()
