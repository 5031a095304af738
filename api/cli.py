"""The ``citykey`` command: serve, migrate, keys, demo."""

import asyncio
import contextlib
import logging
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from api.settings import Settings

app = typer.Typer(
    help="citykey: open doors of public buildings from a phone.", no_args_is_help=True
)
keys_app = typer.Typer(help="Manage the unlock-token signing keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    access_log: Annotated[bool, typer.Option(help="Log every request")] = True,
) -> None:
    """Run the API server (settings from CITYKEY_* environment variables)."""
    Settings()  # validate before binding a port: a bad setting fails here, loudly
    uvicorn.run(
        "api.main:create_app",
        factory=True,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="info",
        access_log=access_log,
    )


@app.command()
def migrate() -> None:
    """Bring the database (CITYKEY_DATABASE_URL) to the newest schema."""
    from api.migrate import upgrade

    upgrade(Settings().database_url)
    typer.echo("database is at the newest schema")


@keys_app.command("init")
def keys_init() -> None:
    """Create the key ring with one active signing key in CITYKEY_KEY_DIR."""
    from api.keys.keyring import KeyRing

    settings = Settings()
    ring = KeyRing.initialize(settings.key_dir)
    typer.echo(f"created key ring in {settings.key_dir} with active key {ring.active.kid}")


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="HTTP port of the API")] = 8000,
    gateways: Annotated[int, typer.Option(help="Simulated gateways")] = 2,
    doors: Annotated[int, typer.Option(help="Doors per gateway")] = 2,
    broker_port: Annotated[int, typer.Option(help="Port of the embedded MQTT broker")] = 1884,
    data_dir: Annotated[Path, typer.Option(help="Where the demo keeps its files")] = Path(
        "var/demo"
    ),
) -> None:
    """API + embedded broker + SQLite + simulated gateways, ready to unlock a door."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_demo(port, broker_port, gateways, doors, data_dir))
    typer.echo("demo stopped")


async def _demo(port: int, broker_port: int, gateways: int, doors: int, data_dir: Path) -> None:
    from api.db import create_engine, session_factory, session_scope
    from api.demo import CITIZEN_ID, seed_demo
    from api.identity.dev_provider import DevIdentityProvider
    from api.main import create_app
    from api.migrate import upgrade
    from citykey_protocol.transport import BrokerAddress
    from firmware_sim.fleet import Fleet, FleetLayout
    from lock_gateway.config import GatewayConfig
    from lock_gateway.keys import KeySet, fetch_jwks

    # A fresh database each run, so the demo always starts from the same story; keys persist.
    db_dir = data_dir / "db"
    shutil.rmtree(db_dir, ignore_errors=True)
    db_dir.mkdir(parents=True)
    base_url = f"http://127.0.0.1:{port}"
    settings = Settings(
        mode="dev",
        database_url=f"sqlite+aiosqlite:///{db_dir / 'citykey.db'}",
        mqtt_url="embedded",
        embedded_broker_port=broker_port,
        key_dir=data_dir / "keys",
        issuer=base_url,
    )
    await asyncio.to_thread(upgrade, settings.database_url)
    layout = FleetLayout("demo-gw", gateways, doors)
    engine = create_engine(settings)
    async for session in session_scope(session_factory(engine)):
        data = await seed_demo(session, layout)
    await engine.dispose()

    server = _QuietServer(
        uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=port, log_level="warning", loop="asyncio"
        )
    )
    server_task = asyncio.create_task(server.serve())
    while not server.started:
        if server_task.done():
            raise typer.Exit(1)  # port taken or start-up failed; uvicorn said why
        await asyncio.sleep(0.05)

    jwks = await asyncio.to_thread(fetch_jwks, f"{base_url}/.well-known/jwks.json")
    template = GatewayConfig(
        gateway_id="template",
        broker=BrokerAddress("127.0.0.1", settings.embedded_broker_port),
        issuer=settings.issuer,
        doors={},
        jwks_url=f"{base_url}/.well-known/jwks.json",
    )
    fleet = Fleet(layout, template, KeySet.from_jwks(jwks))
    await fleet.start()

    token = DevIdentityProvider.load(
        settings.key_dir, settings.issuer, settings.identity_audience
    ).issue(CITIZEN_ID)
    door = data.door_ids[0]
    typer.echo(
        "\n".join(
            [
                "",
                f"citykey demo is up: {gateways} simulated gateways, {len(data.door_ids)} doors.",
                f"  API docs (OpenAPI):  {base_url}/docs",
                f"  JWKS:                {base_url}/.well-known/jwks.json",
                f"  Doors: {', '.join(data.door_ids)}",
                "",
                "Open a door as the citizen Kari Nordmann:",
                "",
                f"  curl -s -X POST {base_url}/v1/doors/{door}/unlock \\",
                f"       -H 'Authorization: Bearer {token}'",
                "",
                "Press Ctrl-C to stop.",
            ]
        )
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    typer.echo("stopping ...")
    await fleet.stop()
    server.should_exit = True
    await server_task


class _QuietServer(uvicorn.Server):
    """uvicorn's Server without its own signal handling (the demo stops everything itself)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
