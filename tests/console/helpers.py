"""Helpers for the console tests: sign in through the dev sign-in form and post forms with
the page's CSRF token, as a browser would."""

import re

import httpx

from tests.conftest import ApiHarness

_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "the page carries no CSRF token"
    return found.group(1)


async def sign_in(api: ApiHarness, user_id: str) -> httpx.AsyncClient:
    """Sign ``user_id`` in on the harness client (replacing any earlier session)."""
    client = api.client
    page = await client.get("/app/login")
    response = await client.post(
        "/app/login/dev",
        data={"user_id": user_id, "next": "/console", "csrf_token": csrf_of(page.text)},
    )
    assert response.status_code == 303, response.text
    return client


async def post_form(
    client: httpx.AsyncClient, page_url: str, action: str, data: dict[str, str | list[str]]
) -> httpx.Response:
    """GET ``page_url`` for its CSRF token, then post ``data`` to ``action`` from it."""
    page = await client.get(page_url)
    assert page.status_code == 200, page.text
    return await client.post(
        action,
        data={**data, "csrf_token": csrf_of(page.text)},
        headers={"Referer": f"http://test{page_url}"},
    )


async def flashes(client: httpx.AsyncClient, url: str) -> str:
    """The page at ``url`` (where a 303 led), to read its flash messages."""
    response = await client.get(url)
    assert response.status_code == 200, response.text
    return response.text
