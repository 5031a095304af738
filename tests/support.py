"""Test helpers: seed a small world and run real gateways with simulated locks."""

import asyncio
import contextlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime

import aiomqtt
import msgspec

from api.access.models import Grant
from api.buildings.models import Building, Door
from api.gateways.models import Gateway as GatewayRow
from api.identity.models import Role, User
from api.state import AppState
from citykey_protocol import messages
from citykey_protocol.messages import Ack
from citykey_protocol.topics import GatewayTopics
from citykey_protocol.transport import BrokerAddress
from firmware_sim.fleet import MuteGateway
from firmware_sim.lock import SimulatedLock
from lock_gateway.config import GatewayConfig
from lock_gateway.daemon import Gateway
from lock_gateway.keys import KeySet


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


@dataclass
class RunningGateway:
    gateway: Gateway
    lock: SimulatedLock
    task: "asyncio.Task[None]"
    doors: dict[str, int]

    def channel(self, door_id: str) -> int:
        return self.doors[door_id]

    async def stop(self) -> None:
        await self.gateway.stop()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@dataclass
class World:
    state: AppState
    broker: BrokerAddress
    building_id: str = field(default_factory=lambda: unique("bld"))
    citizen_id: str = field(default_factory=lambda: unique("u-cit"))
    stranger_id: str = field(default_factory=lambda: unique("u-str"))
    gateways: list[RunningGateway] = field(default_factory=list)
    mutes: list[MuteGateway] = field(default_factory=list)
    topics_to_clear: list[str] = field(default_factory=list)

    async def seed(self) -> None:
        async with self.state.sessions() as session:
            session.add(Building(id=self.building_id, name="Test library"))
            session.add(User(id=self.citizen_id, display_name="Kari", roles=[Role.CITIZEN]))
            session.add(User(id=self.stranger_id, display_name="Ola", roles=[Role.CITIZEN]))
            await session.commit()

    async def add_gateway(self, doors: int = 1) -> tuple[str, dict[str, int]]:
        """Register a gateway with ``doors`` doors in the database (not started)."""
        gateway_id = unique("gw")
        door_map = {f"{gateway_id}-d{c}": c for c in range(1, doors + 1)}
        async with self.state.sessions() as session:
            session.add(GatewayRow(id=gateway_id, name=gateway_id, building_id=self.building_id))
            await session.flush()
            for door_id, channel in door_map.items():
                session.add(
                    Door(
                        id=door_id,
                        name=door_id,
                        building_id=self.building_id,
                        gateway_id=gateway_id,
                        channel=channel,
                        default_unlock_seconds=5,
                    )
                )
            await session.commit()
        self.topics_to_clear.append(GatewayTopics(gateway_id).status)
        return gateway_id, door_map

    async def grant(
        self,
        user_id: str,
        *,
        door_id: str | None = None,
        building: bool = False,
        valid_from: datetime | None = None,
        valid_until: datetime | None = None,
    ) -> str:
        grant_id = unique("grt")
        async with self.state.sessions() as session:
            session.add(
                Grant(
                    id=grant_id,
                    user_id=user_id,
                    door_id=door_id,
                    building_id=self.building_id if building else None,
                    valid_from=valid_from,
                    valid_until=valid_until,
                )
            )
            await session.commit()
        return grant_id

    def gateway_config(self, gateway_id: str, doors: dict[str, int]) -> GatewayConfig:
        return GatewayConfig(
            gateway_id=gateway_id,
            broker=self.broker,
            issuer=self.state.settings.issuer,
            doors=doors,
        )

    async def start_gateway(
        self,
        gateway_id: str,
        doors: dict[str, int],
        *,
        keys: KeySet | None = None,
        config: GatewayConfig | None = None,
    ) -> RunningGateway:
        """Run the real gateway code with a simulated lock; wait until the API sees it online.
        ``config`` replaces the default ``gateway_config(gateway_id, doors)``."""
        lock = SimulatedLock(sorted(doors.values()))
        keyset = keys or KeySet.from_jwks(self.state.keyring.jwks())
        gateway = Gateway(config or self.gateway_config(gateway_id, doors), lock, keyset)
        task = asyncio.create_task(gateway.run())
        running = RunningGateway(gateway, lock, task, doors)
        self.gateways.append(running)
        async with asyncio.timeout(10):
            while not self.state.relay.gateway_online(gateway_id):
                await asyncio.sleep(0.01)
        return running

    async def start_mute_gateway(self, gateway_id: str) -> MuteGateway:
        mute = MuteGateway(self.broker, gateway_id)
        await mute.start()
        self.mutes.append(mute)
        async with asyncio.timeout(10):
            while not self.state.relay.gateway_online(gateway_id):
                await asyncio.sleep(0.01)
        return mute

    async def close(self) -> None:
        for running in self.gateways:
            await running.stop()
        for mute in self.mutes:
            await mute.stop()
        # Leave no retained status behind on the shared broker.
        async with self.broker.client(unique("cleanup")) as client:
            for topic in self.topics_to_clear:
                await client.publish(topic, b"", qos=1, retain=True)


class AckListener:
    """Subscribes to a gateway's acks for one reply_to id, to talk to gateways directly."""

    def __init__(self, broker: BrokerAddress, gateway_id: str) -> None:
        self.broker = broker
        self.topics = GatewayTopics(gateway_id)
        self.reply_to = unique("probe")
        self._stack = contextlib.AsyncExitStack()
        self.client: aiomqtt.Client | None = None

    async def __aenter__(self) -> "AckListener":
        self.client = await self._stack.enter_async_context(self.broker.client(self.reply_to))
        await self.client.subscribe(self.topics.ack(self.reply_to), qos=1)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def send(self, command: messages.UnlockCommand, timeout: float = 5.0) -> Ack:
        assert self.client is not None
        command = msgspec.structs.replace(command, reply_to=self.reply_to)
        await self.client.publish(self.topics.commands, messages.encode(command), qos=1)
        async with asyncio.timeout(timeout):
            async for message in self.client.messages:
                assert isinstance(message.payload, bytes)
                ack = messages.ack_decoder.decode(message.payload)
                if ack.command_id == command.command_id:
                    return ack
        raise AssertionError("no ack")
