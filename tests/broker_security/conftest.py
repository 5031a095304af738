"""Fixtures: a real mosquitto with the dynamic security plugin (one per test session), and the
real API logged in to it as ``citykey-api`` and administering it as ``citykey-admin``."""

import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from api.broker_accounts.acl import ADMIN_USER, API_USER
from api.main import create_app
from api.settings import Settings
from tests.broker_security.broker import DynsecMosquitto
from tests.conftest import ApiHarness


@pytest.fixture(scope="session")
def dynsec_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DynsecMosquitto]:
    broker = DynsecMosquitto(tmp_path_factory.mktemp("dynsec"))
    try:
        yield broker
    finally:
        broker.stop()


def secure_settings(
    database_url: str, key_dir: Path, broker: DynsecMosquitto, *, admin_url: str | None = None
) -> Settings:
    """The API as production runs it: its own broker user, and the plugin's administrator."""
    return Settings(
        mode="dev",
        database_url=database_url,
        mqtt_url=broker.url(API_USER),
        broker_admin_url=admin_url if admin_url is not None else broker.url(ADMIN_USER),
        key_dir=key_dir,
        issuer="http://citykey.test",
        unlock_timeout_s=5.0,
        instance_id=f"api-sec-{secrets.token_hex(3)}",
        unlock_rate_per_minute=0,  # these tests send 1,000 unlocks to one door on purpose
    )


@contextlib.asynccontextmanager
async def running_api(settings: Settings) -> AsyncIterator[ApiHarness]:
    """The real app with its lifespan (relay connected), and an HTTP client for it."""
    app = create_app(settings)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
        )
        harness = ApiHarness(client, app.state.citykey)
        assert harness.state.relay.connected, "the API could not log in to the broker"
        yield harness


@pytest.fixture
async def secure_api(
    pg_database_url: str, key_dir: Path, dynsec_broker: DynsecMosquitto
) -> AsyncIterator[ApiHarness]:
    async with running_api(secure_settings(pg_database_url, key_dir, dynsec_broker)) as api:
        yield api
