"""End-to-end unlock benchmark: offered load -> latency, errors and the API's CPU and memory.

Starts, each as its own process: a private mosquitto (``set_tcp_nodelay true``), the API
(``citykey serve``: uvicorn, 1 worker, uvloop, httptools) on a fresh PostgreSQL database
(created, migrated, seeded, dropped at the end), a ``citykey-sim`` fleet with zero actuation
delay, and for every phase a load generator (bench/loadgen.py, open loop: requests leave at
their scheduled times and latency counts from then, so a stall is never hidden).

Phases:
  1. open loop at each ``--rates`` (default 50, 100, 200, 400 unlocks/s) for ``--duration``;
  2. a bounded search for the highest rate whose p99 stays <= ``--p99-ms`` (50);
  3. the floor: ``GET /healthz`` of the same server (same middleware stack, no database, no
     broker) and the unlock, each closed loop at ``--concurrency`` for ``--duration``; unlock
     throughput is reported as a fraction of the floor's.

Every wait is bounded; every process is stopped by its PID; the database is dropped.

Run: .venv/bin/python bench/e2e.py [--duration 10] [--rates 50,100,200,400] [--quick]
         [--profile]  (py-spy: docs/img/unlock-flame.svg and docs/img/unlock-profile.txt)
         [--keep-log FILE]  (the API's and the fleet's stderr, and the raw py-spy stacks)
"""

import argparse
import asyncio
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api.access.models import Grant  # noqa: E402
from api.db import create_engine, session_factory, session_scope  # noqa: E402
from api.demo import BUILDING_ID, CITIZEN_ID, MANAGER_ID, seed_demo  # noqa: E402
from api.identity.dev_provider import DevIdentityProvider  # noqa: E402
from api.identity.models import Role, User  # noqa: E402
from api.keys.keyring import KeyRing  # noqa: E402
from api.migrate import upgrade  # noqa: E402
from api.settings import Settings  # noqa: E402
from bench.common import PrivateMosquitto, free_port, percentile, wait_for_port  # noqa: E402
from bench.profile_summary import summarize  # noqa: E402
from firmware_sim.fleet import FleetLayout  # noqa: E402

PG_ADMIN = os.environ.get("CITYKEY_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
BIN = Path(sys.executable).parent
PHASE_GRACE_S = 30.0
"""How long a phase may run past its duration (draining, timeouts) before it is killed."""


@dataclass(slots=True)
class Phase:
    """One load-generator run and what the API process used meanwhile."""

    name: str
    offered: float | None
    result: dict[str, Any]
    api_cpu_pct: float
    api_rss_mb: float
    sim_cpu_pct: float
    lat: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lat = self.result["latencies_ms"]

    @property
    def achieved(self) -> float:
        return float(self.result["ok"]) / max(float(self.result["elapsed_s"]), 1e-9)

    @property
    def p99(self) -> float:
        errors = sum(self.result["errors"].values())
        # Errors count as "slower than anything": a rate that fails requests does not pass.
        return float("inf") if errors or not self.lat else percentile(self.lat, 0.99)

    def row(self) -> str:
        errors = ", ".join(f"{n} {k}" for k, n in sorted(self.result["errors"].items())) or "0"
        offered = f"{self.offered:7.0f}" if self.offered else "  closed"
        if not self.lat:
            return (
                f"{self.name:<8}{offered}  {self.achieved:7.1f}   (no successes)  errors {errors}"
            )
        lag = self.result["send_lag_ms"]
        return (
            f"{self.name:<8}{offered} {self.achieved:8.1f} "
            f"{statistics.median(self.lat):7.2f} {percentile(self.lat, 0.90):7.2f} "
            f"{percentile(self.lat, 0.99):7.2f} {max(self.lat):8.2f}  "
            f"{self.api_cpu_pct:5.0f}% {self.api_rss_mb:6.0f}  {self.sim_cpu_pct:5.0f}%  "
            f"{self.result['cpu_s'] / max(self.result['elapsed_s'], 1e-9) * 100:4.0f}% "
            f"{percentile(lag, 0.99) if lag else 0:6.2f}  {errors}"
        )


HEADER = (
    "phase   offered  achieved    p50     p90     p99      max   API cpu  rss MB  sim cpu "
    " gen  lag99  errors\n"
    "          req/s     req/s     ms      ms      ms       ms                            "
    " cpu    ms"
)


class Bench:
    """The processes under test and how to drive them."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.layout = FleetLayout("e2e-gw", gateways=args.gateways, doors_per_gateway=args.doors)
        self.work = Path(tempfile.mkdtemp(prefix="citykey-e2e-"))
        self.db_name = f"citykey_e2e_{secrets.token_hex(4)}"
        self.database_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{self.db_name}"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.mosquitto: PrivateMosquitto | None = None
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.api: psutil.Process | None = None
        self.sim: psutil.Process | None = None
        self.door_ids: list[str] = []
        self.tokens: list[str] = []

    # -- set-up ---------------------------------------------------------------------------

    async def start(self) -> None:
        admin = await asyncpg.connect(PG_ADMIN)
        await admin.execute(f'CREATE DATABASE "{self.db_name}"')
        await admin.close()
        self.mosquitto = PrivateMosquitto()
        citizens = await self._prepare_database()
        key_dir = self.work / "keys"
        KeyRing.initialize(key_dir)
        env = {
            **os.environ,
            "CITYKEY_DATABASE_URL": self.database_url,
            "CITYKEY_MQTT_URL": self.mosquitto.url,
            "CITYKEY_KEY_DIR": str(key_dir),
            "CITYKEY_ISSUER": self.issuer,
            # The bench opens each door many times a minute on purpose; 0 switches the
            # per-citizen limit off (it is measured in tests/abuse, not here).
            "CITYKEY_UNLOCK_RATE_PER_MINUTE": "0",
        }
        api = self._spawn(
            [str(BIN / "citykey"), "serve", "--port", str(self.port), "--no-access-log"], env
        )
        self.api = psutil.Process(api.pid)
        try:
            wait_for_port(self.port, 30)
        except RuntimeError:
            log = (self.work / "stderr.log").read_text(errors="replace")
            raise RuntimeError(f"the API did not start:\n{log[-3000:]}") from None
        sim = self._spawn(
            [
                str(BIN / "citykey-sim"),
                "--mqtt-url",
                self.mosquitto.url,
                "--issuer",
                self.issuer,
                "--jwks-url",
                f"{self.issuer}/.well-known/jwks.json",
                "--key-cache",
                str(self.work / "sim-jwks.json"),
                "--prefix",
                self.layout.prefix,
                "--gateways",
                str(self.layout.gateways),
                "--doors",
                str(self.layout.doors_per_gateway),
                "--actuation-delay",
                "0",
            ],
            None,
        )
        self.sim = psutil.Process(sim.pid)
        provider = DevIdentityProvider.load(key_dir, self.issuer, "citykey-api")
        self.tokens = [provider.issue(citizen) for citizen in citizens]
        await self._wait_until_every_door_opens()

    def _spawn(self, argv: list[str], env: dict[str, str] | None) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=(self.work / "stderr.log").open("ab")
        )
        self.processes.append(process)
        return process

    async def _prepare_database(self) -> list[str]:
        """Migrate and seed: the demo building with the bench fleet's doors, and
        ``--citizens`` citizens who may open every door."""
        await asyncio.to_thread(upgrade, self.database_url)
        engine = create_engine(Settings(database_url=self.database_url))
        citizens = [CITIZEN_ID]
        async for session in session_scope(session_factory(engine)):
            data = await seed_demo(session, self.layout)
            self.door_ids = data.door_ids
            for n in range(1, self.args.citizens):
                user_id = f"u_e2e_{n:04d}"
                session.add(User(id=user_id, display_name=f"Bench {n}", roles=[Role.CITIZEN]))
                citizens.append(user_id)
            await session.flush()
            for user_id in citizens[1:]:
                session.add(
                    Grant(
                        id=f"grt_{user_id}",
                        user_id=user_id,
                        building_id=BUILDING_ID,
                        created_by=MANAGER_ID,
                    )
                )
        await engine.dispose()
        return citizens

    async def _wait_until_every_door_opens(self) -> None:
        headers = {"Authorization": f"Bearer {self.tokens[0]}"}
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(base_url=self.issuer, timeout=10) as client:
            while True:
                probes = [
                    await client.post(f"/v1/doors/{door}/unlock", headers=headers)
                    for door in self.door_ids
                ]
                if all(r.status_code == 200 for r in probes):
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"fleet not ready: {probes[-1].text}")
                await asyncio.sleep(0.2)

    # -- load -----------------------------------------------------------------------------

    def _spec(self, kind: str) -> Path:
        """Requests for the load generator: every (citizen, door) pair, interleaved so that
        consecutive requests go to different doors and gateways."""
        if kind == "floor":
            requests = [
                {"method": "GET", "path": "/healthz", "headers": {"Authorization": f"Bearer {t}"}}
                for t in self.tokens
            ]
        else:
            requests = [
                {
                    "method": "POST",
                    "path": f"/v1/doors/{door}/unlock",
                    "headers": {"Authorization": f"Bearer {token}"},
                }
                for i, token in enumerate(self.tokens)
                for door in self.door_ids[i % len(self.door_ids) :]
                + self.door_ids[: i % len(self.door_ids)]
            ]
        path = self.work / f"spec-{kind}.json"
        path.write_text(json.dumps({"host": "127.0.0.1", "port": self.port, "requests": requests}))
        return path

    async def phase(
        self,
        name: str,
        kind: str,
        *,
        rate: float | None = None,
        concurrency: int | None = None,
        duration: float | None = None,
        profile: Path | None = None,
    ) -> Phase:
        """One load-generator run; the API's CPU (% of one core) and peak RSS meanwhile."""
        assert self.api is not None
        assert self.sim is not None
        duration = duration or self.args.duration
        argv = [sys.executable, str(ROOT / "bench" / "loadgen.py"), "--spec", str(self._spec(kind))]
        argv += ["--duration", str(duration), "--timeout", str(self.args.timeout)]
        argv += ["--rate", str(rate)] if rate is not None else ["--concurrency", str(concurrency)]
        self.api.cpu_percent()
        self.sim.cpu_percent()
        rss = self.api.memory_info().rss
        spies = []
        if profile is not None:
            # Two samplers: the flame graph, and collapsed stacks for the text summary.
            # The flame graph samples at half the rate: fewer distinct stacks, a smaller SVG.
            outputs = ((profile, "flamegraph", "50"), (self.work / "profile.txt", "raw", "100"))
            for output, fmt, hz in outputs:
                spies.append(
                    subprocess.Popen(
                        [
                            *(str(BIN / "py-spy"), "record", "--pid", str(self.api.pid)),
                            *("--output", str(output), "--format", fmt, "--nonblocking"),
                            *("--duration", str(int(duration)), "--rate", hz),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
        gen = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
        communicate = asyncio.ensure_future(gen.communicate())
        try:
            async with asyncio.timeout(duration + PHASE_GRACE_S):
                while not communicate.done():
                    rss = max(rss, self.api.memory_info().rss)
                    await asyncio.wait({communicate}, timeout=0.25)
        except TimeoutError:
            gen.kill()
            await gen.wait()
        if communicate.done() and not communicate.cancelled() and communicate.result()[0]:
            data = json.loads(communicate.result()[0])
        else:  # the generator did not finish in time (or died): nothing it measured counts
            communicate.cancel()
            data = {"elapsed_s": duration, "sent": 0, "ok": 0, "errors": {"bench_timeout": 1}}
            data |= {"latencies_ms": [], "send_lag_ms": [], "connections": 0, "cpu_s": 0.0}
        api_cpu = self.api.cpu_percent()
        sim_cpu = self.sim.cpu_percent()
        for spy in spies:
            spy.wait(timeout=PHASE_GRACE_S)
        result = Phase(name, rate, data, api_cpu, rss / 2**20, sim_cpu)
        print(result.row(), flush=True)
        return result

    async def idle_cpu(self, seconds: float) -> float:
        """The API's CPU use (% of one core) with the fleet connected and no requests."""
        assert self.api is not None
        self.api.cpu_percent()
        await asyncio.sleep(seconds)
        return float(self.api.cpu_percent())

    async def search(self, passed: list[float], failed: list[float]) -> float | None:
        """The highest rate with p99 <= --p99-ms, within --search-steps phases: grow by half
        until a rate fails, then bisect between the best pass and the lowest failure."""
        low = max(passed, default=None)
        high = min(failed, default=None)
        for _ in range(self.args.search_steps):
            if low is None:
                rate = (high or 50) / 2
            elif high is None:
                rate = low * 1.5
            else:
                if high - low <= max(10.0, low * 0.05):
                    break
                rate = (low + high) / 2
            rate = max(5.0, round(rate / 5) * 5.0)
            if rate in (low, high):
                break  # nothing new to learn at this granularity
            phase = await self.phase("search", "unlock", rate=rate)
            if phase.p99 <= self.args.p99_ms:
                low = rate
            else:
                high = rate
        return low

    # -- tear-down ------------------------------------------------------------------------

    async def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if self.mosquitto is not None:
            self.mosquitto.stop()
        admin = await asyncpg.connect(PG_ADMIN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        await admin.close()
        if self.args.keep_log is not None:
            shutil.copy(self.work / "stderr.log", self.args.keep_log)
        shutil.rmtree(self.work, ignore_errors=True)


MAX_FLAME_KB = 300
"""A bigger flame graph is not kept in docs/ (the text summary is, always)."""


async def profile(bench: Bench, args: argparse.Namespace) -> None:
    """py-spy on the API during one open-loop phase: docs/img/unlock-flame.svg (if small
    enough) and docs/img/unlock-profile.txt (text summary of the same stacks)."""
    target = ROOT / "docs" / "img" / "unlock-flame.svg"
    target.parent.mkdir(exist_ok=True)
    rate = min(args.rates, key=lambda r: abs(r - 200))
    await bench.phase("profile", "unlock", rate=rate, duration=5, profile=target)
    raw = bench.work / "profile.txt"
    if not raw.exists():
        print("\npy-spy wrote no profile (it needs root or ptrace rights)")
        return
    if args.keep_log is not None:
        shutil.copy(raw, args.keep_log.with_suffix(".stacks.txt"))
    lines = summarize(raw.read_text(), 15)
    header = f"py-spy, {rate:g} unlocks/s open loop for 5 s, API process (bench/e2e.py --profile)"
    summary_path = target.with_name("unlock-profile.txt")
    summary_path.write_text("\n".join([header, "", *lines]) + "\n")
    size = target.stat().st_size // 1024 if target.exists() else 0
    if size > MAX_FLAME_KB:
        target.unlink()
        print(f"\nflame graph {size} KB > {MAX_FLAME_KB} KB: not kept")
    else:
        print(f"\nflame graph: {target.relative_to(ROOT)} ({size} KB)")
    print(f"profile summary: {summary_path.relative_to(ROOT)}\n" + "\n".join(lines))


async def run(args: argparse.Namespace) -> None:
    bench = Bench(args)
    try:
        await bench.start()
        print(
            f"citykey end-to-end unlock benchmark: {os.cpu_count()} cores, Python "
            f"{sys.version.split()[0]}, PostgreSQL, mosquitto set_tcp_nodelay, 1 uvicorn worker\n"
            f"fleet {bench.layout.gateways} gateways x {bench.layout.doors_per_gateway} doors "
            f"(actuation 0 s), {len(bench.tokens)} citizens, {args.duration:g} s per phase, "
            f"open loop unless 'closed'\n"
        )
        idle_cpu = await bench.idle_cpu(3.0)
        print(f"API idle (no requests, fleet connected): {idle_cpu:.0f}% CPU\n")
        print(HEADER)
        await bench.phase("warm-up", "unlock", rate=50, duration=min(3.0, args.duration))
        passed: list[float] = []
        failed: list[float] = []
        at: dict[float, Phase] = {}
        for rate in args.rates:
            at[rate] = phase = await bench.phase("unlock", "unlock", rate=rate)
            (passed if phase.p99 <= args.p99_ms else failed).append(rate)
        best = await bench.search(passed, failed)
        floor = await bench.phase("floor", "floor", concurrency=args.concurrency)
        closed = await bench.phase("unlock", "unlock", concurrency=args.concurrency)
        if args.profile:
            await profile(bench, args)
        print()
        for rate in (100,):
            if rate in at and at[rate].lat:
                lat = at[rate].lat
                print(
                    f"target @100/s: p50 {statistics.median(lat):.2f} ms (<= 3), "
                    f"p99 {percentile(lat, 0.99):.2f} ms (<= 10)"
                )
        print(f"highest rate with p99 <= {args.p99_ms:g} ms and no errors: {best or 0:g} /s")
        print(
            f"unlock throughput {closed.achieved:.0f}/s = {closed.achieved / floor.achieved:.1%} "
            f"of the trivial endpoint's {floor.achieved:.0f}/s "
            f"(closed loop, {args.concurrency} concurrent)"
        )
    finally:
        await bench.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument(
        "--rates",
        type=lambda s: [float(r) for r in s.split(",")],
        default=[50.0, 100.0, 200.0, 400.0],
        help="offered unlock rates, comma-separated",
    )
    parser.add_argument("--quick", action="store_true", help="3 s phases, 2 search steps")
    parser.add_argument("--profile", action="store_true", help="py-spy flame graph of the API")
    parser.add_argument("--p99-ms", type=float, default=50.0)
    parser.add_argument("--search-steps", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop workers")
    parser.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    parser.add_argument("--gateways", type=int, default=8)
    parser.add_argument("--doors", type=int, default=8, help="doors per gateway")
    parser.add_argument("--citizens", type=int, default=50)
    parser.add_argument("--keep-log", type=Path, help="copy the processes' stderr here")
    args = parser.parse_args()
    if args.quick:
        args.duration = min(args.duration, 3.0)
        args.search_steps = min(args.search_steps, 2)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
