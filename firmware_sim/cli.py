"""``citykey-sim``: G simulated gateways x D doors against a broker, in one process."""

import argparse
import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from citykey_protocol.transport import BrokerAddress
from firmware_sim.fleet import Fleet, FleetLayout
from lock_gateway.cli import load_keys
from lock_gateway.config import GatewayConfig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="citykey-sim", description=__doc__)
    parser.add_argument("--mqtt-url", default="mqtt://127.0.0.1:1883")
    parser.add_argument("--issuer", default="http://localhost:8000")
    parser.add_argument("--jwks-url", default="http://localhost:8000/.well-known/jwks.json")
    parser.add_argument("--key-cache", type=Path, default=Path("var/sim/jwks.json"))
    parser.add_argument("--prefix", default="sim-gw", help="gateway ids are PREFIX-0001, ...")
    parser.add_argument("--gateways", type=int, default=10)
    parser.add_argument("--doors", type=int, default=4, help="doors per gateway")
    parser.add_argument("--actuation-delay", type=float, default=0.0, help="seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    template = GatewayConfig(
        gateway_id="template",
        broker=BrokerAddress.parse(args.mqtt_url),
        issuer=args.issuer,
        doors={},
        jwks_url=args.jwks_url,
        key_cache=args.key_cache,
    )
    keys = load_keys(template)
    if not keys.kids():
        raise SystemExit("citykey-sim: no trusted keys (JWKS unreachable and no cache)")
    fleet = Fleet(
        FleetLayout(args.prefix, args.gateways, args.doors),
        template,
        keys,
        actuation_delay_s=args.actuation_delay,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(fleet))


async def _run(fleet: Fleet) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await fleet.start(wait_online=60)
    print(f"{len(fleet.members)} simulated gateways online; Ctrl-C stops them", flush=True)
    await stop.wait()
    await fleet.stop()
