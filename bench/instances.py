"""One vs two API instances: unlock throughput and latency against the same PostgreSQL and
Mosquitto (docs/performance.md, "Many API instances").

Starts a private mosquitto (TCP_NODELAY), a fresh PostgreSQL database seeded with a small
fleet, ``citykey-sim`` (real gateway daemons, zero actuation delay) and API processes
(``citykey serve``, each with its own CITYKEY_INSTANCE_ID, same key directory and issuer).
Phase 1 runs one API; phase 2 starts a second one and the load generator (closed loop,
``--concurrency`` clients in this process) spreads its requests over both. Each phase prints
unlocks/s, p50/p99, errors, and the CPU each process group used, and the run ends with the
ratio two/one. The load generator shares the machine: on 2 cores it and the second API compete
for the same CPU, so expect limited scaling; the CPU figures show where the time went.

Run: .venv/bin/python bench/instances.py [--seconds 15] [--concurrency 32]   (about 1.5 min)
"""

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import asyncpg
import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.db import create_engine, session_factory, session_scope
from api.demo import CITIZEN_ID, seed_demo
from api.identity.dev_provider import DevIdentityProvider
from api.keys.keyring import KeyRing
from api.migrate import upgrade
from api.settings import Settings
from bench.common import (
    PrivateMosquitto,
    api_environment,
    asyncpg_url,
    create_database,
    drop_database,
    free_port,
    sim_command,
    sqlalchemy_url,
    summary,
    wait_for_port,
)
from firmware_sim.fleet import FleetLayout

LAYOUT = FleetLayout("inst-gw", gateways=20, doors_per_gateway=5)


async def prepare_database(url: str) -> list[str]:
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(Settings(database_url=url))
    async for session in session_scope(session_factory(engine)):
        data = await seed_demo(session, LAYOUT)
    await engine.dispose()
    return data.door_ids


class Load:
    """A closed loop: ``workers`` clients, each sending its next unlock when the last one
    answered; client i talks to API ``i mod len(bases)``."""

    def __init__(self, bases: list[str], paths: list[str], headers: dict[str, str]) -> None:
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        self.clients = [
            httpx.AsyncClient(base_url=base, limits=limits, timeout=10) for base in bases
        ]
        self.paths = paths
        self.headers = headers

    async def run(self, workers: int, seconds: float) -> tuple[list[float], int, float]:
        samples: list[float] = []
        errors = 0
        deadline = time.perf_counter() + seconds

        async def worker(index: int) -> None:
            nonlocal errors
            client = self.clients[index % len(self.clients)]
            i = index
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                response = await client.post(self.paths[i % len(self.paths)], headers=self.headers)
                samples.append((time.perf_counter() - started) * 1000)
                errors += response.status_code != 200
                i += workers

        started = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(workers)))
        return samples, errors, len(samples) / (time.perf_counter() - started)

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def postgres_processes() -> list[psutil.Process]:
    """The PostgreSQL server's processes (read only: for their CPU time)."""
    found = []
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] in ("postgres", "postmaster"):
            found.append(proc)
    return found


def cpu_seconds(groups: dict[str, list[psutil.Process]]) -> dict[tuple[str, int], float]:
    """CPU seconds so far of every process, by (group, pid)."""
    totals: dict[tuple[str, int], float] = {}
    for name, procs in groups.items():
        for proc in procs:
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue  # ended (a PostgreSQL backend of another client, say)
            totals[(name, proc.pid)] = times.user + times.system
    return totals


def cpu_used(
    before: dict[tuple[str, int], float], after: dict[tuple[str, int], float], group: str
) -> float:
    """CPU seconds a group used between two snapshots (processes alive at both)."""
    return sum(after[key] - before[key] for key in after if key[0] == group and key in before)


async def sample_waits(pg: asyncpg.Connection, into: Counter[str]) -> None:
    """What this database's busy backends wait for, sampled every 50 ms until cancelled:
    a lock wait that dominates names the point that serializes unlocks."""
    while True:
        rows = await pg.fetch(
            "SELECT coalesce(wait_event_type || ':' || wait_event, 'cpu') AS w FROM "
            "pg_stat_activity WHERE datname = current_database() AND state = 'active' "
            "AND pid <> pg_backend_pid()"
        )
        into.update(row["w"] for row in rows)
        await asyncio.sleep(0.05)


async def measure(
    label: str,
    load: Load,
    groups: dict[str, list[psutil.Process]],
    workers: int,
    seconds: float,
    pg: asyncpg.Connection,
) -> float:
    await load.run(workers, 2.0)  # warm-up: connections, caches
    if "postgres" in groups:  # the backends the warm-up opened count too
        groups["postgres"] = postgres_processes()
    waits: Counter[str] = Counter()
    sampler = asyncio.create_task(sample_waits(pg, waits))
    before = cpu_seconds(groups)
    samples, errors, rate = await load.run(workers, seconds)
    after = cpu_seconds(groups)
    sampler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler
    print(f"{label:<14} {rate:7.0f} unlocks/s  {summary(samples)}  errors {errors}")
    total = sum(waits.values()) or 1
    top = ", ".join(f"{name} {100 * n / total:.0f}%" for name, n in waits.most_common(3))
    print(f"{'':14} busy PostgreSQL backends were in: {top or 'none sampled'}")
    cpu = "  ".join(
        f"{name} {100 * cpu_used(before, after, name) / seconds:4.0f}%" for name in groups
    )
    print(f"{'':14} CPU (% of one core): {cpu}")
    return rate


async def storage_per_unlock(url: str) -> None:
    """Rows and bytes (heap + indexes + TOAST) the unlocks of this run left in PostgreSQL, per
    unlock: the input of the city-wide sizing in docs/performance.md."""
    pg = await asyncpg.connect(url)
    try:
        unlocks = await pg.fetchval(
            "SELECT count(*) FROM audit_events WHERE action = 'unlock.requested'"
        )
        print(f"storage       {unlocks} audited unlock decisions in the database")
        for table in ("audit_events", "gateway_events"):
            rows = await pg.fetchval(f"SELECT count(*) FROM {table}")  # noqa: S608 - fixed names
            size = await pg.fetchval("SELECT pg_total_relation_size($1::regclass)", table)
            print(
                f"{'':14}{table:<15} {rows:8d} rows  {size / 2**20:7.1f} MiB  "
                f"{rows / max(1, unlocks):5.2f} rows/unlock  {size / max(1, rows):6.0f} B/row"
            )
    finally:
        await pg.close()


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="citykey-instances-"))
    db_name = await create_database("citykey_inst")
    database_url = sqlalchemy_url(db_name)
    mosquitto = PrivateMosquitto()
    processes: list[subprocess.Popen[bytes]] = []
    load: Load | None = None
    pg: asyncpg.Connection | None = None
    try:
        door_ids = await prepare_database(database_url)
        pg = await asyncpg.connect(asyncpg_url(db_name))
        key_dir = work / "keys"
        KeyRing.initialize(key_dir)
        ports = [free_port(), free_port()]
        issuer = f"http://127.0.0.1:{ports[0]}"  # one issuer for the service, whichever answers
        bin_dir = Path(sys.executable).parent

        def serve(index: int) -> subprocess.Popen[bytes]:
            env = api_environment(
                database_url,
                mosquitto.url,
                key_dir,
                issuer,
                CITYKEY_INSTANCE_ID=f"api-bench-{index + 1}",
                CITYKEY_UNLOCK_RATE_PER_MINUTE="0",  # the bench opens doors on purpose
            )
            process = subprocess.Popen(
                [str(bin_dir / "citykey"), "serve", "--port", str(ports[index]), "--no-access-log"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            processes.append(process)
            wait_for_port(ports[index], 30)
            return process

        first = serve(0)
        sim = subprocess.Popen(
            sim_command(
                bin_dir,
                mosquitto.url,
                issuer,
                work,
                prefix=LAYOUT.prefix,
                gateways=LAYOUT.gateways,
                doors=LAYOUT.doors_per_gateway,
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(sim)
        token = DevIdentityProvider.load(key_dir, issuer, "citykey-api").issue(CITIZEN_ID)
        headers = {"Authorization": f"Bearer {token}"}
        paths = [f"/v1/doors/{door}/unlock" for door in door_ids]

        async def ready(base: str) -> None:
            async with httpx.AsyncClient(base_url=base, timeout=10) as client:
                deadline = time.monotonic() + 60
                while True:
                    probes = [await client.post(p, headers=headers) for p in paths]
                    if all(r.status_code == 200 for r in probes):
                        return
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"fleet not ready at {base}: {probes[-1].text}")
                    await asyncio.sleep(0.2)

        bases = [f"http://127.0.0.1:{port}" for port in ports]
        await ready(bases[0])
        print(
            f"citykey instances benchmark ({os.cpu_count()} cores, Python "
            f"{sys.version.split()[0]}): {LAYOUT.gateways} gateways x "
            f"{LAYOUT.doors_per_gateway} doors, closed loop x{args.concurrency}, "
            f"{args.seconds:.0f}s per phase\n"
        )
        me = [psutil.Process()]
        groups = {
            "api-1": tree(first.pid),
            "loadgen": me,
            "sim": tree(sim.pid),
            "mosquitto": [psutil.Process(mosquitto.process.pid)],
            "postgres": postgres_processes(),
        }
        load = Load(bases[:1], paths, headers)
        # Baseline: one client, one instance. If x32 gives about 1 / its p50 per second,
        # something serializes unlocks (docs/performance.md, "Many API instances").
        await measure("one, 1 client", load, groups, 1, min(5.0, args.seconds), pg)
        one = await measure("one instance", load, groups, args.concurrency, args.seconds, pg)
        await load.close()

        second = serve(1)
        await ready(bases[1])
        groups = {"api-1": groups["api-1"], "api-2": tree(second.pid)} | {
            k: v for k, v in groups.items() if k != "api-1"
        }
        load = Load(bases, paths, headers)
        two = await measure("two instances", load, groups, args.concurrency, args.seconds, pg)
        print(f"\nscaling two/one: {two / one:.2f}x  (ideal 2.0x needs spare cores)")
        await asyncio.sleep(2.0)  # the last unlocks' events and relocks reach the database
        await storage_per_unlock(f"postgresql://postgres@127.0.0.1:5432/{db_name}")
    finally:
        if load is not None:
            await load.close()
        if pg is not None:
            await pg.close()
        for process in reversed(processes):
            stop(process)
        mosquitto.stop()
        await drop_database(db_name)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
