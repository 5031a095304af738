"""Unlock benchmark against real PostgreSQL and a real Mosquitto (TCP_NODELAY on both sides).

Starts, as separate processes: a private mosquitto, the API (uvicorn, uvloop, httptools) on a
fresh PostgreSQL database, and a citykey-sim fleet with zero actuation delay. Then measures,
in one run:
  - baseline A: MQTT QoS 1 round trip through the same broker (publish -> own subscription),
  - baseline B: a trivial endpoint of the same API server (GET /healthz),
  - 1,000 sequential unlocks (p50/p99), and throughput with 20 concurrent clients,
and prints each with its ratio to the baseline. Bounded in count and time.

Run: .venv/bin/python bench/unlock.py [--sequential 1000] [--concurrency 20] [--seconds 10]
"""

import argparse
import asyncio
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

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
    create_database,
    drop_database,
    free_port,
    sim_command,
    sqlalchemy_url,
    summary,
    wait_for_port,
)
from citykey_protocol.transport import BrokerAddress
from firmware_sim.fleet import FleetLayout

LAYOUT = FleetLayout("bench-gw", gateways=4, doors_per_gateway=5)


async def mqtt_round_trips(broker: BrokerAddress, count: int) -> list[float]:
    """Baseline A: QoS 1 publish to a topic this client subscribes to, until it comes back."""
    samples: list[float] = []
    async with broker.client(f"bench-rt-{secrets.token_hex(3)}") as client:
        topic = f"bench/rt/{secrets.token_hex(4)}"
        await client.subscribe(topic, qos=1)
        messages = client.messages.__aiter__()
        for i in range(count):
            started = time.perf_counter()
            await client.publish(topic, str(i).encode(), qos=1)
            await messages.__anext__()
            samples.append((time.perf_counter() - started) * 1000)
    return samples


async def sequential(
    client: httpx.AsyncClient, method: str, paths: list[str], count: int, headers: dict[str, str]
) -> tuple[list[float], int]:
    samples: list[float] = []
    errors = 0
    for i in range(count):
        started = time.perf_counter()
        response = await client.request(method, paths[i % len(paths)], headers=headers)
        samples.append((time.perf_counter() - started) * 1000)
        errors += response.status_code != 200
    return samples, errors


async def concurrent(
    client: httpx.AsyncClient,
    method: str,
    paths: list[str],
    workers: int,
    seconds: float,
    max_requests: int,
    headers: dict[str, str],
) -> tuple[list[float], int, float]:
    samples: list[float] = []
    errors = 0
    counter = 0
    deadline = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        nonlocal errors, counter
        i = offset
        while time.perf_counter() < deadline and counter < max_requests:
            counter += 1
            started = time.perf_counter()
            response = await client.request(method, paths[i % len(paths)], headers=headers)
            samples.append((time.perf_counter() - started) * 1000)
            errors += response.status_code != 200
            i += workers

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(workers)))
    elapsed = time.perf_counter() - started
    return samples, errors, len(samples) / elapsed


async def prepare_database(url: str) -> list[str]:
    await asyncio.to_thread(upgrade, url)
    settings = Settings(database_url=url)
    engine = create_engine(settings)
    async for session in session_scope(session_factory(engine)):
        data = await seed_demo(session, LAYOUT)
    await engine.dispose()
    return data.door_ids


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequential", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--max-requests", type=int, default=5000)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="citykey-bench-"))
    db_name = await create_database("citykey_bench")
    database_url = sqlalchemy_url(db_name)
    mosquitto = PrivateMosquitto()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        door_ids = await prepare_database(database_url)
        key_dir = work / "keys"
        KeyRing.initialize(key_dir)
        port = free_port()
        issuer = f"http://127.0.0.1:{port}"
        # The bench opens each door ~50 times a minute on purpose; 0 switches the
        # per-citizen limit off (it is measured separately in tests/abuse).
        env = api_environment(
            database_url, mosquitto.url, key_dir, issuer, CITYKEY_UNLOCK_RATE_PER_MINUTE="0"
        )
        bin_dir = Path(sys.executable).parent
        processes.append(
            subprocess.Popen(
                [str(bin_dir / "citykey"), "serve", "--port", str(port), "--no-access-log"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_for_port(port, 30)
        processes.append(
            subprocess.Popen(
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
        )
        token = DevIdentityProvider.load(key_dir, issuer, "citykey-api").issue(CITIZEN_ID)
        headers = {"Authorization": f"Bearer {token}"}
        unlock_paths = [f"/v1/doors/{door}/unlock" for door in door_ids]

        limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=issuer, limits=limits, timeout=10) as client:
            deadline = time.monotonic() + 30
            while True:  # until every gateway is online
                probes = [await client.post(p, headers=headers) for p in unlock_paths]
                if all(r.status_code == 200 for r in probes):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"fleet not ready: {probes[-1].text}")
                await asyncio.sleep(0.2)

            print(
                f"citykey unlock benchmark  ({os.cpu_count()} cores, Python "
                f"{sys.version.split()[0]}, PostgreSQL + mosquitto set_tcp_nodelay)"
            )
            print(
                f"fleet: {LAYOUT.gateways} gateways x {LAYOUT.doors_per_gateway} doors, "
                "actuation delay 0\n"
            )
            rt = await mqtt_round_trips(BrokerAddress.parse(mosquitto.url), args.sequential)
            print(f"baseline A  MQTT QoS1 round trip       {summary(rt)}")
            await sequential(client, "GET", ["/healthz"], 200, headers)  # warm-up
            floor, _ = await sequential(client, "GET", ["/healthz"], args.sequential, headers)
            print(f"baseline B  GET /healthz sequential    {summary(floor)}")
            seq, seq_errors = await sequential(
                client, "POST", unlock_paths, args.sequential, headers
            )
            print(f"unlock      sequential                 {summary(seq)}  errors {seq_errors}")
            seq_p50 = statistics.median(seq)
            print(
                f"            ratio unlock/MQTT p50 {seq_p50 / statistics.median(rt):.1f}x,"
                f" unlock/healthz p50 {seq_p50 / statistics.median(floor):.1f}x\n"
            )

            f_samples, _, f_rate = await concurrent(
                client,
                "GET",
                ["/healthz"],
                args.concurrency,
                args.seconds / 2,
                args.max_requests,
                headers,
            )
            print(
                f"baseline B  GET /healthz x{args.concurrency} concurrent  {f_rate:7.0f} req/s  "
                f"{summary(f_samples)}"
            )
            c_samples, c_errors, c_rate = await concurrent(
                client,
                "POST",
                unlock_paths,
                args.concurrency,
                args.seconds,
                args.max_requests,
                headers,
            )
            print(
                f"unlock      x{args.concurrency} concurrent         {c_rate:7.0f} req/s  "
                f"{summary(c_samples)}  errors {c_errors}"
            )
            print(f"            unlock throughput = {c_rate / f_rate:.1%} of the trivial endpoint")
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        mosquitto.stop()
        await drop_database(db_name)


if __name__ == "__main__":
    asyncio.run(main())
