"""Helpers for the journal and fault tests: a TCP proxy whose link can die silently, real
gateways with tuned timers, and look-ups of what the API stored."""

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from api.audit.models import AuditEvent
from api.events.models import GatewayEventGap, GatewayEventRecord
from api.gateways.models import Gateway as GatewayRow
from citykey_protocol.transport import BrokerAddress
from firmware_sim.lock import SimulatedLock
from lock_gateway.daemon import Gateway
from lock_gateway.keys import KeySet
from tests.support import World


async def wait_for(
    predicate: Callable[[], Awaitable[bool]] | Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.02,
) -> float:
    """Poll ``predicate`` until true (bounded by ``timeout``); the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return time.monotonic() - started
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        await asyncio.sleep(interval)


@dataclass
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: list["asyncio.Task[None]"] = field(default_factory=list)


class BlackholeProxy:
    """A loopback TCP proxy in front of the broker. ``blackhole()`` makes the network die
    silently: bytes in both directions are dropped, no FIN or RST reaches either side, and
    new connections get no answer, exactly what a cut cable or a dead mobile link looks like.
    The broker then finds out only by the client's keepalive, and fires the last will.
    ``restore()`` brings the network back; the connections that lived through the outage are
    closed (their peers have long given up on them)."""

    def __init__(self, broker: BrokerAddress) -> None:
        self._broker = broker
        self._server: asyncio.Server | None = None
        self._links: list[_Link] = []
        self.down = False
        self.port = 0

    @property
    def address(self) -> BrokerAddress:
        return replace(self._broker, host="127.0.0.1", port=self.port)

    async def start(self) -> "BlackholeProxy":
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def blackhole(self) -> None:
        self.down = True

    async def restore(self) -> None:
        dead, self._links = self._links, []
        self.down = False
        for link in dead:
            await self._close(link)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in self._links:
            await self._close(link)
        self._links = []
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await self._server.wait_closed()

    async def _close(self, link: _Link) -> None:
        for task in link.tasks:
            task.cancel()
        for writer in (link.client, link.upstream):
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(client=writer)
        self._links.append(link)
        if self.down:
            # No network: what the client sends goes nowhere, nothing comes back.
            link.tasks.append(asyncio.create_task(self._pump(reader, None)))
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self._broker.host, self._broker.port
            )
        except OSError:
            writer.close()
            return
        link.upstream = up_writer
        link.tasks += [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter | None) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await source.read(65536):
                if self.down or sink is None:
                    continue  # dropped on the floor
                sink.write(data)
                await sink.drain()
            # End of stream: pass the close on only while the network is up.
            if not self.down and sink is not None:
                sink.close()


def start_gateway(
    world: World,
    gateway_id: str,
    doors: dict[str, int],
    *,
    broker: BrokerAddress | None = None,
    lock: SimulatedLock | None = None,
    **config: Any,
) -> tuple[Gateway, SimulatedLock, "asyncio.Task[None]"]:
    """A real gateway with a simulated lock and config overrides (not waited for)."""
    lock = lock or SimulatedLock(sorted(doors.values()))
    settings = replace(world.gateway_config(gateway_id, doors), **config)
    if broker is not None:
        settings = replace(settings, broker=broker)
    keys = KeySet.from_jwks(world.state.keyring.jwks())
    gateway = Gateway(settings, lock, keys)
    return gateway, lock, asyncio.create_task(gateway.run())


async def stop_gateway(gateway: Gateway, task: "asyncio.Task[None]") -> None:
    await gateway.stop()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def crash_gateway(task: "asyncio.Task[None]") -> None:
    """Cancel the gateway's task without saying goodbye (no offline status)."""
    task.cancel()


async def stored_last_seq(sessions: async_sessionmaker[AsyncSession], gateway_id: str) -> int:
    async with sessions() as session:
        row = await session.get(GatewayRow, gateway_id)
        assert row is not None
        return row.last_seq


async def stored_counts(
    sessions: async_sessionmaker[AsyncSession], gateway_id: str
) -> tuple[int, int]:
    """(rows, distinct seqs) stored for the gateway."""
    async with sessions() as session:
        row = (
            await session.execute(
                select(func.count(), func.count(func.distinct(col(GatewayEventRecord.seq)))).where(
                    col(GatewayEventRecord.gateway_id) == gateway_id
                )
            )
        ).one()
        return int(row[0]), int(row[1])


async def stored_seqs(sessions: async_sessionmaker[AsyncSession], gateway_id: str) -> list[int]:
    async with sessions() as session:
        rows = await session.execute(
            select(col(GatewayEventRecord.seq))
            .where(col(GatewayEventRecord.gateway_id) == gateway_id)
            .order_by(col(GatewayEventRecord.seq))
        )
        return [int(s) for s in rows.scalars().all()]


async def gaps(
    sessions: async_sessionmaker[AsyncSession], gateway_id: str
) -> list[GatewayEventGap]:
    async with sessions() as session:
        rows = await session.execute(
            select(GatewayEventGap)
            .where(col(GatewayEventGap.gateway_id) == gateway_id)
            .order_by(col(GatewayEventGap.from_seq))
        )
        return list(rows.scalars().all())


async def gateway_audit(
    sessions: async_sessionmaker[AsyncSession], gateway_id: str
) -> list[AuditEvent]:
    """Audit rows written from this gateway's events, oldest first."""
    async with sessions() as session:
        rows = await session.execute(
            select(AuditEvent)
            .where(
                col(AuditEvent.gateway_id) == gateway_id,
                col(AuditEvent.action).startswith("gateway."),
            )
            .order_by(col(AuditEvent.id))
        )
        return list(rows.scalars().all())


async def journal_delivered(
    sessions: async_sessionmaker[AsyncSession], gateway: Gateway, timeout: float
) -> float:
    """Wait until the API stored everything the gateway journaled and the gateway got the
    acknowledgement; the seconds it took."""
    gateway_id = gateway.config.gateway_id

    async def done() -> bool:
        journal = gateway.journal
        return (
            journal.acked == journal.last_seq
            and await stored_last_seq(sessions, gateway_id) == journal.last_seq
        )

    return await wait_for(done, timeout, f"journal of {gateway_id} delivered")


def state_dir(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir(parents=True, exist_ok=True)
    return path
