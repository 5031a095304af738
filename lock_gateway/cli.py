"""``citykey-gateway``: run one gateway daemon."""

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from citykey_protocol.transport import BrokerAddress
from lock_gateway.config import GatewayConfig, env_default, parse_door_map
from lock_gateway.daemon import Gateway
from lock_gateway.driver import LockDriver
from lock_gateway.keys import KeySet, load_trusted_keys

log = logging.getLogger("citykey-gateway")


def load_keys(config: GatewayConfig) -> KeySet:
    """The on-disk cache (what signed key sets taught this gateway); on the first boot, the
    API's JWKS (trust on first use); empty if neither (lock_gateway/keys.py)."""
    return load_trusted_keys(config.jwks_url, config.key_cache)


def make_driver(name: str, channels: list[int]) -> LockDriver:
    if name == "sim":
        from firmware_sim.lock import SimulatedLock

        return SimulatedLock(channels)
    raise SystemExit(f"unknown driver {name!r} (available: sim)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="citykey-gateway", description=__doc__)
    parser.add_argument("--id", default=env_default("ID"), help="gateway id")
    parser.add_argument(
        "--mqtt-url",
        default=env_default("MQTT_URL", "mqtt://127.0.0.1:1883"),
        help="mqtt[s]://user:password@host:port",
    )
    parser.add_argument("--issuer", default=env_default("ISSUER", "http://localhost:8000"))
    parser.add_argument("--jwks-url", default=env_default("JWKS_URL"))
    parser.add_argument(
        "--key-cache",
        type=Path,
        default=Path(env_default("KEY_CACHE", "var/gateway/jwks.json") or ""),
    )
    parser.add_argument(
        "--door",
        action="append",
        default=[],
        metavar="DOOR_ID=CHANNEL",
        help="a door on this gateway (repeat)",
    )
    parser.add_argument("--driver", default=env_default("DRIVER", "sim"))
    parser.add_argument("--leeway", type=float, default=5.0, help="clock leeway, seconds")
    state_dir = env_default("STATE_DIR")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(state_dir) if state_dir else None,
        help="directory for state kept across restarts, such as the replay store of seen "
        "token ids; default: none, state in memory only",
    )
    parser.add_argument(
        "--local-listen",
        default=env_default("LOCAL_LISTEN"),
        metavar="HOST:PORT",
        help="serve offline unlock for citizens' apps on this address (the building's LAN); "
        "default: no local endpoint",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    doors_env = env_default("DOORS")
    door_items = args.door or (doors_env.split(",") if doors_env else [])
    if not args.id or not door_items:
        sys.exit("citykey-gateway: --id and at least one --door are required")
    config = GatewayConfig(
        gateway_id=args.id,
        broker=BrokerAddress.parse(args.mqtt_url),
        issuer=args.issuer,
        doors=parse_door_map(door_items),
        jwks_url=args.jwks_url,
        key_cache=args.key_cache,
        leeway_s=args.leeway,
        state_dir=args.state_dir,
        local_listen=args.local_listen,
    )
    keys = load_keys(config)
    if not keys.kids():
        sys.exit("citykey-gateway: no trusted keys (JWKS unreachable and no cache)")
    driver = make_driver(args.driver, sorted(config.doors.values()))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(Gateway(config, driver, keys)))


async def _run(gateway: Gateway) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(gateway.run())
    await stop.wait()
    await gateway.stop()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
