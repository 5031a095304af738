"""Fixtures for the OpenID Connect tests: the real provider (oidc-provider under Node.js) on
loopback for the whole session, and the API configured to use it."""

from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest

from api.main import create_app
from api.settings import Settings
from tests.conftest import ApiHarness
from tests.oidc.provider import ProviderHandle, running_provider

API_BASE = "http://citykey.test"
"""The tests' settings.issuer: the public URL, so the callback is API_BASE/app/auth/callback."""
CALLBACK = f"{API_BASE}/app/auth/callback"


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderHandle]:
    """One provider for the session (tests that restart a provider start their own)."""
    with running_provider([CALLBACK], workdir=tmp_path_factory.mktemp("oidc")) as handle:
        yield handle


def oidc_settings(settings: Settings, handle: ProviderHandle, **overrides: Any) -> Settings:
    """``settings`` plus OpenID Connect at ``handle`` (validated again)."""
    assert settings.issuer == API_BASE
    values = {
        **settings.model_dump(),
        "oidc_issuer": handle.issuer,
        "oidc_client_id": handle.client_id,
        "oidc_client_secret": handle.client_secret,
        "oidc_display_name": "Test ID",
        "pseudonym_key": "test-pseudonym-key-0123456789abcdefghijklmnop",
        **overrides,
    }
    return Settings.model_validate(values)


async def start_api(stack: AsyncExitStack, settings: Settings) -> ApiHarness:
    """The app with ``settings``, running, and a cookie-keeping client at API_BASE."""
    app = create_app(settings)
    await stack.enter_async_context(app.router.lifespan_context(app))
    client = await stack.enter_async_context(
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=API_BASE)
    )
    return ApiHarness(client, app.state.citykey)


@pytest.fixture
async def oidc_api(settings: Settings, oidc_provider: ProviderHandle) -> AsyncIterator[ApiHarness]:
    """The API (dev mode, dev identity on too) signing people in through the provider."""
    async with AsyncExitStack() as stack:
        yield await start_api(stack, oidc_settings(settings, oidc_provider))
