"""EventIngestor: journaled gateway events from the relay into the database, in batches, then
acknowledged to the gateway.

Events of one gateway are written by one worker task at a time, in arrival order. Whatever
arrives while a batch is being written forms the next batch (up to ``batch_max``), so the
burst a gateway delivers after an outage costs a few statements per thousand events, and a
lone event waits only ``linger_s`` before it is written.

Nothing is held here that the gateway does not still have: an event is acknowledged only after
its batch committed, and a batch that fails is dropped (logged); the gateway sends it again.
A batch the database refuses for its content (not for being unreachable) is split in halves
and retried, so one event the database will not take cannot hold up the others.
"""

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from sqlalchemy.exc import DataError, IntegrityError, ProgrammingError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.db import DatabaseUnavailableError
from api.events.service import BatchOutcome, EventStore
from api.relay.mqtt import BrokerUnavailableError, MqttRelay
from citykey_protocol import messages
from citykey_protocol.messages import EventAck, GatewayEvent
from citykey_protocol.topics import GatewayTopics

log = logging.getLogger(__name__)

_CONTENT_ERRORS = (DataError, IntegrityError, ProgrammingError, ValueError, TypeError)
"""The database (or a bind processor) refused what was in the batch: splitting can help."""


@dataclass(slots=True)
class IngestStats:
    """Counters since start (per API instance)."""

    received: int = 0
    """Journaled events that arrived (duplicates included)."""
    stored: int = 0
    duplicates: int = 0
    """Events already stored (resends, or another instance was first)."""
    conflicts: int = 0
    gaps_opened: int = 0
    gaps_closed: int = 0
    batches: int = 0
    acks_sent: int = 0
    failed_batches: int = 0
    store_s: float = 0.0
    """Time spent in storing transactions."""


class EventIngestor:
    """Listens to the relay's gateway events; stores the journaled ones (``seq`` set)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        batch_max: int = 1000,
        linger_s: float = 0.02,
        max_writers: int = 4,
    ) -> None:
        self._sessions = sessions
        self._batch_max = batch_max
        self._linger_s = linger_s
        # At most this many storing transactions at once, whatever the number of gateways
        # with events queued: a fleet reconnecting after a broker restart delivers one event
        # (journal_started, resends) from thousands of gateways in the same second, and one
        # transaction each at once drained the connection pool (pool timeouts, failed
        # batches, unlock requests starved). Waiting here lets more of a gateway's events
        # gather into its next batch instead.
        self._writers = asyncio.Semaphore(max_writers)
        self._relay: MqttRelay | None = None
        self._queues: dict[str, list[GatewayEvent]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self.stats = IngestStats()

    def attach(self, relay: MqttRelay) -> "EventIngestor":
        """Receive the relay's events and acknowledge through it."""
        self._relay = relay
        relay.on_event(self.receive)
        return self

    async def receive(self, event: GatewayEvent) -> None:
        """Queue one event for its gateway's worker (events without ``seq`` come from a
        gateway without a journal: door_status still sees them, nothing is stored)."""
        if event.seq is None:
            return
        self.stats.received += 1
        self._queues.setdefault(event.gateway_id, []).append(event)
        if event.gateway_id not in self._workers:
            task = asyncio.create_task(self._drain(event.gateway_id))
            self._workers[event.gateway_id] = task

    async def stop(self) -> None:
        """Stop the workers; events still queued are not acknowledged (the gateways resend)."""
        workers = list(self._workers.values())
        for task in workers:
            task.cancel()
        for task in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._queues.clear()

    async def _drain(self, gateway_id: str) -> None:
        queue = self._queues[gateway_id]
        try:
            while queue:
                await asyncio.sleep(self._linger_s)  # let a burst gather into one batch
                await self._writers.acquire()
                batch = queue[: self._batch_max]  # taken after the wait: the most it can be
                del queue[: self._batch_max]
                try:
                    outcome = await self._store(gateway_id, batch)
                except (SQLAlchemyError, DatabaseUnavailableError, OSError, TimeoutError) as exc:
                    self.stats.failed_batches += 1
                    log.warning(
                        "%d events of %s not stored (%s); the gateway will resend them",
                        len(batch),
                        gateway_id,
                        exc,
                    )
                    continue
                except Exception:  # a bug must not stop this gateway's events for good
                    self.stats.failed_batches += 1
                    log.exception("%d events of %s not stored", len(batch), gateway_id)
                    continue
                finally:
                    self._writers.release()
                if outcome is not None:
                    await self._acknowledge(gateway_id, outcome)
        finally:
            # No await between the last ``while queue`` check and here: nothing can slip in.
            self._workers.pop(gateway_id, None)
            if not queue:
                self._queues.pop(gateway_id, None)

    async def _store(self, gateway_id: str, batch: list[GatewayEvent]) -> BatchOutcome | None:
        try:
            outcome = await self._store_once(gateway_id, batch)
        except _CONTENT_ERRORS as exc:
            if len(batch) == 1:
                self.stats.failed_batches += 1
                log.error(
                    "event %s/%s cannot be stored: %s", gateway_id, batch[0].seq, exc, exc_info=exc
                )
                return None
            middle = len(batch) // 2
            first = await self._store(gateway_id, batch[:middle])
            second = await self._store(gateway_id, batch[middle:])
            return second or first
        self.stats.batches += 1
        if outcome is not None:
            self.stats.stored += outcome.inserted
            self.stats.duplicates += outcome.duplicates
            self.stats.conflicts += outcome.conflicts
            self.stats.gaps_opened += outcome.gaps_opened
            self.stats.gaps_closed += outcome.gaps_closed
        return outcome

    async def _store_once(self, gateway_id: str, batch: list[GatewayEvent]) -> BatchOutcome | None:
        started = time.perf_counter()
        try:
            async with self._sessions() as session:
                outcome = await EventStore(session).record_batch(gateway_id, batch)
                await session.commit()
                return outcome
        finally:
            self.stats.store_s += time.perf_counter() - started

    async def _acknowledge(self, gateway_id: str, outcome: BatchOutcome) -> None:
        if self._relay is None:
            return
        ack = EventAck(gateway_id=gateway_id, up_to_seq=outcome.up_to_seq, resend=outcome.resend)
        try:
            await self._relay.publish(GatewayTopics(gateway_id).event_acks, messages.encode(ack))
        except BrokerUnavailableError as exc:
            log.info("event ack for %s not sent (%s); it will resend", gateway_id, exc)
            return
        self.stats.acks_sent += 1
