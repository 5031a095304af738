"""The web app's sign-in through a real OpenID Connect provider (oidc-provider on loopback),
driven with httpx: authorization code + PKCE, the callback, the session, and everything that
must never hold the national identity number."""

import base64
import json
from urllib.parse import urlsplit

import httpx
import jwt
import pytest
from sqlalchemy import text

from api.identity.models import Role, User
from api.identity.pseudonym import pseudonymous_user_id
from api.web.session import SESSION_COOKIE
from firmware_sim.phone import SimulatedPhone
from tests.conftest import ApiHarness
from tests.oidc.conftest import CALLBACK
from tests.oidc.provider import ACCOUNTS, ProviderHandle, query_of, sign_in_at_provider
from tests.support import World


async def start_sign_in(api: ApiHarness, next_path: str = "/app") -> str:
    """GET /app/login/oidc: the provider URL the browser is sent to."""
    response = await api.client.get("/app/login/oidc", params={"next": next_path})
    assert response.status_code == 303, response.text
    return response.headers["location"]


async def at_provider(authorize_url: str, username: str, *, cancel: bool = False) -> str:
    """The person at the provider (a separate cookie jar: the provider's own site)."""
    async with httpx.AsyncClient(timeout=10) as browser:
        return await sign_in_at_provider(browser, authorize_url, username, cancel=cancel)


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def sign_in(api: ApiHarness, username: str, next_path: str = "/app") -> httpx.Response:
    """The whole flow; the callback's response."""
    back = await at_provider(await start_sign_in(api, next_path), username)
    assert back.startswith(CALLBACK), back
    return await api.client.get(path_of(back))


def session_payload(api: ApiHarness) -> str:
    """The session cookie's signed (not encrypted) JSON, decoded."""
    cookie = api.client.cookies.get(SESSION_COOKIE)
    assert cookie is not None
    data = cookie.split(".", 1)[0]
    return base64.b64decode(data + "=" * (-len(data) % 4)).decode()


async def database_text(api: ApiHarness) -> str:
    """Every row of every table as text: to prove a value is nowhere in the database."""
    async with api.state.sessions() as session:
        tables = (
            await session.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
            )
        ).scalars()
        dumps: list[str] = []
        for table in list(tables):
            rows = await session.execute(text(f'SELECT t::text FROM "{table}" t'))
            dumps.extend(str(row) for row in rows.scalars())
    return "\n".join(dumps)


async def test_login_page_offers_the_provider(oidc_api: ApiHarness) -> None:
    page = await oidc_api.client.get("/app/login")
    assert page.status_code == 200
    assert "Sign in with Test ID" in page.text
    assert "/app/login/oidc" in page.text


async def test_code_flow_with_pkce_signs_in_a_pseudonymous_citizen(
    oidc_api: ApiHarness, oidc_provider: ProviderHandle
) -> None:
    authorize = await start_sign_in(oidc_api, "/app")
    params = query_of(authorize)
    assert params["code_challenge_method"] == "S256"
    assert params["response_type"] == "code"
    assert params["client_id"] == oidc_provider.client_id
    assert params["redirect_uri"] == CALLBACK
    assert params["state"]
    assert params["nonce"]
    assert len(params["code_challenge"]) == 43
    assert "oidc_flow" in session_payload(oidc_api)  # state, nonce, verifier wait here

    back = await at_provider(authorize, "kari")
    callback = await oidc_api.client.get(path_of(back))
    assert callback.status_code == 303, callback.text
    assert callback.headers["location"] == "/app"

    pid = ACCOUNTS["kari"]
    assert oidc_api.state.oidc is not None
    user_id = oidc_api.state.oidc.pseudonym(pid)
    key = oidc_api.state.settings.pseudonym_key.get_secret_value().encode()
    assert user_id == pseudonymous_user_id(key, oidc_provider.issuer, pid)
    assert user_id.startswith("u_")
    assert len(user_id) == 34
    async with oidc_api.state.sessions() as session:
        user = await session.get(User, user_id)
    assert user is not None
    assert user.display_name == "Kari Nordmann"
    assert user.roles == [Role.CITIZEN.value]

    page = await oidc_api.client.get("/app", headers={"Accept": "text/html"})
    assert page.status_code == 200, page.text
    assert "Kari Nordmann" in page.text

    # The pid is nowhere: not in the session (nor the flow, which is gone), not in the
    # database, not in the page.
    payload = session_payload(oidc_api)
    assert user_id in payload
    assert "oidc_flow" not in payload
    assert json.loads(payload)["via"] == "oidc"
    for haystack in (payload, oidc_api.client.cookies.get(SESSION_COOKIE) or "", page.text):
        assert pid not in haystack
    assert pid not in await database_text(oidc_api)


async def test_the_same_person_gets_the_same_id_and_others_another(
    oidc_api: ApiHarness,
) -> None:
    assert (await sign_in(oidc_api, "ola")).status_code == 303
    first = json.loads(session_payload(oidc_api))["uid"]
    assert (await sign_in(oidc_api, "ola")).status_code == 303
    assert json.loads(session_payload(oidc_api))["uid"] == first
    assert (await sign_in(oidc_api, "kari")).status_code == 303
    assert json.loads(session_payload(oidc_api))["uid"] != first


async def test_a_person_without_a_name_gets_a_neutral_one(oidc_api: ApiHarness) -> None:
    assert (await sign_in(oidc_api, "anon")).status_code == 303
    assert oidc_api.state.oidc is not None
    async with oidc_api.state.sessions() as session:
        user = await session.get(User, oidc_api.state.oidc.pseudonym(ACCOUNTS["anon"]))
    assert user is not None
    assert user.display_name == "Citizen"


async def test_an_account_without_a_national_identity_is_refused(oidc_api: ApiHarness) -> None:
    async with oidc_api.state.sessions() as session:
        before = (await session.execute(text("SELECT count(*) FROM users"))).scalar_one()
    response = await sign_in(oidc_api, "nopid")
    assert response.status_code == 400
    assert 'data-code="oidc_missing_pid"' in response.text
    async with oidc_api.state.sessions() as session:
        after = (await session.execute(text("SELECT count(*) FROM users"))).scalar_one()
    assert after == before
    assert "uid" not in json.loads(session_payload(oidc_api))


async def test_a_tampered_state_is_refused(oidc_api: ApiHarness) -> None:
    back = await at_provider(await start_sign_in(oidc_api), "kari")
    forged = back.replace("state=", "state=x")
    response = await oidc_api.client.get(path_of(forged))
    assert response.status_code == 400
    assert 'data-code="oidc_state_mismatch"' in response.text
    # The flow is used up: the genuine answer afterwards is refused too.
    again = await oidc_api.client.get(path_of(back))
    assert 'data-code="oidc_no_sign_in"' in again.text


async def test_a_callback_in_another_browser_is_refused(oidc_api: ApiHarness) -> None:
    back = await at_provider(await start_sign_in(oidc_api), "kari")
    oidc_api.client.cookies.clear()  # the attacker's browser: no flow in its session
    response = await oidc_api.client.get(path_of(back))
    assert response.status_code == 400
    assert 'data-code="oidc_no_sign_in"' in response.text


async def test_a_cancelled_sign_in_shows_the_providers_error(oidc_api: ApiHarness) -> None:
    back = await at_provider(await start_sign_in(oidc_api), "kari", cancel=True)
    assert query_of(back)["error"] == "access_denied"
    response = await oidc_api.client.get(path_of(back))
    assert response.status_code == 400
    assert 'data-code="oidc_provider_error"' in response.text
    assert "access_denied" in response.text


async def test_an_answer_from_another_issuer_is_refused(oidc_api: ApiHarness) -> None:
    back = await at_provider(await start_sign_in(oidc_api), "kari")
    params = query_of(back)
    response = await oidc_api.client.get(
        "/app/auth/callback",
        params={**params, "iss": "https://evil.example"},
    )
    assert 'data-code="oidc_issuer_mismatch"' in response.text


async def test_an_open_redirect_is_not_offered(oidc_api: ApiHarness) -> None:
    response = await sign_in(oidc_api, "kari", next_path="//evil.example/")
    assert response.headers["location"] == "/app"


async def test_logout_ends_the_providers_session_too(
    oidc_api: ApiHarness, oidc_provider: ProviderHandle
) -> None:
    await sign_in(oidc_api, "kari")
    csrf = json.loads(session_payload(oidc_api))["csrf"]
    response = await oidc_api.client.post("/app/logout", data={"csrf_token": csrf})
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith(f"{oidc_provider.issuer}/session/end?")
    assert query_of(location)["post_logout_redirect_uri"] == "http://citykey.test/app/login"
    assert oidc_api.client.cookies.get(SESSION_COOKIE) is None  # the session is gone
    async with httpx.AsyncClient(timeout=10) as browser:
        assert (await browser.get(location)).status_code == 200  # the provider's confirmation


@pytest.mark.usefixtures("oidc_provider")
async def test_no_issued_token_carries_the_pid(
    oidc_api: ApiHarness, broker: object, oidc_provider: ProviderHandle
) -> None:
    """An offline unlock token issued to a person who signed in through the provider names
    the pseudonymous id, never the pid."""
    from tests.oidc.provider import tokens_for

    world = World(oidc_api.state, broker)  # type: ignore[arg-type]
    try:
        await world.seed()
        _, doors = await world.add_gateway()
        door_id = next(iter(doors))
        tokens = await tokens_for(oidc_provider, "kari", CALLBACK)
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
        assert (await oidc_api.client.get("/v1/me/doors", headers=bearer)).status_code == 200
        assert oidc_api.state.oidc is not None
        user_id = oidc_api.state.oidc.pseudonym(ACCOUNTS["kari"])
        await world.grant(user_id, door_id=door_id)
        response = await oidc_api.client.post(
            f"/v1/doors/{door_id}/tokens",
            json={"public_key": SimulatedPhone().public_jwk},
            headers=bearer,
        )
        assert response.status_code == 201, response.text
        token = response.json()["token"]
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["sub"] == user_id
        assert ACCOUNTS["kari"] not in json.dumps(claims)
        assert ACCOUNTS["kari"] not in await database_text(oidc_api)
    finally:
        await world.close()
