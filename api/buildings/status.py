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
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.buildings.models import DoorStatus
from api.buildings.repository import DoorRepository
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


def apply_event(status: DoorStatus, kind: str, data: dict[str, Any], at: datetime) -> None:
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
    a fleet reconnecting at once held a pooled connection per door.
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

    def attach(self, relay: MqttRelay) -> None:
        relay.on_event(self.record)

    async def record(self, event: GatewayEvent) -> None:
        """Apply one gateway event to the status of its door: queued with the events of the
        next ``linger_s`` and written with them; returns once that write is over."""
        if event.door is None:
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
            doors = DoorRepository(session)
            changed = False
            for door_id in sorted(batch):
                changed = await self._apply_door(doors, door_id, batch[door_id]) or changed
            if changed:
                await session.commit()
            else:
                await session.rollback()

    @staticmethod
    async def _apply_door(doors: DoorRepository, door_id: str, events: list[GatewayEvent]) -> bool:
        door = await doors.get(door_id)
        if door is None:
            log.warning("gateways reported unknown door %r", door_id)
            return False
        status = None
        for event in events:
            try:
                at = datetime.fromtimestamp(event.ts, UTC)
            except (OverflowError, OSError, ValueError):
                log.warning("dropping %s from %s: bad timestamp", event.kind, event.gateway_id)
                continue
            # A gateway speaks for its own doors only: a misconfigured or stolen one must
            # not paint another gateway's doors.
            if door.gateway_id != event.gateway_id:
                log.warning("gateway %s reported unknown door %r", event.gateway_id, door_id)
                continue
            if status is None:
                status = await doors.status_for_update(door.id)
            if status.last_event_at is not None and at < as_utc(status.last_event_at):
                continue
            apply_event(status, event.kind, event.data, at)
        return status is not None
