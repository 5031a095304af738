"""Fleets of simulated gateways in one process, each running the real lock_gateway code."""

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import aiomqtt

from citykey_protocol import messages
from citykey_protocol.messages import GatewayStatus
from citykey_protocol.topics import GatewayTopics
from citykey_protocol.transport import BrokerAddress
from firmware_sim.lock import SimulatedLock
from lock_gateway.config import GatewayConfig
from lock_gateway.daemon import Gateway
from lock_gateway.keys import KeySet


def gateway_id(prefix: str, index: int) -> str:
    """Name of the index-th simulated gateway (1-based)."""
    return f"{prefix}-{index:04d}"


def door_id(gateway: str, channel: int) -> str:
    """Name of the door on ``channel`` of a simulated gateway."""
    return f"{gateway}-door-{channel}"


@dataclass(frozen=True, slots=True)
class FleetLayout:
    """G gateways x D doors, named deterministically so the API can be seeded to match."""

    prefix: str
    gateways: int
    doors_per_gateway: int

    def __iter__(self) -> Iterator[tuple[str, dict[str, int]]]:
        for g in range(1, self.gateways + 1):
            gid = gateway_id(self.prefix, g)
            yield gid, {door_id(gid, c): c for c in range(1, self.doors_per_gateway + 1)}


@dataclass(slots=True)
class SimulatedGateway:
    """One real Gateway wired to one SimulatedLock."""

    gateway: Gateway
    lock: SimulatedLock
    task: "asyncio.Task[None] | None" = None


class Fleet:
    """Starts and stops many simulated gateways in the running event loop."""

    def __init__(
        self,
        layout: FleetLayout,
        template: GatewayConfig,
        keys: KeySet,
        *,
        actuation_delay_s: float = 0.0,
    ) -> None:
        self.members: dict[str, SimulatedGateway] = {}
        for gid, doors in layout:
            config = replace(template, gateway_id=gid, doors=doors)
            lock = SimulatedLock(sorted(doors.values()), actuation_delay_s=actuation_delay_s)
            self.members[gid] = SimulatedGateway(Gateway(config, lock, keys), lock)

    async def start(self, *, wait_online: float | None = 10.0) -> None:
        for member in self.members.values():
            member.task = asyncio.create_task(member.gateway.run())
        if wait_online:
            async with asyncio.timeout(wait_online):
                await asyncio.gather(*(m.gateway.connected.wait() for m in self.members.values()))

    async def stop(self) -> None:
        for member in self.members.values():
            await member.gateway.stop()
            if member.task is not None:
                member.task.cancel()
        for member in self.members.values():
            if member.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await member.task


class MuteGateway:
    """A broken gateway: reports itself online and takes commands, but never answers.

    Used to show that the API answers 504 instead of hanging.
    """

    def __init__(self, broker: BrokerAddress, gateway: str) -> None:
        self.topics = GatewayTopics(gateway)
        self._broker = broker
        self.received = 0
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def _run(self) -> None:
        async with self._broker.client(f"mute-{self.topics.gateway_id}") as client:
            await client.subscribe(self.topics.commands, qos=1)
            status = GatewayStatus(gateway_id=self.topics.gateway_id, online=True, ts=time.time())
            await client.publish(self.topics.status, messages.encode(status), qos=1, retain=True)
            self.ready.set()
            async for _ in client.messages:
                self.received += 1

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(10):
            await self.ready.wait()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._task
        # Leave no retained "online" behind for the next test.
        async with self._broker.client(f"mute-clean-{self.topics.gateway_id}") as client:
            await client.publish(self.topics.status, b"", qos=1, retain=True)
