"""Keeps the door_status table in step with the events gateways publish.

Event kinds and what they do to a door's state:

| kind | lock_state | door_state | alarms |
|---|---|---|---|
| unlocked, locked | unlocked, locked | | clears jammed (the bolt moved) |
| jammed | jammed | | sets jammed |
| door_opened | | open | |
| door_forced_open | | open | sets forced_open |
| held_open | | open | sets held_open |
| door_closed | | closed | clears forced_open and held_open |
| battery ``{"pct": n}`` | | | sets low_battery below 20 %, clears it from 20 % |
| tamper ``{"active": bool}`` | | | sets tamper; ``"active": false`` clears it |

Any other kind only updates ``last_event``. Events older than the last one applied are
ignored: every API instance receives every event (docs/operations.md, "Scale-out") and
applies it in its own time, so arrival order is not event order.
"""

import asyncio
import logging
import weakref
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.background import cancel_and_wait
from api.buildings.repository import DoorRepository, StatusRow
from api.common import as_utc
from api.relay.mqtt import MqttRelay
from citykey_protocol.messages import GatewayEvent

log = logging.getLogger(__name__)

LOW_BATTERY_PCT = 20

_LOCK_STATES = {"unlocked": "unlocked", "locked": "locked", "jammed": "jammed"}
_DOOR_STATES = {
    "door_opened": "open",
    "door_forced_open": "open",
    "held_open": "open",
    "door_closed": "closed",
}


class StatusFields(Protocol):
    """What ``apply_event`` changes: a DoorStatus row, or its plain values (StatusRow)."""

    lock_state: str | None
    door_state: str | None
    battery_pct: int | None
    alarms: list[str]
    last_event: str | None
    last_event_at: datetime | None


def apply_event(status: StatusFields, kind: str, data: dict[str, Any], at: datetime) -> None:
    """Fold one event into ``status`` (see the table in the module docstring)."""
    alarms = set(status.alarms)
    if kind in _LOCK_STATES:
        status.lock_state = _LOCK_STATES[kind]
        if kind == "jammed":
            alarms.add("jammed")
        else:
            alarms.discard("jammed")
    if kind in _DOOR_STATES:
        status.door_state = _DOOR_STATES[kind]
    if kind == "door_forced_open":
        alarms.add("forced_open")
    elif kind == "held_open":
        if data.get("active", True) is False:
            alarms.discard("held_open")
        else:
            alarms.add("held_open")
    elif kind == "door_closed":
        alarms -= {"forced_open", "held_open"}
    elif kind == "tamper":
        if data.get("active", True) is False:
            alarms.discard("tamper")
        else:
            alarms.add("tamper")
    elif kind == "battery":
        pct = data.get("pct")
        # bool is an int too; a malformed reading changes nothing.
        if isinstance(pct, int) and not isinstance(pct, bool) and 0 <= pct <= 100:
            status.battery_pct = pct
            if pct < LOW_BATTERY_PCT:
                alarms.add("low_battery")
            else:
                alarms.discard("low_battery")
    # A new list, sorted: the JSON column notices assignment only, and readers get a stable
    # order.
    status.alarms = sorted(alarms)
    status.last_event = kind[:64]
    status.last_event_at = at


class DoorStatusRecorder:
    """Listens to the relay's gateway events and upserts door_status. Best effort: the
    gateway's own journal is the durable record; this table is the current picture.

    Batched: events are gathered for ``linger_s`` and applied by one writer task in one
    transaction for every door that had events, doors in id order (so two API instances
    folding the same events lock the same rows in the same order and cannot deadlock).
    Events of one door are applied in arrival order. One transaction per event was most of
    the API's CPU per unlock (an unlock moves its door twice: ``unlocked``, ``locked``), and
    a fleet reconnecting at once held a pooled connection per door. Journaled events are
    folded by the event ingest in the transaction that stores them when one is attached to
    the same relay after this recorder (``journaled_by_ingest``); the recorder's own writes
    are then for gateways without a journal. Either way each write is a few statements for
    any number of doors (SQLAlchemy Core, no ORM objects).
    """

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], *, linger_s: float = 0.02
    ) -> None:
        self._sessions = sessions
        self._linger_s = linger_s
        self._pending: dict[str, list[GatewayEvent]] = {}
        self._written: asyncio.Future[None] | None = None
        """Resolved when the queued events have been applied (or given up on)."""
        self._writer: asyncio.Task[None] | None = None
        self.journaled_by_ingest = False
        """Set by the event ingest attached to the same relay (api/events/ingest.py): it folds
        journaled events (``seq`` set) into door_status in the transaction that stores them,
        so this recorder's own writes are left for events without a journal."""

    def attach(self, relay: MqttRelay) -> None:
        """Receive the relay's events (and let an ingest attached later find this recorder:
        ``recorder_of``)."""
        _RECORDERS[relay] = self
        relay.on_event(self.record)

    async def stop(self) -> None:
        """End the write loop (at shutdown); whoever waits on it is released. Door status is
        best effort: the next events of each door say it again."""
        await cancel_and_wait(self._writer)
        self._pending.clear()

    async def record(self, event: GatewayEvent) -> None:
        """Apply one gateway event to the status of its door: queued with the events of the
        next ``linger_s`` and written with them; returns once that write is over."""
        if event.door is None or (event.seq is not None and self.journaled_by_ingest):
            return
        self._pending.setdefault(event.door, []).append(event)
        if self._written is None:
            self._written = asyncio.get_running_loop().create_future()
        written = self._written
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_loop(), name="door-status")
        await asyncio.shield(written)  # a cancelled listener must not cancel the others' write

    async def _write_loop(self) -> None:
        try:
            while self._pending:
                await asyncio.sleep(self._linger_s)  # let a burst gather into one write
                batch, self._pending = self._pending, {}
                written, self._written = self._written, None
                try:
                    await self._apply(batch)
                except SQLAlchemyError as exc:
                    log.warning("could not record the status of %d doors: %s", len(batch), exc)
                finally:
                    if written is not None and not written.done():
                        written.set_result(None)
        finally:
            self._writer = None  # no await since the last ``while`` check: nothing is left
            if self._written is not None:  # cancelled (shutdown): release whoever waits
                if not self._written.done():
                    self._written.set_result(None)
                self._written = None

    async def _apply(self, batch: dict[str, list[GatewayEvent]]) -> None:
        async with self._sessions() as session:
            if await self._apply_in(session, batch):
                await session.commit()
            else:
                await session.rollback()

    async def fold(self, session: AsyncSession, events: Iterable[GatewayEvent]) -> None:
        """Apply ``events`` (arrival order) to their doors' status in ``session``'s
        transaction; the caller commits (the event ingest: with the events themselves)."""
        batch: dict[str, list[GatewayEvent]] = {}
        for event in events:
            if event.door is not None:
                batch.setdefault(event.door, []).append(event)
        if batch:
            await self._apply_in(session, batch)

    async def _apply_in(self, session: AsyncSession, batch: dict[str, list[GatewayEvent]]) -> bool:
        """Fold ``batch`` into door_status; whether a row changed. In the usual case one
        statement locks every door's row (with the door's gateway) and one executemany
        UPDATE writes them back; doors without a row yet cost one look-up and one INSERT
        more."""
        doors = DoorRepository(session)
        rows = await doors.lock_statuses(list(batch))
        missing = [door_id for door_id in batch if door_id not in rows]
        if missing:
            rows.update(await self._create(doors, missing, batch))
        changed = [
            row for door_id, row in sorted(rows.items()) if self._fold(row, batch.get(door_id, []))
        ]
        if changed:
            await doors.update_statuses(changed)
        return bool(changed)

    @staticmethod
    async def _create(
        doors: DoorRepository, door_ids: list[str], batch: dict[str, list[GatewayEvent]]
    ) -> dict[str, StatusRow]:
        """Status rows for doors that have none yet, for those whose own gateway reported
        them (created empty, then locked)."""
        gateways = await doors.gateways_of(door_ids)
        wanted = []
        for door_id in door_ids:
            if door_id not in gateways:
                log.warning("gateways reported unknown door %r", door_id)
            elif any(event.gateway_id == gateways[door_id] for event in batch[door_id]):
                wanted.append(door_id)
            else:
                log.warning(
                    "gateway %s reported unknown door %r", batch[door_id][0].gateway_id, door_id
                )
        if not wanted:
            return {}
        await doors.create_statuses(wanted)
        return await doors.lock_statuses(wanted)

    @staticmethod
    def _fold(row: StatusRow, events: list[GatewayEvent]) -> bool:
        """Apply one door's events (arrival order) to its row; whether any applied."""
        applied = False
        for event in events:
            # A gateway speaks for its own doors only: a misconfigured or stolen one must
            # not paint another gateway's doors.
            if row.gateway_id != event.gateway_id:
                log.warning("gateway %s reported unknown door %r", event.gateway_id, row.door_id)
                continue
            try:
                at = datetime.fromtimestamp(event.ts, UTC)
            except (OverflowError, OSError, ValueError):
                log.warning("dropping %s from %s: bad timestamp", event.kind, event.gateway_id)
                continue
            if row.last_event_at is not None and at < as_utc(row.last_event_at):
                continue
            apply_event(row, event.kind, event.data, at)
            applied = True
        return applied


_RECORDERS: "weakref.WeakKeyDictionary[MqttRelay, DoorStatusRecorder]" = weakref.WeakKeyDictionary()


def recorder_of(relay: MqttRelay) -> DoorStatusRecorder | None:
    """The door-status recorder attached to ``relay``, if any."""
    return _RECORDERS.get(relay)
