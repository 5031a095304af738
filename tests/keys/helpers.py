"""Helpers shared by the key rotation and clock tests."""

import asyncio
import time
from collections.abc import Callable

from firmware_sim.lock import SimulatedLock
from lock_gateway.config import GatewayConfig
from lock_gateway.daemon import Gateway
from lock_gateway.keys import KeySet
from tests.support import RunningGateway, World


async def until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> float:
    """Wait (bounded) until ``condition`` holds; return how long it took, in ms."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None
    return (time.monotonic() - started) * 1000


async def start_gateway(
    world: World,
    config: GatewayConfig,
    keys: KeySet,
    *,
    clock: Callable[[], float] = time.time,
) -> RunningGateway:
    """Like World.start_gateway, with a configuration and a clock of the test's own."""
    lock = SimulatedLock(sorted(config.doors.values()))
    gateway = Gateway(config, lock, keys, clock=clock)
    task = asyncio.create_task(gateway.run())
    running = RunningGateway(gateway, lock, task, dict(config.doors))
    world.gateways.append(running)
    await until(lambda: world.state.relay.gateway_online(config.gateway_id), "gateway online")
    return running
