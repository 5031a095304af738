"""The ``citykey`` command: serve, migrate, keys, demo."""

import asyncio
import contextlib
import logging
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn

from api.settings import Settings

app = typer.Typer(
    help="citykey: open doors of public buildings from a phone.", no_args_is_help=True
)
keys_app = typer.Typer(help="Manage the unlock-token signing keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
audit_app = typer.Typer(help="Check the tamper-evident audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(
    batch: Annotated[int, typer.Option(min=1, max=100_000, help="Records per query")] = 1000,
    anchor: Annotated[
        list[str] | None,
        typer.Option(help="ID:HASH of a head printed earlier; the record must be unchanged"),
    ] = None,
) -> None:
    """Walk the audit hash chain (CITYKEY_DATABASE_URL) in id order; exit 1 when it is broken,
    naming the first broken record."""
    from api.audit.chain import parse_anchor, report, verify_database

    try:
        anchors = [parse_anchor(value) for value in anchor or []]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--anchor") from None
    result = asyncio.run(verify_database(Settings().database_url, batch=batch, anchors=anchors))
    for line in report(result):
        typer.echo(line)
    if not result.intact:
        raise typer.Exit(1)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    access_log: Annotated[bool, typer.Option(help="Log every request")] = True,
    migrate_first: Annotated[
        bool, typer.Option("--migrate", help="Bring the database to the newest schema first")
    ] = False,
) -> None:
    """Run the API server (settings from CITYKEY_* environment variables)."""
    from api.migrate import current_revision, newest_revision, upgrade

    settings = Settings()  # validate before binding a port: a bad setting fails here, loudly
    if settings.is_sqlite:
        # SQLite creates the file, not its folder.
        _sqlite_folder(settings.database_url).mkdir(parents=True, exist_ok=True)
    if migrate_first:
        upgrade(settings.database_url)
    # A server on an old or empty schema would fail on every request; say so once, up front.
    at, newest = asyncio.run(current_revision(settings.database_url)), newest_revision()
    if at != newest:
        typer.echo(
            f"the database is at schema {at or '(empty)'}, this code needs {newest}: "
            "run `citykey migrate` (or `citykey serve --migrate`)",
            err=True,
        )
        raise typer.Exit(2)
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


def _sqlite_folder(database_url: str) -> Path:
    """The folder of a sqlite+aiosqlite:///path URL's file."""
    path = database_url.split(":///", 1)[-1].split("?", 1)[0]
    return Path(path).parent


@app.command()
def migrate() -> None:
    """Bring the database (CITYKEY_DATABASE_URL) to the newest schema."""
    from api.migrate import upgrade

    settings = Settings()
    if settings.is_sqlite:
        _sqlite_folder(settings.database_url).mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    typer.echo("database is at the newest schema")


@keys_app.command("init")
def keys_init() -> None:
    """Create the key ring with one active signing key in CITYKEY_KEY_DIR."""
    from api.keys.keyring import KeyRing

    settings = Settings()
    ring = KeyRing.initialize(settings.key_dir)
    typer.echo(f"created key ring in {settings.key_dir} with active key {ring.active.kid}")


# Key rotation (docs/operations.md, "Rotating the signing keys"); the steps live in
# api/keys/rotation.py. Running APIs notice a ring change within a second (or on SIGHUP).
_Force = Annotated[
    bool, typer.Option("--force", help="Skip the check of what the gateways acknowledged")
]
_Lifetime = Annotated[
    float | None,
    typer.Option(help="Longest life of a token the key signed, s (default: from the settings)"),
]


def _longest_token_life(settings: Settings) -> float:
    """The longest a token signed by the ring can live: unlock tokens and offline tokens."""
    return float(max(settings.token_lifetime_s, settings.offline_token_lifetime_s))


def _keys_step(step: Any) -> None:
    from api.keys.fleet import FleetUnavailableError
    from api.keys.keyring import KeyRingError

    try:
        asyncio.run(step)
    except (KeyRingError, FleetUnavailableError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _fleet_check(settings: Settings, force: bool, wait_s: float) -> Any:
    from api.keys.rotation import FleetCheck

    return None if force else FleetCheck(settings.broker, wait_s=wait_s)


@keys_app.command("status")
def keys_status(
    fleet: Annotated[bool, typer.Option(help="Also ask the broker which set gateways hold")] = True,
) -> None:
    """Show the key ring (states, when each key may retire) and the gateways' key sets."""
    from api.keys.fleet import FleetUnavailableError, describe, fleet_snapshot
    from api.keys.rotation import ring_report

    settings = Settings()

    async def show() -> None:
        typer.echo(ring_report(settings.key_dir, _longest_token_life(settings)))
        if not fleet:
            return
        try:
            snapshot = await fleet_snapshot(settings.broker)
        except FleetUnavailableError as exc:
            typer.echo(f"gateways: unknown ({exc})")
            return
        members = sorted(snapshot.values(), key=lambda m: m.gateway_id)
        typer.echo(f"gateways: {describe(members, limit=200) or 'none known'}")

    _keys_step(show())


@keys_app.command("add-next")
def keys_add_next() -> None:
    """Add a new key as next: published to gateways from now on, signing nothing yet."""
    from api.keys.keyring import add_next

    async def step() -> None:
        entry = add_next(Settings().key_dir)
        typer.echo(f"key {entry.kid} added as next (key set v{entry.published_generation})")

    _keys_step(step())


@keys_app.command("activate")
def keys_activate(
    force: _Force = False,
    wait: Annotated[float, typer.Option(help="Wait up to this many s for gateways")] = 0.0,
) -> None:
    """Make the next key active (the old one retiring) once the online gateways trust it."""
    from api.keys.rotation import activate_checked

    settings = Settings()
    _keys_step(activate_checked(settings.key_dir, _fleet_check(settings, force, wait), typer.echo))


@keys_app.command("retire")
def keys_retire(
    force: _Force = False,
    wait: Annotated[float, typer.Option(help="Wait up to this many s for gateways")] = 0.0,
    max_token_lifetime: _Lifetime = None,
) -> None:
    """Retire the retiring keys whose last token has expired, once every gateway trusts
    their successors."""
    from api.keys.rotation import retire_checked

    settings = Settings()
    lifetime = max_token_lifetime or _longest_token_life(settings)
    _keys_step(
        retire_checked(
            settings.key_dir,
            _fleet_check(settings, force, wait),
            typer.echo,
            max_token_lifetime_s=lifetime,
        )
    )


@keys_app.command("rotate")
def keys_rotate(
    publish_timeout: Annotated[
        float, typer.Option(help="Wait up to this many s for gateways to trust the next key")
    ] = 300.0,
    retire: Annotated[
        bool, typer.Option(help="Then wait for the old key's last token and retire it")
    ] = True,
    retire_timeout: Annotated[
        float, typer.Option(help="Wait up to this many s for every gateway before retiring")
    ] = 600.0,
    force: _Force = False,
    max_token_lifetime: _Lifetime = None,
) -> None:
    """add-next, activate once the gateways trust the new key, then retire the old key."""
    from api.keys.rotation import rotate

    settings = Settings()
    _keys_step(
        rotate(
            settings.key_dir,
            typer.echo,
            publish_check=_fleet_check(settings, force, publish_timeout),
            retire_check=_fleet_check(settings, force, retire_timeout),
            retire_keys=retire,
            max_token_lifetime_s=max_token_lifetime or _longest_token_life(settings),
        )
    )


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
    fleet.report_state()  # the console shows bolts, door contacts and batteries at once

    token = DevIdentityProvider.load(
        settings.key_dir, settings.issuer, settings.identity_audience
    ).issue(CITIZEN_ID)
    door = data.door_ids[0]
    typer.echo(
        "\n".join(
            [
                "",
                f"citykey demo is up: {gateways} simulated gateways, {len(data.door_ids)} doors.",
                "",
                f"Open {base_url}/app in a browser (a phone-sized window is the design target):",
                "  sign in as Kari Nordmann and press Open on a door;",
                "  sign in as Ingrid Manager to grant Ola Nordmann access in the console",
                f"  ({base_url}/console), then sign in as Ola and open the door.",
                "",
                f"  API docs (OpenAPI):  {base_url}/docs",
                f"  JWKS:                {base_url}/.well-known/jwks.json",
                f"  Doors: {', '.join(data.door_ids)}",
                "",
                "Or open a door as Kari Nordmann with the JSON API:",
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
