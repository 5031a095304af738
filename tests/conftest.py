"""Shared fixtures. Integration tests run against the machine's real PostgreSQL and Mosquitto.

- PostgreSQL: a fresh database per test run, created from CITYKEY_TEST_PG_ADMIN_URL
  (default postgresql://postgres@127.0.0.1:5432/test) and dropped at the end.
- Mosquitto: CITYKEY_TEST_MQTT_URL (default mqtt://127.0.0.1:1883).
A missing service fails the run: these tests are never skipped.
"""

import asyncio
import os
import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from api.main import create_app
from api.migrate import upgrade
from api.settings import Settings
from api.state import AppState
from citykey_protocol.transport import BrokerAddress
from tests.support import World

PG_ADMIN_URL = os.environ.get(
    "CITYKEY_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
MQTT_URL = os.environ.get("CITYKEY_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")


def _require_tcp(host: str, port: int, what: str) -> None:
    try:
        with socket.create_connection((host, port), timeout=3):
            return
    except OSError as exc:
        pytest.fail(
            f"{what} is not reachable at {host}:{port} ({exc}); start it, see README", pytrace=False
        )


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this run (asyncpg URL)."""
    parts = urlsplit(PG_ADMIN_URL)
    _require_tcp(parts.hostname or "127.0.0.1", parts.port or 5432, "PostgreSQL")
    name = f"citykey_test_{os.getpid()}_{secrets.token_hex(3)}"

    async def admin(sql: str) -> None:
        connection = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    netloc = parts.netloc
    url = f"postgresql+asyncpg://{netloc}/{name}"
    upgrade(url)
    yield url
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def broker() -> BrokerAddress:
    address = BrokerAddress.parse(MQTT_URL)
    _require_tcp(address.host, address.port, "Mosquitto")
    return address


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys")


@pytest.fixture
def settings(pg_database_url: str, broker: BrokerAddress, key_dir: Path) -> Settings:
    return Settings(
        mode="dev",
        database_url=pg_database_url,
        mqtt_url=MQTT_URL,
        key_dir=key_dir,
        issuer="http://citykey.test",
        unlock_timeout_s=2.0,
        instance_id=f"api-test-{secrets.token_hex(3)}",
        # Generous database timeouts: the production defaults (0.5 s) are tuned for "503
        # within 1 s" and are proven by tests/faults with exactly those defaults; elsewhere a
        # loaded CI machine must not turn a slow connect into a spurious 503.
        db_connect_timeout_s=3.0,
        db_pool_timeout_s=3.0,
        db_ping_timeout_s=2.0,
    )


class ApiHarness:
    """The running app, an HTTP client for it, and direct access to its state."""

    def __init__(self, client: httpx.AsyncClient, state: AppState) -> None:
        self.client = client
        self.state = state

    def token_for(self, user_id: str) -> dict[str, str]:
        assert self.state.dev_identity is not None
        return {"Authorization": f"Bearer {self.state.dev_identity.issue(user_id)}"}

    async def session(self) -> AsyncSession:
        return self.state.sessions()


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[ApiHarness]:
    app = create_app(settings)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
        )
        harness = ApiHarness(client, app.state.citykey)
        yield harness


@pytest.fixture
async def world(api: ApiHarness, broker: BrokerAddress) -> AsyncIterator[World]:
    """A building, users, and a helper to start real gateways with simulated locks."""
    world = World(api.state, broker)
    await world.seed()
    yield world
    await world.close()
