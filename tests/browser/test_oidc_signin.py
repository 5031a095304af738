"""Sign in through a real OpenID Connect provider (oidc-provider on loopback) in Chromium, and
land on the citizen's "my keys" page. Takes docs/img/oidc-provider-sign-in.png."""

import re
import secrets
from collections.abc import Callable, Iterator, Mapping

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import LiveApi, screenshot
from tests.oidc.provider import (
    ProviderHandle,
    free_port,
    new_signing_key,
    running_provider,
)

PLACEHOLDER_CALLBACK = "http://127.0.0.1:9/app/auth/callback"


@pytest.fixture(scope="module")
def oidc_live(
    start_api: Callable[[Mapping[str, str]], LiveApi], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveApi, ProviderHandle]]:
    """An API process signing people in through a provider on loopback.

    The API must know the provider's issuer when it starts, and the provider must know the
    API's redirect URI (the API's port is chosen by ``start_api``). So: start the provider,
    start the API against it, then restart the provider on the same port with the same keys
    and client secret and the API's real redirect URI. The API sees the same issuer and keys.
    """
    workdir = tmp_path_factory.mktemp("oidc-browser")
    keys = [new_signing_key()]
    port = free_port()
    secret = secrets.token_urlsafe(24)
    with running_provider(
        [PLACEHOLDER_CALLBACK], keys=keys, port=port, client_secret=secret, workdir=workdir
    ) as first:
        api = start_api(
            {
                "CITYKEY_OIDC_ISSUER": first.issuer,
                "CITYKEY_OIDC_CLIENT_ID": first.client_id,
                "CITYKEY_OIDC_CLIENT_SECRET": first.client_secret,
                "CITYKEY_OIDC_DISPLAY_NAME": "Test ID",
            }
        )
    with running_provider(
        [f"{api.base_url}/app/auth/callback"],
        keys=keys,
        port=port,
        client_secret=secret,
        workdir=workdir,
    ) as provider:
        yield api, provider


@pytest.fixture
def oidc_page(oidc_live: tuple[LiveApi, ProviderHandle], browser: Browser) -> Iterator[Page]:
    api, _ = oidc_live
    context = browser.new_context(
        base_url=api.base_url,
        viewport={"width": 390, "height": 844},
        locale="en-GB",
        timezone_id="Europe/Oslo",
        reduced_motion="reduce",
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


def test_sign_in_through_the_provider_lands_on_my_keys(
    oidc_page: Page, oidc_live: tuple[LiveApi, ProviderHandle]
) -> None:
    page = oidc_page
    _, provider = oidc_live
    page.goto("/app/login")
    page.get_by_role("link", name="Sign in with Test ID").click()
    # The provider's own sign-in page (its development login form).
    expect(page).to_have_url(re.compile(re.escape(provider.issuer) + "/interaction/"))
    page.locator('input[name="login"]').fill("kari")
    page.locator('input[name="password"]').fill("any password")
    screenshot(page, "oidc-provider-sign-in")
    page.get_by_role("button", name="Sign-in").click()
    # Back at citykey, signed in as the person the provider vouched for.
    expect(page).to_have_url(re.compile(r"/app$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(re.compile("My keys"))
    expect(page.get_by_text("Kari Nordmann").first).to_be_visible()
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    assert "citykey_session" in cookies
    assert "01017000027" not in " ".join(cookies.values())
