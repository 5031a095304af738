"""Buildings, doors, holidays and door status: the rules, the scope checks, the audit.

Every lookup goes through the caller's Scope: an object outside it answers 404 exactly like a
missing one (api/authz.py), and so does the parent of an object being created.
"""

from datetime import date
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from api.audit.service import record_change, snapshot
from api.authz import Scope, not_found
from api.buildings.models import Building, Door, DoorStatus, Holiday
from api.buildings.repository import BuildingRepository, DoorRepository, HolidayRepository
from api.buildings.schemas import (
    BuildingCreate,
    BuildingUpdate,
    DoorCreate,
    DoorUpdate,
    HolidayCreate,
)
from api.common import new_id
from api.errors import ApiError
from api.owners.schemas import Page, decode_cursor, page_of
from api.owners.service import OwnerService
from api.relay.mqtt import MqttRelay


def _pair(cursor: str | None) -> tuple[str, str] | None:
    if not cursor:
        return None
    name, object_id = decode_cursor(cursor, 2)
    return name, object_id


class _Audited:
    """Shared by the services below: audit rows carry the building (and door), so that
    managers of the building see them in GET /audit."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    def _audit(
        self,
        scope: Scope,
        action: str,
        target_type: str,
        target_id: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        *,
        building_id: str | None,
        door_id: str | None = None,
    ) -> None:
        record_change(
            self._session,
            actor=scope.user.id,
            action=action,
            target_type=target_type,
            target_id=target_id,
            before=before,
            after=after,
            building_id=building_id,
            door_id=door_id,
        )


class BuildingService(_Audited):
    def __init__(self, session: AsyncSession) -> None:
        super().__init__(session)
        self._repo = BuildingRepository(session)
        self._holidays = HolidayRepository(session)

    async def get(self, scope: Scope, building_id: str) -> Building:
        """One building in the caller's scope; 404 building_not_found otherwise."""
        building = await self._repo.get(building_id)
        if building is None:
            raise not_found("building", building_id)
        scope.require_building(building.id, "building", building_id)
        return building

    async def create(self, scope: Scope, body: BuildingCreate) -> Building:
        """Create a building under an owner the caller manages."""
        owner = await self._repo.get_owner(body.owner_id)
        if owner is None:
            raise not_found("owner", body.owner_id)
        scope.require_owner(owner.id, "owner", body.owner_id)
        building = Building(
            id=new_id("bld"), name=body.name, owner_id=body.owner_id, timezone=body.timezone
        )
        await self._repo.save(building)
        self._audit(
            scope,
            "building.created",
            "building",
            building.id,
            None,
            snapshot(building),
            building_id=building.id,
        )
        return building

    async def page(self, scope: Scope, limit: int, cursor: str | None) -> Page[Building]:
        """The buildings in the caller's scope, by name."""
        rows = await self._repo.page(scope.visible_buildings, _pair(cursor), limit + 1)
        return page_of(list(rows), limit, lambda b: (b.name, b.id))

    async def update(self, scope: Scope, building_id: str, body: BuildingUpdate) -> Building:
        """Rename, change the timezone, or (administrators) move to another owner."""
        building = await self.get(scope, building_id)
        changes = {k: v for k, v in body.changes().items() if getattr(building, k) != v}
        if "owner_id" in changes:
            # Moving a building moves it out of (and into) other managers' scopes.
            scope.require_admin()
            if await self._repo.get_owner(changes["owner_id"]) is None:
                raise not_found("owner", changes["owner_id"])
        if not changes:
            return building
        before = snapshot(building)
        for field, value in changes.items():
            setattr(building, field, value)
        await self._repo.save(building)
        self._audit(
            scope,
            "building.updated",
            "building",
            building.id,
            before,
            snapshot(building),
            building_id=building.id,
        )
        return building

    async def delete(self, scope: Scope, building_id: str) -> None:
        """Delete a building without doors, gateways or grants; its holidays and building
        manager scopes go with it."""
        building = await self.get(scope, building_id)
        dependents = await self._repo.dependents(building.id)
        if dependents:
            raise ApiError(
                409,
                "building_not_empty",
                "the building still has doors, gateways or grants; remove them first",
                dependents=dependents,
            )
        holidays = await self._repo.holidays_of(building.id)
        before = snapshot(building) or {}
        before["holidays"] = [snapshot(h) for h in holidays]
        await OwnerService(self._session).drop_scopes(scope, building_id=building.id)
        await self._repo.delete_holidays(building.id)
        await self._repo.delete(building)
        self._audit(
            scope,
            "building.deleted",
            "building",
            building.id,
            before,
            None,
            building_id=building.id,
        )

    # Holidays
    async def add_holiday(self, scope: Scope, building_id: str, body: HolidayCreate) -> Holiday:
        """A date the building is closed for scheduled access; 409 holiday_exists when the
        date already has one."""
        building = await self.get(scope, building_id)
        holiday = Holiday(id=new_id("hol"), building_id=building.id, date=body.date, name=body.name)
        if await self._holidays.on_date(building.id, body.date) is not None or not (
            await self._holidays.insert(holiday)
        ):
            raise ApiError(
                409,
                "holiday_exists",
                f"the building already has a holiday on {body.date.isoformat()}",
                date=body.date.isoformat(),
            )
        self._audit(
            scope,
            "holiday.created",
            "holiday",
            holiday.id,
            None,
            snapshot(holiday),
            building_id=building.id,
        )
        return holiday

    async def holidays(
        self,
        scope: Scope,
        building_id: str,
        start: date | None,
        end: date | None,
        limit: int,
        cursor: str | None,
    ) -> Page[Holiday]:
        """The building's holidays between ``start`` and ``end`` (inclusive), by date."""
        building = await self.get(scope, building_id)
        if start is not None and end is not None and start > end:
            raise ApiError(422, "invalid_range", "'from' must not be after 'to'")
        after = None
        if cursor:
            try:
                after = date.fromisoformat(decode_cursor(cursor, 1)[0])
            except ValueError:
                raise ApiError(
                    422, "invalid_cursor", "the cursor is not one this listing gave out"
                ) from None
        rows = await self._holidays.page(building.id, start, end, after, limit + 1)
        return page_of(list(rows), limit, lambda h: (h.date.isoformat(),))

    async def delete_holiday(self, scope: Scope, holiday_id: str) -> None:
        """Remove a holiday of a building in scope."""
        holiday = await self._holidays.get(holiday_id)
        if holiday is None:
            raise not_found("holiday", holiday_id)
        scope.require_building(holiday.building_id, "holiday", holiday_id)
        before = snapshot(holiday)
        await self._holidays.delete(holiday)
        self._audit(
            scope,
            "holiday.deleted",
            "holiday",
            holiday.id,
            before,
            None,
            building_id=holiday.building_id,
        )


class DoorService(_Audited):
    def __init__(self, session: AsyncSession, relay: MqttRelay) -> None:
        super().__init__(session)
        self._repo = DoorRepository(session)
        self._buildings = BuildingService(session)
        self._relay = relay

    async def get(self, scope: Scope, door_id: str) -> Door:
        """One door of a building in scope; 404 door_not_found otherwise."""
        door = await self._repo.get(door_id)
        if door is None:
            raise not_found("door", door_id)
        scope.require_building(door.building_id, "door", door_id)
        return door

    async def create(self, scope: Scope, building_id: str, body: DoorCreate) -> Door:
        """A door on one channel of a gateway of the same building."""
        building = await self._buildings.get(scope, building_id)
        gateway = await self._repo.get_gateway(body.gateway_id)
        if gateway is None:
            raise not_found("gateway", body.gateway_id)
        scope.require_building(gateway.building_id, "gateway", body.gateway_id)
        if gateway.building_id != building.id:
            raise ApiError(
                422,
                "gateway_in_other_building",
                "the gateway belongs to another building; a door uses a gateway of its own "
                "building",
                gateway_id=gateway.id,
            )
        door = Door(
            id=body.id or new_id("door"),
            name=body.name,
            building_id=building.id,
            gateway_id=gateway.id,
            channel=body.channel,
            default_unlock_seconds=body.default_unlock_seconds,
        )
        await self._refuse_duplicate(door)
        if not await self._repo.insert(door):
            await self._refuse_duplicate(door)  # lost a race: say which
            raise ApiError(409, "door_conflict", "another door was created at the same time")
        self._audit(
            scope,
            "door.created",
            "door",
            door.id,
            None,
            snapshot(door),
            building_id=building.id,
            door_id=door.id,
        )
        return door

    async def page(
        self, scope: Scope, building_id: str, limit: int, cursor: str | None
    ) -> Page[Door]:
        """The doors of a building in scope, by name."""
        building = await self._buildings.get(scope, building_id)
        rows = await self._repo.page(building.id, _pair(cursor), limit + 1)
        return page_of(list(rows), limit, lambda d: (d.name, d.id))

    async def update(self, scope: Scope, door_id: str, body: DoorUpdate) -> Door:
        """Rename, enable or disable, or change the default unlock time."""
        door = await self.get(scope, door_id)
        changes = {k: v for k, v in body.changes().items() if getattr(door, k) != v}
        if not changes:
            return door
        before = snapshot(door)
        for field, value in changes.items():
            setattr(door, field, value)
        await self._repo.save(door)
        self._audit(
            scope,
            "door.updated",
            "door",
            door.id,
            before,
            snapshot(door),
            building_id=door.building_id,
            door_id=door.id,
        )
        return door

    async def delete(self, scope: Scope, door_id: str) -> None:
        """Delete a door no grant, public-hours rule or offline token names (409 door_in_use
        otherwise: disable it, or remove the rules first)."""
        door = await self.get(scope, door_id)
        references = await self._repo.references(door.id)
        if references:
            raise ApiError(
                409,
                "door_in_use",
                "grants or public-hours rules still name this door; remove them or disable "
                "the door instead",
                references=references,
            )
        before = snapshot(door)
        await self._repo.delete(door)
        self._audit(
            scope,
            "door.deleted",
            "door",
            door.id,
            before,
            None,
            building_id=door.building_id,
            door_id=door.id,
        )

    async def status(self, scope: Scope, door_id: str) -> tuple[Door, DoorStatus | None, bool]:
        """The door, its last reported state (None before the first event) and whether its
        gateway is connected now."""
        door = await self.get(scope, door_id)
        status = await self._repo.status(door.id)
        return door, status, self._relay.gateway_online(door.gateway_id)

    async def _refuse_duplicate(self, door: Door) -> None:
        if await self._repo.get(door.id) is not None:
            raise ApiError(409, "door_exists", f"a door with id {door.id!r} exists already")
        taken = await self._repo.on_channel(door.gateway_id, door.channel)
        if taken is not None:
            raise ApiError(
                409,
                "channel_taken",
                f"channel {door.channel} of gateway {door.gateway_id!r} already drives a door",
                gateway_id=door.gateway_id,
                channel=door.channel,
            )
