"""Fleets of simulated gateways in one process, each running the real lock_gateway code."""

import asyncio
import contextlib
import random
import time
import zlib
from collections import Counter
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


@dataclass(frozen=True, slots=True)
class FleetSnapshot:
    """What one fleet process holds right now (``citykey-sim --report``)."""

    gateways: int
    connected: int
    keyset_versions: dict[int, int]
    """``ver`` of the trusted key set -> how many gateways hold it."""
    revocation_versions: dict[int, int]
    """Version of the applied revocation list -> how many gateways hold it (0: none yet)."""
    actuations: int

    def as_dict(self) -> dict[str, object]:
        """JSON-ready (version keys as strings)."""
        return {
            "gateways": self.gateways,
            "connected": self.connected,
            "keyset_versions": {str(k): v for k, v in self.keyset_versions.items()},
            "revocation_versions": {str(k): v for k, v in self.revocation_versions.items()},
            "actuations": self.actuations,
        }


class Fleet:
    """Starts and stops many simulated gateways in the running event loop.

    ``shard=(index, count)`` keeps only every ``count``-th gateway of the layout starting at
    ``index``: ``citykey-sim --processes N`` runs one shard per process, so a fleet of
    thousands spreads over the cores while every gateway still runs the real daemon with its
    own broker session.
    """

    def __init__(
        self,
        layout: FleetLayout,
        template: GatewayConfig,
        keys: KeySet,
        *,
        actuation_delay_s: float = 0.0,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        index, count = shard
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"shard must be (index, count) with 0 <= index < count, got {shard}")
        self.members: dict[str, SimulatedGateway] = {}
        for position, (gid, doors) in enumerate(layout):
            if position % count != index:
                continue
            config = replace(template, gateway_id=gid, doors=doors)
            lock = SimulatedLock(sorted(doors.values()), actuation_delay_s=actuation_delay_s)
            self.members[gid] = SimulatedGateway(Gateway(config, lock, keys), lock)

    async def start(self, *, wait_online: float | None = 10.0, ramp_s: float = 0.0) -> None:
        """Start every gateway; with ``ramp_s`` > 0 spread the first connects over about that
        many seconds (small batches, jittered), so a large fleet does not hit the broker with
        thousands of CONNECTs in the same instant. ``wait_online`` bounds the wait for all
        of them to be connected (None or 0: do not wait)."""
        members = list(self.members.values())
        batch = 25
        pause = ramp_s / max(1, len(members) / batch) if ramp_s > 0 else 0.0
        for number, member in enumerate(members):
            member.task = asyncio.create_task(member.gateway.run())
            if pause and number % batch == batch - 1:
                await asyncio.sleep(pause * random.uniform(0.5, 1.5))
        if wait_online:
            async with asyncio.timeout(wait_online):
                await asyncio.gather(*(m.gateway.connected.wait() for m in self.members.values()))

    def report_state(self) -> None:
        """Every simulated lock reports its state once, with a battery level between 55 and
        100 % that is the same for a door on every run (derived from the gateway id and the
        channel), so that the demo's console shows batteries and door contacts at once."""
        for gateway_id, member in self.members.items():
            for channel in member.lock.channels:
                pct = 55 + zlib.crc32(f"{gateway_id}/{channel}".encode()) % 46
                member.lock.state(channel).battery_pct = pct
                member.lock.report_state(channel)

    def snapshot(self) -> FleetSnapshot:
        """Counts over this process's gateways (what the bench waits on)."""
        members = self.members.values()
        return FleetSnapshot(
            gateways=len(self.members),
            connected=sum(m.gateway.connected.is_set() for m in members),
            keyset_versions=dict(Counter(m.gateway.keysets.version for m in members)),
            revocation_versions=dict(
                Counter(m.gateway.offline.revocations.version for m in members)
            ),
            actuations=sum(m.gateway.actuations for m in members),
        )

    async def stop(self) -> None:
        """Say goodbye from every gateway and end their tasks."""
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
