"""EventIngestor: journaled gateway events from the relay into the database, in batches, then
acknowledged to the gateway.

One writer task stores, every ``linger_s``, whatever arrived from ALL gateways meanwhile in
ONE transaction (each gateway's events in arrival order, up to ``batch_max`` per gateway and
``slice_max`` in all): one statement locks the gateway rows, one inserts the events, one moves
the prefixes. A transaction per gateway batch was most of the API's CPU for events (at 50
unlocks/s over 8 gateways nearly every batch held one event), and a fleet reconnecting at
once never holds more than one pooled connection here. When a DoorStatusRecorder is attached
to the same relay first (api/main.py does), the slice's events are folded into door_status in
the same transaction as well, instead of in one of the recorder's own.

Nothing is held here that the gateway does not still have: an event is acknowledged only after
its batch committed, and a batch that fails is dropped (logged); the gateway sends it again.
When the database refuses a slice for its content (not for being unreachable), each gateway's
batch is stored again in its own transaction, split in halves as needed, so one event the
database will not take cannot hold up the others.

Two API instances receiving the same events do not queue behind each other's gateway row
lock: a gateway row held by another transaction is skipped (``FOR UPDATE SKIP LOCKED``) and
its batch is tried again in the next slice (by then the other instance has stored it and it
is only acknowledged); after ``MAX_SKIPS`` skips in a row the writer waits for the lock.
"""

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy.exc import DataError, IntegrityError, ProgrammingError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.background import cancel_and_wait
from api.buildings.status import DoorStatusRecorder, recorder_of
from api.db import DatabaseUnavailableError
from api.events.service import BatchOutcome, EventStore, SliceResult
from api.relay.mqtt import BrokerUnavailableError, MqttRelay
from citykey_protocol import messages
from citykey_protocol.messages import EventAck, GatewayEvent
from citykey_protocol.topics import GatewayTopics

log = logging.getLogger(__name__)

MAX_SKIPS = 3
"""Slices in a row a gateway's batch may be skipped for a row lock another transaction holds;
then the writer waits for the lock (bounded: the other transaction commits or fails)."""

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
    """Gateway batches stored (several go in one transaction)."""
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
        slice_max: int = 5000,
        linger_s: float = 0.02,
    ) -> None:
        self._sessions = sessions
        self._batch_max = batch_max
        self._slice_max = slice_max
        self._linger_s = linger_s
        self._relay: MqttRelay | None = None
        self._queues: dict[str, list[GatewayEvent]] = {}
        self._skips: dict[str, int] = {}
        """Slices in a row in which a gateway's row was held by another transaction."""
        self._writer: asyncio.Task[None] | None = None
        self._door_status: DoorStatusRecorder | None = None
        """The door-status recorder on the same relay: journaled events reach door_status
        in the transaction that stores them (one transaction per slice for both)."""
        self.stats = IngestStats()

    def attach(self, relay: MqttRelay) -> "EventIngestor":
        """Receive the relay's events and acknowledge through it."""
        self._relay = relay
        relay.on_event(self.receive)
        self._door_status = recorder_of(relay)
        if self._door_status is not None:
            self._door_status.journaled_by_ingest = True
        return self

    async def receive(self, event: GatewayEvent) -> None:
        """Queue one event for the next slice (events without ``seq`` come from a gateway
        without a journal: door_status still sees them, nothing is stored)."""
        if event.seq is None:
            return
        self.stats.received += 1
        self._queues.setdefault(event.gateway_id, []).append(event)
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_loop(), name="event-ingest")

    async def stop(self) -> None:
        """Stop the writer; events still queued are not acknowledged (the gateways resend)."""
        await cancel_and_wait(self._writer)
        self._queues.clear()

    def _take(self) -> dict[str, list[GatewayEvent]]:
        """The next slice: up to ``batch_max`` events of each queued gateway, in queue order,
        until ``slice_max`` events in all (the rest stays queued, in front)."""
        taken: dict[str, list[GatewayEvent]] = {}
        total = 0
        for gateway_id, queue in list(self._queues.items()):
            if total >= self._slice_max:
                break
            batch = queue[: self._batch_max]
            del queue[: self._batch_max]
            if not queue:
                del self._queues[gateway_id]
            taken[gateway_id] = batch
            total += len(batch)
        return taken

    def _requeue(self, gateway_id: str, batch: list[GatewayEvent]) -> None:
        """Put a batch back in front of what arrived since (arrival order kept)."""
        self._queues[gateway_id] = batch + self._queues.get(gateway_id, [])

    async def _write_loop(self) -> None:
        try:
            while self._queues:
                await asyncio.sleep(self._linger_s)  # let a burst gather into one slice
                outcomes = await self._store_slice(self._take())
                # Acks of the slice go out together (each waits for its PUBACK); a failure of
                # one must neither stop the others nor end this loop.
                sent = await asyncio.gather(
                    *(self._acknowledge(gid, outcome) for gid, outcome in outcomes.items()),
                    return_exceptions=True,
                )
                for failure in sent:
                    if isinstance(failure, Exception):
                        log.error("event ack not sent", exc_info=failure)
        finally:
            self._writer = None  # no await since the last ``while`` check: nothing is left

    async def _store_slice(self, batches: dict[str, list[GatewayEvent]]) -> dict[str, BatchOutcome]:
        """Store one slice; what to acknowledge, per gateway. Never raises for a database
        fault: the batches concerned are dropped (the gateways resend) or requeued."""
        patient = {gid for gid in batches if self._skips.get(gid, 0) >= MAX_SKIPS}
        try:
            result = await self._store_once(
                batches, skip_locked=set(batches) - patient, door_status=True
            )
        except _CONTENT_ERRORS:
            # Something in the slice is unstorable: each gateway on its own, split as needed
            # (door_status is best effort: not folded on this rare path, lest the fold be
            # what the database refuses).
            outcomes: dict[str, BatchOutcome] = {}
            for gateway_id, batch in batches.items():
                outcome = await self._store_alone(gateway_id, batch)
                if outcome is not None:
                    outcomes[gateway_id] = outcome
            return outcomes
        except (SQLAlchemyError, DatabaseUnavailableError, OSError, TimeoutError) as exc:
            self.stats.failed_batches += len(batches)
            log.warning(
                "events of %d gateways not stored (%s); the gateways will resend them",
                len(batches),
                exc,
            )
            return {}
        except Exception:  # a bug must not stop the events for good
            self.stats.failed_batches += len(batches)
            log.exception("events of %d gateways not stored", len(batches))
            return {}
        for gateway_id in result.skipped:
            self._skips[gateway_id] = self._skips.get(gateway_id, 0) + 1
            self._requeue(gateway_id, batches[gateway_id])
        for gateway_id in result.outcomes:
            self._skips.pop(gateway_id, None)
        self._count(result.outcomes.values())
        return result.outcomes

    async def _store_alone(self, gateway_id: str, batch: list[GatewayEvent]) -> BatchOutcome | None:
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
            return None
        except Exception:  # a bug must not stop this gateway's events for good
            self.stats.failed_batches += 1
            log.exception("%d events of %s not stored", len(batch), gateway_id)
            return None
        self._skips.pop(gateway_id, None)
        return outcome

    def _count(self, outcomes: Iterable[BatchOutcome]) -> None:
        for outcome in outcomes:
            self.stats.batches += 1
            self.stats.stored += outcome.inserted
            self.stats.duplicates += outcome.duplicates
            self.stats.conflicts += outcome.conflicts
            self.stats.gaps_opened += outcome.gaps_opened
            self.stats.gaps_closed += outcome.gaps_closed

    async def _store(self, gateway_id: str, batch: list[GatewayEvent]) -> BatchOutcome | None:
        """One gateway's batch in its own transaction(s), halved while the database refuses
        its content; waits for the gateway's row lock."""
        try:
            result = await self._store_once(
                {gateway_id: batch}, skip_locked=set(), door_status=False
            )
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
        outcome = result.outcomes.get(gateway_id)
        if outcome is not None:
            self._count([outcome])
        return outcome

    async def _store_once(
        self, batches: dict[str, list[GatewayEvent]], *, skip_locked: set[str], door_status: bool
    ) -> SliceResult:
        started = time.perf_counter()
        try:
            async with self._sessions() as session:
                result = await EventStore(session).record_batches(batches, skip_locked=skip_locked)
                if door_status and self._door_status is not None:
                    # Events of gateways stored (or found stored) only: a skipped gateway's
                    # come back with its retry, an unknown gateway has no doors.
                    await self._door_status.fold(
                        session, (e for gid in result.outcomes for e in batches[gid])
                    )
                await session.commit()
                return result
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
