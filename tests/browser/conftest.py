"""Browser tests: Playwright (sync API) driving Debian's Chromium against a running citykey.

What runs, once for the tests/browser package (all real, all on loopback). Every fixture here
is package-scoped: Playwright's sync API keeps an event loop running in the test thread, which
would break every ``asyncio.run`` of the tests that come after, and the processes would cost
them CPU; both end when the last browser test has run.

- PostgreSQL: a fresh database of its own (not the suite's shared ``pg_database_url``, since the
  demo data below uses fixed ids), migrated, seeded with :func:`api.demo.seed_demo` plus
  :func:`seed_browser_extras`, dropped at the end.
- Mosquitto: a private broker on a free port (TCP_NODELAY), stopped by its PID.
- The API: ``citykey serve`` as a separate process (uvicorn), dev mode, on a free port.
- The doors: ``citykey-sim`` running the real gateway code for the demo fleet
  (``api.demo.DEMO_LAYOUT``) against the private broker. The extra gateway
  :data:`OFFLINE_GATEWAY_ID` is seeded but never started, so its door is refused with
  ``gateway_offline``.

Fixtures for test modules:

- ``live_api`` (:class:`LiveApi`): ``base_url``, ``token_for(user_id)`` for the JSON API.
- ``base_url``: the web app's origin, e.g. ``http://127.0.0.1:41234``.
- ``browser``: Chromium (``/usr/bin/chromium``; missing: the run FAILS, it is never skipped).
- ``page``: a fresh context with a phone viewport (390x844); ``desktop_page``: 1280x800.
- ``start_api``: a factory ``start_api(extra_env) -> LiveApi`` that starts ANOTHER API process
  on the same database, broker, keys and fleet, with extra environment (for instance the
  ``CITYKEY_OIDC_*`` settings of an OpenID Connect test). One process per distinct
  ``extra_env``, started once, stopped after the package::

      @pytest.fixture(scope="module")
      def oidc_api(start_api):
          return start_api({"CITYKEY_OIDC_ISSUER": "http://127.0.0.1:9999", ...})

One server for the package, shared by every browser test module: what a test changes
(unlocks in the audit log, grants, lockdown) stays for the tests after it. End what you
start (lift a lockdown) and do not assume a door nobody has touched. The citizen tests open
``ONLINE_DOOR_IDS[0]`` and ``[2]`` and the offline door as Kari.

Helpers: :func:`sign_in_dev` and :func:`screenshot` (viewport-only PNGs into
``CITYKEY_SCREENSHOT_DIR``, default var/screenshots; ``make screenshots`` writes docs/img).
"""

import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from api.access.models import Grant
from api.buildings.models import Building, Door
from api.db import create_engine, session_factory, session_scope
from api.demo import BUILDING_ID, CITIZEN_ID, DEMO_LAYOUT, MANAGER_ID, OWNER_ID, seed_demo
from api.gateways.models import Gateway
from api.identity.dev_provider import DevIdentityProvider
from api.migrate import upgrade
from api.settings import Settings
from tests.conftest import PG_ADMIN_URL

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-gpu",
    "--no-first-run",
]
PHONE_VIEWPORT = {"width": 390, "height": 844}
DESKTOP_VIEWPORT = {"width": 1280, "height": 800}
SCREENSHOT_DIR = Path(
    os.environ.get(
        "CITYKEY_SCREENSHOT_DIR", Path(__file__).resolve().parents[2] / "var" / "screenshots"
    )
)
"""Where the browser tests save their screenshots. Not docs/img by default: the pictures hold
clock times, so every run would change tracked files; `make screenshots` refreshes docs/img."""
START_TIMEOUT_S = 60.0
"""Bound of every start-up wait (API ready, gateways online)."""
BIN = Path(sys.executable).parent
T = TypeVar("T")

OFFLINE_GATEWAY_ID = "demo-gw-offline"
OFFLINE_DOOR_ID = "demo-gw-offline-d1"
"""A door on a gateway that never connects: opening it is refused (``gateway_offline``)."""
LATER_BUILDING_ID = "bld_toyen_school"
LATER_DOOR_ID = "door_toyen_gym"
"""A door Kari may open only from tomorrow (a grant that has not started yet)."""
ONLINE_GATEWAY_IDS = [gateway_id for gateway_id, _ in DEMO_LAYOUT]
ONLINE_DOOR_IDS = [door for _, doors in DEMO_LAYOUT for door in doors]


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to completion on a fresh event loop in a worker thread.

    Playwright's sync API keeps an event loop running in the test thread, so ``asyncio.run``
    there fails once a browser has started; a thread of its own has no such loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}:\n{_tail(log)}", pytrace=False)
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail(f"{what} did not listen on {port} in {START_TIMEOUT_S} s:\n{_tail(log)}")


def _tail(log: Path, lines: int = 40) -> str:
    if not log.exists():
        return "(no output)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop one of our own processes by its PID: SIGTERM, then SIGKILL after 15 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@dataclass
class _Processes:
    """The processes the browser tests started, stopped in reverse order at the end."""

    work: Path
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def spawn(
        self, name: str, argv: list[str], env: Mapping[str, str] | None = None
    ) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.work / f"{name}.log"
        # Our own binaries with our own arguments: nothing untrusted.
        process = subprocess.Popen(
            argv,
            env=dict(env) if env is not None else None,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            cwd=self.work,
        )
        self.started.append(process)
        return process, log

    def stop_all(self) -> None:
        for process in reversed(self.started):
            _stop(process)


@dataclass(frozen=True)
class LiveApi:
    """One running API process."""

    base_url: str
    key_dir: Path
    issuer: str
    log: Path

    def token_for(self, user_id: str) -> str:
        """A dev-identity bearer token for the JSON API (``Authorization: Bearer ...``)."""
        provider = DevIdentityProvider.load(self.key_dir, self.issuer, "citykey-api")
        return provider.issue(user_id)

    def client(self, user_id: str) -> httpx.Client:
        """An HTTP client for the JSON API, signed in as ``user_id``."""
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.token_for(user_id)}"},
            timeout=15,
        )


async def seed_browser_extras(session: object) -> None:
    """Beyond the demo: a door on a gateway that never runs (refused: gateway offline) and a
    second building whose door Kari may open only from tomorrow (listed under "later")."""
    from sqlalchemy.ext.asyncio import AsyncSession

    assert isinstance(session, AsyncSession)
    session.add(Gateway(id=OFFLINE_GATEWAY_ID, name="Gateway (unplugged)", building_id=BUILDING_ID))
    session.add(
        Building(
            id=LATER_BUILDING_ID, name="Tøyen school", owner_id=OWNER_ID, timezone="Europe/Oslo"
        )
    )
    await session.flush()
    session.add_all(
        [
            Door(
                id=OFFLINE_DOOR_ID,
                name="Bike storage",
                building_id=BUILDING_ID,
                gateway_id=OFFLINE_GATEWAY_ID,
                channel=1,
                default_unlock_seconds=5,
            ),
            Door(
                id=LATER_DOOR_ID,
                name="Gym",
                building_id=LATER_BUILDING_ID,
                gateway_id=OFFLINE_GATEWAY_ID,
                channel=2,
                default_unlock_seconds=5,
            ),
        ]
    )
    await session.flush()
    tomorrow = datetime.now(UTC).replace(hour=16, minute=0, second=0, microsecond=0)
    session.add(
        Grant(
            id="grt_browser_kari_gym",
            user_id=CITIZEN_ID,
            door_id=LATER_DOOR_ID,
            valid_from=tomorrow + timedelta(days=1),
            valid_until=tomorrow + timedelta(days=1, hours=4),
            created_by=MANAGER_ID,
        )
    )


@pytest.fixture(scope="package")
def browser_database_url() -> Iterator[str]:
    """A fresh, migrated, seeded PostgreSQL database for the browser tests."""
    parts = urlsplit(PG_ADMIN_URL)
    name = f"citykey_browser_{os.getpid()}_{secrets.token_hex(3)}"

    async def admin(sql: str) -> None:
        connection = await asyncpg.connect(PG_ADMIN_URL, timeout=10)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    try:
        run_async(admin(f'CREATE DATABASE "{name}"'))
    except OSError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL} ({exc}); see README")
    url = f"postgresql+asyncpg://{parts.netloc}/{name}"
    upgrade(url)

    async def seed() -> None:
        engine = create_engine(Settings(database_url=url))
        try:
            async for session in session_scope(session_factory(engine)):
                await seed_demo(session)
                await seed_browser_extras(session)
        finally:
            await engine.dispose()

    run_async(seed())
    yield url
    run_async(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="package")
def _processes() -> Iterator[_Processes]:
    work = Path(tempfile.mkdtemp(prefix="citykey-browser-"))
    processes = _Processes(work)
    yield processes
    processes.stop_all()
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="package")
def private_broker_url(_processes: _Processes) -> str:
    """A Mosquitto of our own on a free loopback port."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        pytest.fail("mosquitto is not installed (apt-get install mosquitto)", pytrace=False)
    port = _free_port()
    config = _processes.work / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "set_tcp_nodelay true\n"
    )
    process, log = _processes.spawn("mosquitto", [binary, "-c", str(config)])
    _wait_for_port(port, process, "mosquitto", log)
    return f"mqtt://127.0.0.1:{port}"


@pytest.fixture(scope="package")
def start_api(
    _processes: _Processes, browser_database_url: str, private_broker_url: str
) -> Callable[[Mapping[str, str]], LiveApi]:
    """A factory: ``start_api(extra_env)`` -> a running API process (cached per env)."""
    key_dir = _processes.work / "keys"
    started: dict[tuple[tuple[str, str], ...], LiveApi] = {}

    def start(extra_env: Mapping[str, str]) -> LiveApi:
        cache_key = tuple(sorted(extra_env.items()))
        if cache_key in started:
            return started[cache_key]
        port = _free_port()
        base_url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "CITYKEY_MODE": "dev",
            "CITYKEY_DATABASE_URL": browser_database_url,
            "CITYKEY_MQTT_URL": private_broker_url,
            "CITYKEY_KEY_DIR": str(key_dir),
            "CITYKEY_ISSUER": base_url,
            "CITYKEY_INSTANCE_ID": f"api-browser-{len(started)}-{secrets.token_hex(3)}",
            "CITYKEY_UNLOCK_TIMEOUT_S": "5",
            "CITYKEY_DB_CONNECT_TIMEOUT_S": "3",
            "CITYKEY_DB_POOL_TIMEOUT_S": "3",
            "CITYKEY_DB_PING_TIMEOUT_S": "2",
            **extra_env,
        }
        argv = [str(BIN / "citykey"), "serve", "--port", str(port), "--no-access-log"]
        process, log = _processes.spawn(f"api-{port}", argv, env)
        _wait_for_port(port, process, "the API", log)
        _wait_ready(base_url, process, log)
        api = LiveApi(base_url=base_url, key_dir=key_dir, issuer=base_url, log=log)
        started[cache_key] = api
        return api

    return start


def _wait_ready(base_url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    last = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the API exited:\n{_tail(log)}", pytrace=False)
        try:
            response = httpx.get(f"{base_url}/readyz", timeout=2)
            if response.status_code == 200:
                return
            last = response.text
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.1)
    pytest.fail(f"the API was not ready in {START_TIMEOUT_S} s ({last}):\n{_tail(log)}")


@pytest.fixture(scope="package")
def live_api(
    start_api: Callable[[Mapping[str, str]], LiveApi],
    _processes: _Processes,
    private_broker_url: str,
) -> LiveApi:
    """The API every browser test uses, with the simulated demo fleet connected."""
    api = start_api({})
    argv = [
        str(BIN / "citykey-sim"),
        "--mqtt-url",
        private_broker_url,
        "--issuer",
        api.issuer,
        "--jwks-url",
        f"{api.base_url}/.well-known/jwks.json",
        "--key-cache",
        str(_processes.work / "sim-jwks.json"),
        "--prefix",
        DEMO_LAYOUT.prefix,
        "--gateways",
        str(DEMO_LAYOUT.gateways),
        "--doors",
        str(DEMO_LAYOUT.doors_per_gateway),
        "--report-state",  # batteries and door contacts on the console, as in `make demo`
    ]
    fleet, log = _processes.spawn("fleet", argv)
    _wait_gateways_online(api, fleet, log)
    return api


def _wait_gateways_online(api: LiveApi, fleet: subprocess.Popen[bytes], log: Path) -> None:
    from api.demo import ADMIN_ID

    deadline = time.monotonic() + START_TIMEOUT_S
    waiting = set(ONLINE_GATEWAY_IDS)
    with api.client(ADMIN_ID) as client:
        while waiting and time.monotonic() < deadline:
            if fleet.poll() is not None:
                pytest.fail(f"citykey-sim exited:\n{_tail(log)}", pytrace=False)
            for gateway_id in sorted(waiting):
                response = client.get(f"/v1/gateways/{gateway_id}")
                if response.status_code == 200 and response.json()["online"]:
                    waiting.discard(gateway_id)
            time.sleep(0.1)
    if waiting:
        pytest.fail(f"gateways {sorted(waiting)} did not come online:\n{_tail(log)}")


@pytest.fixture(scope="package")
def base_url(live_api: LiveApi) -> str:
    """Origin of the running web app."""
    return live_api.base_url


@pytest.fixture(scope="package")
def playwright_instance() -> Iterator[Playwright]:
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="package")
def browser(playwright_instance: Playwright) -> Iterator[Browser]:
    """Debian's Chromium, headless. Playwright's own browser download is not used."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's Chromium "
            "(as root: apt-get install -y chromium fonts-dejavu-core; `make test` does it)",
            pytrace=False,
        )
    browser = playwright_instance.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
    )
    yield browser
    browser.close()


def _new_page(
    browser: Browser, base_url: str, viewport: dict[str, int], *, javascript: bool = True
) -> Iterator[Page]:
    context = browser.new_context(
        java_script_enabled=javascript,
        base_url=base_url,
        viewport=viewport,  # type: ignore[arg-type]
        locale="en-GB",
        timezone_id="Europe/Oslo",
        reduced_motion="reduce",
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def page(base_url: str, browser: Browser) -> Iterator[Page]:
    """A fresh browser context (no cookies) with a phone-sized viewport."""
    yield from _new_page(browser, base_url, PHONE_VIEWPORT)


@pytest.fixture
def page_no_js(base_url: str, browser: Browser) -> Iterator[Page]:
    """A phone-sized page with JavaScript off: every action must work as a plain form."""
    yield from _new_page(browser, base_url, PHONE_VIEWPORT, javascript=False)


@pytest.fixture
def desktop_page(base_url: str, browser: Browser) -> Iterator[Page]:
    """A fresh browser context with a desktop viewport (the manager console)."""
    yield from _new_page(browser, base_url, DESKTOP_VIEWPORT)


def sign_in_dev(page: Page, user_id: str, next_path: str = "/app") -> None:
    """Sign in through the development identity provider's page (one button per user)."""
    page.goto(f"/app/login?next={next_path}")
    with page.expect_navigation():
        page.locator(f'button[data-user="{user_id}"]').click()


def screenshot(page: Page, name: str) -> Path:
    """Save the viewport (never the full page: small PNGs) as docs/img/``name``.png."""
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / f"{name.removesuffix('.png')}.png"
    page.screenshot(path=str(path), full_page=False, animations="disabled", caret="hide")
    return path


__all__ = [
    "LATER_DOOR_ID",
    "OFFLINE_DOOR_ID",
    "ONLINE_DOOR_IDS",
    "LiveApi",
    "run_async",
    "screenshot",
    "sign_in_dev",
]
