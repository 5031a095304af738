"""Fleet-scale benchmark: 2,000 simulated gateways x 5 doors against one API.

Starts, as separate processes: a private mosquitto (persistence on, so retained messages
survive its restart), the API (``citykey serve``) on a fresh PostgreSQL database seeded with
the fleet, and ``citykey-sim --processes N`` (every gateway runs the real lock_gateway daemon
with its own broker session). Then measures, each with a bounded timeout:

  1. connect: sim start -> every gateway online in the API's view (gateways.online and a
     last_seen after the start, as the API's status tracker wrote them to PostgreSQL);
  2. idle: the API's CPU % and RSS (and mosquitto's, and the fleet's per gateway) over
     ``--idle`` seconds with the fleet connected and heartbeating;
  3. broker restart: mosquitto stopped by PID and started again on the same port -> every
     gateway online again in the API's view (a last_seen after the restart);
  4. key set: ``citykey keys add-next`` done in-process on the API's key directory (the API's
     KeyRingWatcher notices it and publishes the signed set, retained) -> every gateway
     holds the new ``keyset_version`` (the sim's own report of its gateways);
  5. revocations: one revoked offline token per gateway written to PostgreSQL (as a grant
     revocation does) -> the API's background pass publishes 2,000 signed lists -> every
     gateway holds a list (the sim's report).

Run: .venv/bin/python bench/fleet.py [--gateways 2000] [--doors 5] [--sim-processes 4]
     [--idle 30]        (about 2-4 minutes on 2 cores)
"""

import argparse
import asyncio
import inspect
import json
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import asyncpg
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.db import create_engine, session_factory, session_scope
from api.demo import CITIZEN_ID, seed_demo
from api.keys.keyring import KeyRing, add_next
from api.migrate import upgrade
from api.settings import Settings
from bench.common import (
    api_environment,
    asyncpg_url,
    create_database,
    drop_database,
    free_port,
    sim_command,
    sqlalchemy_url,
    wait_for_port,
)
from firmware_sim.fleet import FleetLayout


def raise_fd_limit() -> int:
    """Soft open-files limit up to the hard one (inherited by the broker, API and sim)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 65536 if hard == resource.RLIM_INFINITY else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


class PersistentMosquitto:
    """A private mosquitto that keeps retained messages across a restart on the same port."""

    def __init__(self) -> None:
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="citykey-fleet-mqtt-"))
        self.config = self.dir / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "max_connections -1\n"
            "persistence true\n"
            f"persistence_location {self.dir}/\n"
            "autosave_interval 3600\n"  # saved on a clean stop (SIGTERM), which is what we do
            "set_tcp_nodelay true\n"
            "max_inflight_messages 0\n"
            "max_queued_messages 100000\n"
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, 15)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class SimReports:
    """The latest JSON report line of every sim shard, read from its stdout in a thread."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.latest: dict[str, dict[str, object]] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict) and "shard" in line:
                with self._lock:
                    self.latest[str(line["shard"])] = line

    def total(self, predicate: Callable[[dict[str, object]], int]) -> int:
        with self._lock:
            return sum(predicate(line) for line in self.latest.values())


def count_versions_at_least(field: str, floor: int) -> Callable[[dict[str, object]], int]:
    def count(line: dict[str, object]) -> int:
        versions = line.get(field)
        assert isinstance(versions, dict)
        return sum(n for ver, n in versions.items() if int(ver) >= floor)

    return count


async def wait_until(
    what: str, probe: Callable[[], Awaitable[int] | int], target: int, timeout: float
) -> float | None:
    """Seconds until ``probe()`` reaches ``target`` (polled every 0.1 s); None on timeout."""
    started = time.monotonic()
    count = -1
    while time.monotonic() - started < timeout:
        value = probe()
        count = await value if inspect.isawaitable(value) else value
        if count >= target:
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    print(f"  TIMEOUT: {what}: {count}/{target} after {timeout:.0f}s")
    return None


def as_int(value: object) -> int:
    return int(value) if isinstance(value, int | str) else 0


def log_file(path: Path) -> IO[bytes]:
    """A child's log (the child holds it open; the OS closes it when the child ends)."""
    return path.open("wb")


def fmt(seconds: float | None) -> str:
    return "TIMEOUT" if seconds is None else f"{seconds:.1f}s"


def sample_usage(
    processes: dict[str, list[psutil.Process]], seconds: float
) -> dict[str, tuple[float, float]]:
    """CPU % (of one core) over ``seconds`` and RSS MiB at the end, summed per group."""
    for group in processes.values():
        for proc in group:
            proc.cpu_percent(None)
    time.sleep(seconds)
    usage: dict[str, tuple[float, float]] = {}
    for name, group in processes.items():
        cpu = sum(p.cpu_percent(None) for p in group)
        rss = sum(p.memory_info().rss for p in group) / 2**20
        usage[name] = (cpu, rss)
    return usage


def process_tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


async def seed(url: str, layout: FleetLayout) -> None:
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(Settings(database_url=url))
    async for session in session_scope(session_factory(engine)):
        await seed_demo(session, layout)
    await engine.dispose()


async def revoke_one_token_per_gateway(pg: asyncpg.Connection, layout: FleetLayout) -> None:
    """What revoking a citizen's offline tokens writes: one revoked, unexpired token per
    gateway (the API's background pass turns them into signed lists)."""
    now = datetime.now(UTC)
    rows = [
        (
            f"bench-{secrets.token_hex(8)}",
            CITIZEN_ID,
            next(iter(doors)),
            gid,
            "bench-thumbprint",
            now,
            now + timedelta(hours=1),
            now,
        )
        for gid, doors in layout
    ]
    await pg.executemany(
        "INSERT INTO offline_tokens (jti, user_id, door_id, gateway_id, key_thumbprint, "
        "issued_at, expires_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        rows,
    )


def stop_by_pid(process: subprocess.Popen[bytes], timeout: float = 40.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, default=2000)
    parser.add_argument("--doors", type=int, default=5)
    parser.add_argument("--sim-processes", type=int, default=4)
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle sampling")
    parser.add_argument("--timeout", type=float, default=120.0, help="per phase, seconds")
    args = parser.parse_args()
    layout = FleetLayout("fleet-gw", gateways=args.gateways, doors_per_gateway=args.doors)
    fds = raise_fd_limit()

    work = Path(tempfile.mkdtemp(prefix="citykey-fleet-"))
    db_name = await create_database("citykey_fleet")
    database_url = sqlalchemy_url(db_name)
    mosquitto = PersistentMosquitto()
    api: subprocess.Popen[bytes] | None = None
    sim: subprocess.Popen[bytes] | None = None
    pg: asyncpg.Connection | None = None
    try:
        t0 = time.monotonic()
        await seed(database_url, layout)
        print(
            f"citykey fleet benchmark ({os.cpu_count()} cores, Python {sys.version.split()[0]},"
            f" open files {fds}): {layout.gateways} gateways x {layout.doors_per_gateway} doors"
            f" in {args.sim_processes} sim processes; seeded in {time.monotonic() - t0:.1f}s"
        )
        pg = await asyncpg.connect(asyncpg_url(db_name))
        key_dir = work / "keys"
        KeyRing.initialize(key_dir)
        port = free_port()
        issuer = f"http://127.0.0.1:{port}"
        env = api_environment(database_url, mosquitto.url, key_dir, issuer)
        bin_dir = Path(sys.executable).parent
        api = subprocess.Popen(
            [str(bin_dir / "citykey"), "serve", "--port", str(port), "--no-access-log"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log_file(work / "api.log"),
        )
        wait_for_port(port, 30)

        async def online_since(moment: datetime) -> int:
            assert pg is not None
            value = await pg.fetchval(
                "SELECT count(*) FROM gateways WHERE online AND last_seen > $1", moment
            )
            return int(value)

        # 1. connect
        started_at = datetime.now(UTC) - timedelta(seconds=1)
        sim = subprocess.Popen(
            sim_command(
                bin_dir,
                mosquitto.url,
                issuer,
                work,
                prefix=layout.prefix,
                gateways=layout.gateways,
                doors=layout.doors_per_gateway,
                extra=[
                    *("--processes", str(args.sim_processes)),
                    # The broker's retained copy only: what is measured.
                    *("--keyset-poll", "0"),
                    *("--report", "0.2"),
                ],
            ),
            stdout=subprocess.PIPE,
            stderr=log_file(work / "sim.log"),
        )  # fmt: skip
        reports = SimReports(sim)
        n = layout.gateways

        def sim_connected() -> int:
            return reports.total(lambda line: as_int(line["connected"]))

        took, sim_took = await asyncio.gather(
            wait_until(
                "fleet online in the API's view",
                lambda: online_since(started_at),
                n,
                args.timeout,
            ),
            wait_until("fleet connected (sim)", sim_connected, n, args.timeout),
        )
        print(
            f"connect       all {n} online in the API's view after {fmt(took)} (sim start ->"
            f" last status row); connected by the sim's own count after {fmt(sim_took)}"
            f" (ramp {n / 400:.1f}s, interpreter start-up included)"
        )

        # Each gateway's journal starts with one event (journal_started): idle means stored.
        async def events_stored() -> int:
            assert pg is not None
            return int(await pg.fetchval("SELECT count(DISTINCT gateway_id) FROM gateway_events"))

        stored = await wait_until("first events stored", events_stored, n, args.timeout)
        print(f"              every gateway's first journal event stored {fmt(stored)} after that")

        # 2. idle
        await asyncio.sleep(3)  # let the last acknowledgements and door states settle
        groups = {
            "api": process_tree(api.pid),
            "mosquitto": [psutil.Process(mosquitto.process.pid)],  # type: ignore[union-attr]
            "sim": process_tree(sim.pid),
        }
        usage = await asyncio.to_thread(sample_usage, groups, args.idle)
        api_cpu, api_rss = usage["api"]
        mq_cpu, mq_rss = usage["mosquitto"]
        sim_cpu, sim_rss = usage["sim"]
        print(
            f"idle {args.idle:.0f}s     api  CPU {api_cpu:5.1f}% of a core  RSS {api_rss:6.1f} MiB"
        )
        print(
            f"              mosquitto CPU {mq_cpu:5.1f}%  RSS {mq_rss:6.1f} MiB "
            f"({mq_rss * 1024 / n:.1f} KiB per connected gateway, baseline included)"
        )
        print(
            f"              sim  CPU {sim_cpu:5.1f}%  RSS {sim_rss:6.1f} MiB "
            f"({sim_rss * 1024 / n:.0f} KiB per simulated gateway)"
        )

        # 3. broker restart
        mosquitto.stop()
        await asyncio.sleep(1.0)
        restarted_at = datetime.now(UTC)
        t_restart = time.monotonic()
        mosquitto.start()
        down = sim_connected()
        took, sim_took = await asyncio.gather(
            wait_until(
                "fleet back online after the broker restart",
                lambda: online_since(restarted_at),
                n,
                args.timeout,
            ),
            wait_until("fleet reconnected (sim)", sim_connected, n, args.timeout),
        )
        startup = time.monotonic() - t_restart - (took or 0.0)
        del startup
        print(
            f"broker restart all {n} online again in the API's view {fmt(took)} after"
            f" mosquitto was started again; reconnected by the sim's count after {fmt(sim_took)}"
            f" (down 1.0s, {down} still counted connected then; gateways back off 0.2 s"
            " doubling to 10 s, jittered)"
        )

        # 4. key set
        await wait_until(
            "sim connected",
            lambda: reports.total(lambda ln: as_int(ln["connected"])),
            n,
            60,
        )
        before = max(
            int(v)
            for line in list(reports.latest.values())
            for v in line["keyset_versions"]  # type: ignore[attr-defined]
        )
        t_keys = time.monotonic()
        await asyncio.to_thread(add_next, key_dir)
        took = await wait_until(
            "new key set on every gateway",
            lambda: reports.total(count_versions_at_least("keyset_versions", before + 1)),
            n,
            args.timeout,
        )
        print(
            f"key set       v{before} -> v{before + 1} held by all {n} gateways "
            f"{fmt(took)} after `keys add-next` "
            f"(watcher notices within ~1 s; sim report every 0.2 s)"
        )
        del t_keys

        # 5. revocations
        await revoke_one_token_per_gateway(pg, layout)
        took = await wait_until(
            "revocation list on every gateway",
            lambda: reports.total(count_versions_at_least("revocation_versions", 1)),
            n,
            args.timeout,
        )
        print(
            f"revocations   a list on all {n} gateways "
            f"{fmt(took)} after the revoked rows were committed"
            f" (API background pass every 5 s, one transaction + publish per gateway, 4 at a time)"
        )
        print(f"logs: {work}")
    finally:
        if sim is not None:
            stop_by_pid(sim)
        if api is not None:
            stop_by_pid(api, 15)
        mosquitto.close()
        if pg is not None:
            await pg.close()
        await drop_database(db_name)


if __name__ == "__main__":
    asyncio.run(main())
