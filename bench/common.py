"""Helpers shared by the benchmarks: statistics, free ports, a private Mosquitto, a fresh
PostgreSQL database, the API's environment and the simulated fleet's command line."""

import os
import secrets
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import asyncpg

PG_ADMIN = os.environ.get("CITYKEY_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
PG_BASE = os.environ.get("CITYKEY_BENCH_PG_URL", "postgres@127.0.0.1:5432")


async def create_database(prefix: str) -> str:
    """A new, empty database named ``<prefix>_<random>``; its name."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return name


async def drop_database(name: str) -> None:
    """Drop the bench's database, whoever is still connected."""
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def sqlalchemy_url(name: str) -> str:
    """The API's CITYKEY_DATABASE_URL for database ``name``."""
    return f"postgresql+asyncpg://{PG_BASE}/{name}"


def asyncpg_url(name: str) -> str:
    """A plain asyncpg DSN for database ``name`` (the bench's own queries)."""
    return f"postgresql://{PG_BASE}/{name}"


def api_environment(
    database_url: str, mqtt_url: str, key_dir: Path, issuer: str, **extra: str
) -> dict[str, str]:
    """Environment of a ``citykey serve`` process: this one's, plus the bench's settings
    (``extra`` maps CITYKEY_* names to values)."""
    return {
        **os.environ,
        "CITYKEY_DATABASE_URL": database_url,
        "CITYKEY_MQTT_URL": mqtt_url,
        "CITYKEY_KEY_DIR": str(key_dir),
        "CITYKEY_ISSUER": issuer,
        **extra,
    }


def sim_command(
    bin_dir: Path,
    mqtt_url: str,
    issuer: str,
    work: Path,
    *,
    prefix: str,
    gateways: int,
    doors: int,
    extra: Sequence[str] = (),
) -> list[str]:
    """The ``citykey-sim`` command line of a bench fleet that trusts ``issuer``'s keys."""
    return [
        str(bin_dir / "citykey-sim"),
        *("--mqtt-url", mqtt_url),
        *("--issuer", issuer),
        *("--jwks-url", f"{issuer}/.well-known/jwks.json"),
        *("--key-cache", str(work / "sim-jwks.json")),
        *("--prefix", prefix),
        *("--gateways", str(gateways)),
        *("--doors", str(doors)),
        *extra,
    ]


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summary(values: Sequence[float]) -> str:
    """``p50 / p99 / max`` of millisecond values."""
    return (
        f"p50 {statistics.median(values):7.2f} ms  p99 {percentile(values, 0.99):7.2f} ms  "
        f"max {max(values):7.2f} ms  (n={len(values)})"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


class PrivateMosquitto:
    """A mosquitto on a free loopback port with TCP_NODELAY, stopped by its own PID."""

    def __init__(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="citykey-bench-mqtt-"))
        config = self._dir / "mosquitto.conf"
        config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "set_tcp_nodelay true\n"
            "max_inflight_messages 0\n"
            "max_queued_messages 100000\n"
        )
        self.process = subprocess.Popen(
            [binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        shutil.rmtree(self._dir, ignore_errors=True)
