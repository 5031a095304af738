"""``citykey-sim``: G simulated gateways x D doors against a broker, in one or more processes.

Every simulated gateway runs the real lock_gateway daemon with its own broker session. With
``--processes N`` the fleet is split into N shards (gateway i goes to shard i mod N), each
served by one child process with one event loop; the parent only starts, watches and stops the
children (by PID). ``--report S`` makes every process print one JSON line every S seconds
(connected gateways, key-set and revocation-list versions held), which bench/fleet.py reads.
"""

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import FrameType

from citykey_protocol.transport import BrokerAddress
from firmware_sim.fleet import Fleet, FleetLayout
from lock_gateway.cli import load_keys
from lock_gateway.config import GatewayConfig

CONNECTS_PER_SECOND = 400.0
"""Default ramp: the whole fleet's first connects spread at about this rate."""
CHILD_STOP_S = 30.0
"""How long the parent waits for a child to stop before killing it."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="citykey-sim", description=__doc__)
    parser.add_argument("--mqtt-url", default="mqtt://127.0.0.1:1883")
    parser.add_argument("--issuer", default="http://localhost:8000")
    parser.add_argument("--jwks-url", default="http://localhost:8000/.well-known/jwks.json")
    parser.add_argument("--key-cache", type=Path, default=Path("var/sim/jwks.json"))
    parser.add_argument("--prefix", default="sim-gw", help="gateway ids are PREFIX-0001, ...")
    parser.add_argument("--gateways", type=int, default=10)
    parser.add_argument("--doors", type=int, default=4, help="doors per gateway")
    parser.add_argument("--actuation-delay", type=float, default=0.0, help="seconds")
    parser.add_argument(
        "--processes", type=int, default=1, help="child processes sharing the fleet (default 1)"
    )
    parser.add_argument(
        "--ramp",
        type=float,
        default=None,
        help="spread the first connects over this many seconds "
        f"(default: gateways / {CONNECTS_PER_SECOND:.0f})",
    )
    parser.add_argument("--heartbeat", type=float, default=None, help="seconds (default 30)")
    parser.add_argument(
        "--keyset-poll",
        type=float,
        default=None,
        help="seconds between key-set polls over HTTP; 0: broker copy only (default 900)",
    )
    parser.add_argument(
        "--report", type=float, default=0.0, help="print a JSON status line every S seconds"
    )
    parser.add_argument(
        "--report-state",
        action="store_true",
        help="every lock reports bolt, door contact and battery once at start (demo consoles)",
    )
    parser.add_argument("--shard", default="0/1", help=argparse.SUPPRESS)  # set for children
    return parser


def _shard(value: str) -> tuple[int, int]:
    index, _, count = value.partition("/")
    if not (index.isdigit() and count.isdigit()) or not 0 <= int(index) < int(count):
        raise SystemExit(f"citykey-sim: --shard must be INDEX/COUNT, got {value!r}")
    return int(index), int(count)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``citykey-sim``."""
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    if args.gateways < 1 or args.doors < 1 or args.processes < 1:
        raise SystemExit("citykey-sim: --gateways, --doors and --processes must be >= 1")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    if args.processes > 1:
        raise SystemExit(_supervise(argv, min(args.processes, args.gateways)))
    template = GatewayConfig(
        gateway_id="template",
        broker=BrokerAddress.parse(args.mqtt_url),
        issuer=args.issuer,
        doors={},
        jwks_url=args.jwks_url,
        key_cache=args.key_cache,
    )
    if args.heartbeat is not None:
        template = replace(template, heartbeat_s=args.heartbeat)
    if args.keyset_poll is not None:
        template = replace(template, keyset_poll_s=args.keyset_poll)
    keys = load_keys(template)
    if not keys.kids():
        raise SystemExit("citykey-sim: no trusted keys (JWKS unreachable and no cache)")
    fleet = Fleet(
        FleetLayout(args.prefix, args.gateways, args.doors),
        template,
        keys,
        actuation_delay_s=args.actuation_delay,
        shard=_shard(args.shard),
    )
    ramp = args.ramp if args.ramp is not None else args.gateways / CONNECTS_PER_SECOND
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(fleet, ramp, args.report, args.shard, args.report_state))


def _supervise(argv: list[str], processes: int) -> int:
    """Run ``processes`` children, one shard each; stop them by PID on SIGINT/SIGTERM."""
    children: list[subprocess.Popen[bytes]] = []
    base = [sys.executable, "-m", "firmware_sim.cli", *argv, "--processes", "1"]
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for index in range(processes):
        # Our own interpreter and module with our own arguments: nothing untrusted.
        child = subprocess.Popen([*base, "--shard", f"{index}/{processes}"])  # noqa: S603
        children.append(child)
    status = 0
    while any(child.poll() is None for child in children):
        if not stopping and any(child.poll() not in (None, 0) for child in children):
            print("citykey-sim: a fleet process failed; stopping the others", file=sys.stderr)
            status = 1
            stop(signal.SIGTERM, None)
        time.sleep(0.2)
        if stopping:
            break
    deadline = time.monotonic() + CHILD_STOP_S
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        status = status or (child.returncode if child.returncode and child.returncode > 0 else 0)
    return status


async def _run(
    fleet: Fleet, ramp_s: float, report_s: float, shard: str, report_state: bool = False
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reporter = asyncio.create_task(_report(fleet, report_s, shard)) if report_s > 0 else None
    await fleet.start(wait_online=None, ramp_s=ramp_s)
    if report_state:
        fleet.report_state()  # journaled: delivered once each gateway is connected
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(60 + ramp_s):
            await asyncio.wait(
                [asyncio.create_task(m.gateway.connected.wait()) for m in fleet.members.values()]
            )
    online = fleet.snapshot().connected
    print(
        f"{online}/{len(fleet.members)} simulated gateways online (shard {shard}, pid "
        f"{os.getpid()}); Ctrl-C stops them",
        file=sys.stderr,
        flush=True,
    )
    await stop.wait()
    if reporter is not None:
        reporter.cancel()
    await fleet.stop()


async def _report(fleet: Fleet, every_s: float, shard: str) -> None:
    while True:
        line = {"shard": shard, "t": time.time(), **fleet.snapshot().as_dict()}
        print(json.dumps(line), flush=True)
        await asyncio.sleep(every_s)


if __name__ == "__main__":
    main()
