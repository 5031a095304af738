"""The citizen web app's routes over the real app and PostgreSQL (no browser): sign-in
redirect, CSRF, opening a door as a form post and as fetch(), the shared rate limit."""

import re
from pathlib import Path

import httpx

from api.access.policy import DenyReason
from api.web.i18n import REFUSALS
from tests.citizen.helpers import add_building, add_grant, add_owner, add_user
from tests.conftest import ApiHarness

ROOT = Path(__file__).resolve().parents[2]
JSON = {"Accept": "application/json"}
HTML = {"Accept": "text/html"}


async def sign_in(client: httpx.AsyncClient, user_id: str) -> str:
    """Sign in through the development sign-in form; the session's CSRF token."""
    page = await client.get("/app/login", headers=HTML)
    assert page.status_code == 200, page.text
    token = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert token
    response = await client.post(
        "/app/login/dev", data={"csrf_token": token.group(1), "user_id": user_id, "next": "/app"}
    )
    assert response.status_code == 303, response.text
    keys = await client.get("/app", headers=HTML)
    found = re.search(r'name="csrf-token" content="([^"]+)"', keys.text)
    assert found
    return found.group(1)


async def test_the_app_sends_strangers_to_sign_in(api: ApiHarness) -> None:
    response = await api.client.get("/app", headers=HTML)
    assert response.status_code == 303
    assert response.headers["location"] == "/app/login?next=/app"
    response = await api.client.post("/app/doors/d1/open", headers=JSON)
    assert response.status_code == 401


async def test_my_keys_lists_doors_now_and_later(api: ApiHarness) -> None:
    me = await add_user(api)
    _, (door,) = await add_building(api, await add_owner(api), name="Deichman Bjørvika")
    await add_grant(api, user_id=me, door_id=door)
    await sign_in(api.client, me)
    response = await api.client.get("/app", headers=HTML)
    assert response.status_code == 200
    assert "Deichman Bjørvika" in response.text
    assert f'action="/app/doors/{door}/open"' in response.text
    assert response.text.count("<h1") == 1


async def test_open_without_csrf_token_is_refused(api: ApiHarness) -> None:
    me = await add_user(api)
    _, (door,) = await add_building(api, await add_owner(api))
    await add_grant(api, user_id=me, door_id=door)
    await sign_in(api.client, me)
    response = await api.client.post(f"/app/doors/{door}/open", data={"csrf_token": "forged"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "csrf_failed"
    # A browser posting a stale form gets a page with a way back, not JSON.
    page = await api.client.post(
        f"/app/doors/{door}/open", data={"csrf_token": "stale"}, headers=HTML
    )
    assert page.status_code == 403
    assert 'data-code="csrf_failed"' in page.text
    assert 'href="/app"' in page.text


async def test_json_open_says_why_in_both_languages(api: ApiHarness) -> None:
    owner = await add_owner(api)
    me = await add_user(api)
    _, (offline,) = await add_building(api, owner)  # its gateway never runs
    _, (locked,) = await add_building(api, owner, lockdown=True)
    _, (not_mine,) = await add_building(api, owner)
    await add_grant(api, user_id=me, door_id=offline)
    await add_grant(api, user_id=me, door_id=locked)
    csrf = await sign_in(api.client, me)
    headers = {**JSON, "X-CSRF-Token": csrf}

    cases = {
        offline: (503, "gateway_offline"),
        locked: (403, "lockdown"),
        not_mine: (403, "no_grant"),
    }
    for door, (status, code) in cases.items():
        response = await api.client.post(f"/app/doors/{door}/open", headers=headers)
        assert response.status_code == status, response.text
        body = response.json()
        assert body["status"] == "refused"
        assert body["code"] == code
        assert body["message_nb"] == REFUSALS[code].nb
        assert body["message_en"] == REFUSALS[code].en
        assert response.headers["cache-control"] == "no-store"


async def test_form_open_redirects_back_with_the_result(api: ApiHarness) -> None:
    me = await add_user(api)
    _, (door,) = await add_building(api, await add_owner(api))
    await add_grant(api, user_id=me, door_id=door)
    csrf = await sign_in(api.client, me)
    response = await api.client.post(f"/app/doors/{door}/open", data={"csrf_token": csrf})
    assert response.status_code == 303
    assert response.headers["location"] == f"/app#door-{door}"
    page = await api.client.get("/app", headers=HTML)
    assert REFUSALS["gateway_offline"].en in page.text
    assert REFUSALS["gateway_offline"].nb in page.text
    again = await api.client.get("/app", headers=HTML)
    assert REFUSALS["gateway_offline"].en not in again.text, "a flash is shown once"


async def test_the_app_and_the_api_share_the_unlock_rate_limit(api: ApiHarness) -> None:
    me = await add_user(api)
    _, (door,) = await add_building(api, await add_owner(api))
    await add_grant(api, user_id=me, door_id=door)
    csrf = await sign_in(api.client, me)
    headers = {**JSON, "X-CSRF-Token": csrf}
    allowed = api.state.settings.unlock_rate_per_minute
    for _ in range(allowed):
        response = await api.client.post(f"/app/doors/{door}/open", headers=headers)
        assert response.json()["code"] == "gateway_offline"

    refused = await api.client.post(f"/app/doors/{door}/open", headers=headers)
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert refused.json()["message_nb"] == REFUSALS["rate_limited"].nb
    assert int(refused.headers["retry-after"]) >= 1
    via_api = await api.client.post(f"/v1/doors/{door}/unlock", headers=api.token_for(me))
    assert via_api.status_code == 429
    assert via_api.json()["error"]["code"] == "rate_limited"


async def test_activity_and_shares_pages(api: ApiHarness) -> None:
    me = await add_user(api)
    _, (door,) = await add_building(api, await add_owner(api))
    await add_grant(api, user_id=me, door_id=door)
    csrf = await sign_in(api.client, me)
    await api.client.post(f"/app/doors/{door}/open", headers={**JSON, "X-CSRF-Token": csrf})
    activity = await api.client.get("/app/activity", headers=HTML)
    assert activity.status_code == 200
    assert "Door was offline" in activity.text
    shares = await api.client.get("/app/shares", headers=HTML)
    assert shares.status_code == 200
    assert "Shared with me" in shares.text


async def test_manifest_and_service_worker(api: ApiHarness) -> None:
    manifest = await api.client.get("/app/manifest.webmanifest")
    assert manifest.status_code == 200
    assert manifest.headers["content-type"].startswith("application/manifest+json")
    body = manifest.json()
    assert body["start_url"] == "/app"
    assert body["display"] == "standalone"
    assert all(icon["src"].startswith("/static/") for icon in body["icons"])
    worker = await api.client.get("/app/sw.js")
    assert worker.status_code == 200
    assert worker.headers["service-worker-allowed"] == "/app"


def _raised_codes(path: Path) -> set[str]:
    return set(re.findall(r'ApiError\(\s*\d+,\s*"([a-z_]+)"', path.read_text()))


def test_every_unlock_refusal_has_a_norwegian_and_english_text() -> None:
    codes = {reason.value for reason in DenyReason}
    for module in ("api/unlock/service.py", "api/limits/doors.py", "api/web/citizen/opening.py"):
        found = _raised_codes(ROOT / module)
        assert found, f"no ApiError codes found in {module}: has the pattern changed?"
        codes |= found
    codes |= {"database_unavailable", "csrf_failed"}
    missing = sorted(code for code in codes if code not in REFUSALS)
    assert not missing, f"no citizen text for {missing}: add them to api/web/i18n.py"
    for code, text in REFUSALS.items():
        assert text.nb, code
        assert text.en, code
        assert text.nb != text.en, code
