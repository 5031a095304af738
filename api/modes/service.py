"""Lockdown and passage mode: scope checks, the audit, and sending the result to gateways.

Ordering rule: a mode change is committed before any gateway hears of it. A gateway refuses
every mode message whose version is not above the one it applied, so a version a gateway may
have seen must never be rolled back and reused for a different message; committing first
guarantees that (and, as for unlocks, the audit record is durable before anything moves). This
is why the lockdown endpoints commit themselves instead of leaving it to the request.

Versions are drawn, with the building's row locked, from a high-water mark over all buildings
(see ModeRepository.next_mode_version), so they only grow, per building and per gateway.
"""

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from api.audit.service import record_change, snapshot
from api.authz import Scope, not_found
from api.buildings.models import Building, Door
from api.common import as_utc, utcnow
from api.errors import ApiError
from api.gateways.models import Gateway
from api.modes.plan import (
    PASSAGE_HORIZON,
    DesiredMode,
    PassageDoor,
    desired_modes,
)
from api.modes.publisher import ModePublisher
from api.modes.repository import ModeRepository
from api.modes.schemas import GatewayModeAck, LockdownView, PassageScheduleView
from api.relay.mqtt import MqttRelay
from api.schedules import Schedule
from citykey_protocol.messages import GatewayStatus

log = logging.getLogger(__name__)

ACK_WAIT_S = 2.0
"""How long a lockdown request waits for online gateways to acknowledge before answering."""
_ACK_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class StagedModes:
    """A committed (or about to be committed) mode version and each gateway's mode in it."""

    building_id: str
    version: int
    modes: dict[str, DesiredMode]


def passage_door(door: Door) -> PassageDoor:
    """The passage facts of a door row (a stored schedule that no longer parses is ignored:
    the door is then simply not held)."""
    schedule = None
    if door.passage_schedule:
        try:
            schedule = Schedule.model_validate(door.passage_schedule)
        except ValidationError as exc:
            log.error("door %s has an unreadable passage schedule: %s", door.id, exc)
    return PassageDoor(door.id, door.gateway_id, door.enabled, schedule)


def _holiday_range(now: datetime) -> tuple[date, date]:
    # Wide enough for any timezone around the window search of plan.passage_window_end.
    return (now - timedelta(days=2)).date(), (now + PASSAGE_HORIZON + timedelta(days=2)).date()


async def building_modes(
    repo: ModeRepository, buildings: Sequence[Building], now: datetime
) -> dict[str, dict[str, DesiredMode]]:
    """For each building, the desired mode of each of its gateways at ``now``."""
    ids = [b.id for b in buildings]
    gateways = await repo.gateways(ids)
    doors = await repo.passage_doors(ids)
    holidays = await repo.holidays(ids, *_holiday_range(now))
    result: dict[str, dict[str, DesiredMode]] = {}
    for building in buildings:
        zone = _zone(building)
        result[building.id] = desired_modes(
            lockdown=building.lockdown_since is not None,
            gateway_ids=[g.id for g in gateways if g.building_id == building.id],
            # Without a usable timezone no window can be placed: no holds (fail closed), but
            # a lockdown still goes out.
            doors=[passage_door(d) for d in doors if d.building_id == building.id and zone],
            zone=zone or ZoneInfo("UTC"),
            holidays=frozenset(holidays[building.id]),
            now=now,
        )
    return result


def _zone(building: Building) -> ZoneInfo | None:
    try:
        return ZoneInfo(building.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        log.error("building %s has an unusable timezone: %s", building.id, exc)
        return None


async def stage_modes(repo: ModeRepository, building: Building, now: datetime) -> StagedModes:
    """Give ``building`` a new mode version and compute its gateways' modes. The caller holds
    the building's row lock, commits, and only then publishes."""
    building.mode_version = await repo.next_mode_version()
    modes = (await building_modes(repo, [building], now))[building.id]
    return StagedModes(building.id, building.mode_version, modes)


async def republish_building(
    session: AsyncSession, publisher: ModePublisher, building_id: str, now: datetime
) -> tuple[StagedModes, dict[str, bool]] | None:
    """Send a new version of the building's modes, computed afresh with its row locked (so a
    concurrent lockdown change is never overwritten by a stale picture). Commits. None when
    the building is gone."""
    repo = ModeRepository(session)
    building = await repo.building(building_id, for_update=True)
    if building is None:
        await session.rollback()
        return None
    staged = await stage_modes(repo, building, now)
    await session.commit()
    return staged, await publisher.publish(staged.version, staged.modes, now)


def gateway_ack(gateway: Gateway, status: GatewayStatus | None, version: int) -> GatewayModeAck:
    """One gateway's acknowledgement of ``version``: from the database, or from the status
    the relay has just heard if the database write is still on its way."""
    acked_version = gateway.mode_version
    acked_at = as_utc(gateway.mode_acked_at) if gateway.mode_acked_at else None
    heard = status.mode_version if status is not None else None
    if status is not None and heard is not None and heard >= version > acked_version:
        acked_version, acked_at = version, datetime.fromtimestamp(status.ts, UTC)
    return GatewayModeAck(
        gateway_id=gateway.id,
        name=gateway.name,
        online=status.online if status is not None else gateway.online,
        acknowledged=acked_version >= version,
        acknowledged_version=acked_version,
        acknowledged_at=acked_at,
    )


class ModeService:
    def __init__(self, session: AsyncSession, publisher: ModePublisher, relay: MqttRelay) -> None:
        self._session = session
        self._repo = ModeRepository(session)
        self._publisher = publisher
        self._relay = relay

    async def start_lockdown(self, scope: Scope, building_id: str, reason: str) -> LockdownView:
        """Lock the building down: every grant and public hour suspended (the access policy
        reads lockdown_since), every gateway told to lock and refuse."""
        return await self._change_lockdown(scope, building_id, reason)

    async def lift_lockdown(self, scope: Scope, building_id: str) -> LockdownView:
        """End the lockdown; gateways resume, passage windows open now are held again."""
        return await self._change_lockdown(scope, building_id, None)

    async def lockdown_view(self, scope: Scope, building_id: str) -> LockdownView:
        scope.require_building(building_id, "building", building_id)
        building = await self._repo.building(building_id)
        if building is None:
            raise not_found("building", building_id)
        return await self._view(building)

    async def set_passage_schedule(
        self, scope: Scope, door_id: str, schedule: Schedule | None
    ) -> PassageScheduleView:
        """Set or remove a door's passage schedule. The passage scheduler tells the gateway at
        its next tick; stored here only, so nothing is sent for an edit that changes nothing
        now."""
        door = await self._repo.door(door_id)
        scope.require_building(door.building_id if door else None, "door", door_id)
        if door is None:
            raise not_found("door", door_id)
        before = snapshot(door)
        door.passage_schedule = schedule.model_dump(mode="json") if schedule is not None else None
        self._session.add(door)
        record_change(
            self._session,
            actor=scope.user.id,
            action="door.passage_schedule_set",
            target_type="door",
            target_id=door.id,
            before=before,
            after=snapshot(door),
            building_id=door.building_id,
            door_id=door.id,
        )
        await self._session.flush()  # the window below is computed from the stored schedule
        building = await self._repo.building(door.building_id)
        assert building is not None  # doors.building_id is a foreign key
        modes = await building_modes(self._repo, [building], utcnow())
        mode = modes[building.id].get(door.gateway_id, DesiredMode())
        until = dict(mode.holds).get(door.id)
        return PassageScheduleView(
            door_id=door.id,
            building_id=door.building_id,
            gateway_id=door.gateway_id,
            schedule=schedule,
            held_now=until is not None,
            held_until=datetime.fromtimestamp(until, UTC) if until is not None else None,
        )

    async def _change_lockdown(
        self, scope: Scope, building_id: str, reason: str | None
    ) -> LockdownView:
        """Start (``reason`` given) or lift (None) the lockdown of a building."""
        scope.require_building(building_id, "building", building_id)
        building = await self._repo.building(building_id, for_update=True)
        if building is None:
            raise not_found("building", building_id)
        starting = reason is not None
        if starting and building.lockdown_since is not None:
            raise ApiError(
                409,
                "already_in_lockdown",
                "the building is already in lockdown; lift it first to change the reason",
                building_id=building.id,
            )
        if not starting and building.lockdown_since is None:
            raise ApiError(
                409, "not_in_lockdown", "the building is not in lockdown", building_id=building.id
            )
        before = snapshot(building)
        now = utcnow()
        building.lockdown_since = now if starting else None
        building.lockdown_by = scope.user.id if starting else None
        building.lockdown_reason = reason
        staged = await stage_modes(self._repo, building, now)
        self._session.add(building)
        record_change(
            self._session,
            actor=scope.user.id,
            action="building.lockdown_started" if starting else "building.lockdown_lifted",
            target_type="building",
            target_id=building.id,
            before=before,
            after=snapshot(building),
            building_id=building.id,
        )
        await self._session.commit()  # before any gateway hears of it (module docstring)
        await self._publisher.publish(staged.version, staged.modes, now)
        await self._wait_for_acks(staged)
        return await self._view(building)

    async def _wait_for_acks(self, staged: StagedModes) -> None:
        """Wait, briefly, until every online gateway reports the new version as applied (an
        offline one acknowledges when it is back; GET shows it then)."""
        # Polling the relay's in-memory status: it has no per-request notification hook.
        deadline = time.monotonic() + ACK_WAIT_S
        for _ in range(math.ceil(ACK_WAIT_S / _ACK_POLL_S)):
            if not self._awaiting_ack(staged) or time.monotonic() >= deadline:
                return
            await asyncio.sleep(_ACK_POLL_S)

    def _awaiting_ack(self, staged: StagedModes) -> bool:
        for gateway_id in staged.modes:
            status = self._relay.gateway_status(gateway_id)
            if status is not None and status.online and (status.mode_version or 0) < staged.version:
                return True
        return False

    async def _view(self, building: Building) -> LockdownView:
        gateways = await self._repo.gateways([building.id])
        acks = [
            gateway_ack(g, self._relay.gateway_status(g.id), building.mode_version)
            for g in gateways
        ]
        return LockdownView(
            building_id=building.id,
            lockdown=building.lockdown_since is not None,
            since=as_utc(building.lockdown_since) if building.lockdown_since else None,
            by=building.lockdown_by,
            by_name=await self._repo.display_name(building.lockdown_by),
            reason=building.lockdown_reason,
            mode_version=building.mode_version,
            all_acknowledged=all(a.acknowledged for a in acks),
            gateways=acks,
        )
