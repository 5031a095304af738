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
ignored: the relay hands each event to its own task, and every API instance receives every
event, so arrival order is not event order.
"""

import asyncio
import logging
from dataclasses import dataclass, field
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


@dataclass(slots=True)
class _DoorLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0
    """Tasks holding or waiting for the lock; the entry is dropped when it reaches zero."""
    pending: list[GatewayEvent] = field(default_factory=list)
    """Events not yet applied, in arrival order. The task that gets the lock applies all of
    them in one transaction: a journal delivered after an outage (thousands of events of one
    door at once) costs a few transactions, not one per event."""


class DoorStatusRecorder:
    """Listens to the relay's gateway events and upserts door_status. Best effort: the
    gateway's own journal is the durable record; this table is the current picture."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        # Events of one door are applied one at a time, in arrival order (asyncio.Lock wakes
        # waiters first come, first served); idle doors hold no entry.
        self._locks: dict[str, _DoorLock] = {}

    def attach(self, relay: MqttRelay) -> None:
        relay.on_event(self.record)

    async def record(self, event: GatewayEvent) -> None:
        """Apply one gateway event to the status of its door."""
        if event.door is None:
            return
        entry = self._locks.setdefault(event.door, _DoorLock())
        entry.users += 1
        entry.pending.append(event)
        try:
            async with entry.lock:
                if entry.pending:  # else a task before us applied ours too
                    events, entry.pending = entry.pending, []
                    await self._apply(events, event.door)
        except SQLAlchemyError as exc:
            log.warning("could not record %s of door %s: %s", event.kind, event.door, exc)
        finally:
            entry.users -= 1
            if entry.users == 0:
                self._locks.pop(event.door, None)

    async def _apply(self, events: list[GatewayEvent], door_id: str) -> None:
        async with self._sessions() as session:
            doors = DoorRepository(session)
            door = await doors.get(door_id)
            if door is None:
                log.warning("gateways reported unknown door %r", door_id)
                return
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
            if status is None:
                await session.rollback()
                return
            await session.commit()
