"""Managing grants: rules, authorization and audit.

A grant is in a manager's scope when its target (a door, through its building, or a building)
is; anything else answers 404 ``grant_not_found`` exactly as a missing grant. A grant to a
group needs the group's owner to own the target's building (422 ``group_owner_mismatch``), so
one owner's groups never reach another owner's doors.

Revocation sets ``revoked_at``/``revoked_by`` and never deletes: the row is history. It
reaches the shares made from the grant, and the next decision sees it, because every unlock
reads the grants afresh from the database.
"""

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from api.access.grants_repository import GrantFilters, GrantsRepository
from api.access.models import Grant
from api.access.schemas import (
    GrantCreate,
    GrantOut,
    GrantUpdate,
    Page,
    TargetIn,
    decode_cursor,
    page_of,
    require_useful_schedule,
    require_window,
    resolve_instant,
    zone_named,
)
from api.audit.service import record_change, snapshot
from api.authz import Scope, not_found
from api.buildings.models import Building
from api.common import as_utc, new_id, utcnow
from api.errors import ApiError
from api.groups.service import GroupService
from api.offline.service import revoke_for_grants


class GrantsService:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self.repository = GrantsRepository(session)
        self._groups = GroupService(session)

    async def _target(self, scope: Scope, target: TargetIn) -> Building:
        """The building the target lies in, if the target exists and is in scope."""
        if target.door_id is not None:
            door = await self.repository.door(target.door_id)
            if door is None or not scope.has_building(door.building_id):
                raise not_found("door", target.door_id)
            building = await self.repository.building(door.building_id)
            assert building is not None  # doors.building_id is a foreign key
            return building
        assert target.building_id is not None  # TargetIn holds exactly one
        building = await self.repository.building(target.building_id)
        if building is None or not scope.has_building(building.id):
            raise not_found("building", target.building_id)
        return building

    async def _grant(self, scope: Scope, grant_id: str) -> tuple[Grant, str]:
        found = await self.repository.get(grant_id, for_update=True)
        if found is None or not scope.has_building(found[1]):
            raise not_found("grant", grant_id)
        return found

    def _audit(
        self,
        scope: Scope,
        action: str,
        grant: Grant,
        building_id: str,
        before: dict[str, Any] | None,
    ) -> None:
        record_change(
            self._session,
            actor=scope.user.id,
            action=action,
            target_type="grant",
            target_id=grant.id,
            before=before,
            after=snapshot(grant),
            building_id=building_id,
            door_id=grant.door_id,
        )

    async def create(self, scope: Scope, body: GrantCreate) -> GrantOut:
        """Grant a citizen or a group access to a door or a building."""
        building = await self._target(scope, body.target)
        if body.subject.user_id is not None:
            if await self.repository.user(body.subject.user_id) is None:
                raise not_found("user", body.subject.user_id)
        else:
            assert body.subject.group_id is not None  # SubjectIn holds exactly one
            group = await self._groups.readable_group(scope, body.subject.group_id)
            if group.owner_id != building.owner_id:
                raise ApiError(
                    422,
                    "group_owner_mismatch",
                    "the group belongs to another owner than the building",
                    group_id=group.id,
                    building_id=building.id,
                )
        if body.timezone is not None:
            zone_named(body.timezone)
        valid_from = resolve_instant(body.valid_from, body.timezone, "valid_from")
        valid_until = resolve_instant(body.valid_until, body.timezone, "valid_until")
        require_window(valid_from, valid_until)
        if valid_until is not None and valid_until <= utcnow():
            raise ApiError(
                422,
                "already_expired",
                "valid_until is in the past: the grant would never open anything",
                valid_until=valid_until.isoformat(),
            )
        require_useful_schedule(body.schedule)
        grant = Grant(
            id=new_id("grt"),
            user_id=body.subject.user_id,
            group_id=body.subject.group_id,
            door_id=body.target.door_id,
            building_id=body.target.building_id,
            valid_from=valid_from,
            valid_until=valid_until,
            schedule=body.schedule.model_dump(mode="json") if body.schedule else None,
            respect_holidays=body.respect_holidays,
            max_uses=body.max_uses,
            shareable=body.shareable,
            note=body.note,
            created_by=scope.user.id,
            created_at=utcnow(),
        )
        self.repository.add(grant)
        self._audit(scope, "grant.created", grant, building.id, None)
        return GrantOut.of(grant, building.id)

    async def get(self, scope: Scope, grant_id: str) -> GrantOut:
        found = await self.repository.get(grant_id)
        if found is None or not scope.has_building(found[1]):
            raise not_found("grant", grant_id)
        return GrantOut.of(*found)

    async def list(
        self, scope: Scope, filters: GrantFilters, limit: int, cursor: str | None
    ) -> Page[GrantOut]:
        """Grants in scope, oldest first. ``door_id`` matches grants on that door;
        ``building_id`` every grant whose target lies in the building (the building itself or
        one of its doors); ``user_id`` and ``group_id`` the direct subject."""
        after = decode_cursor(cursor)
        buildings = scope.visible_buildings
        rows = await self.repository.find(buildings, filters, after, limit)
        return page_of(
            rows, limit, lambda row: (row[0].created_at, row[0].id), lambda row: GrantOut.of(*row)
        )

    async def update(self, scope: Scope, grant_id: str, body: GrantUpdate) -> GrantOut:
        """Change window, schedule, use limit, shareability or note of a live grant."""
        grant, building_id = await self._grant(scope, grant_id)
        if grant.revoked_at is not None:
            raise ApiError(409, "grant_revoked", "a revoked grant cannot be changed")
        if grant.booking_id is not None:
            raise ApiError(
                409,
                "grant_from_booking",
                "this grant follows a booking; change the booking in its booking system",
                booking_id=grant.booking_id,
            )
        fields = body.model_fields_set
        if body.timezone is not None:
            zone_named(body.timezone)
        valid_from = grant.valid_from
        valid_until = grant.valid_until
        if "valid_from" in fields:
            valid_from = resolve_instant(body.valid_from, body.timezone, "valid_from")
        if "valid_until" in fields:
            valid_until = resolve_instant(body.valid_until, body.timezone, "valid_until")
        require_window(
            as_utc(valid_from) if valid_from else None, as_utc(valid_until) if valid_until else None
        )
        if "schedule" in fields:
            require_useful_schedule(body.schedule)

        before = snapshot(grant)
        grant.valid_from = valid_from
        grant.valid_until = valid_until
        if "schedule" in fields:
            grant.schedule = body.schedule.model_dump(mode="json") if body.schedule else None
        if "max_uses" in fields:
            # Lowering it to or below use_count is allowed: it ends the grant's uses.
            grant.max_uses = body.max_uses
        if body.respect_holidays is not None:
            grant.respect_holidays = body.respect_holidays
        if body.shareable is not None:
            grant.shareable = body.shareable
        if body.note is not None:
            grant.note = body.note
        if snapshot(grant) != before:
            self._audit(scope, "grant.updated", grant, building_id, before)
        return GrantOut.of(grant, building_id)

    async def revoke(self, scope: Scope, grant_id: str) -> GrantOut:
        """Revoke a grant and every share made from it (and shares of those). Idempotent:
        revoking again changes nothing already revoked."""
        grant, building_id = await self._grant(scope, grant_id)
        now = utcnow()
        self._revoke_one(scope, grant, building_id, now)
        seen = {grant.id}
        frontier = [grant.id]
        while frontier:
            shares = [s for s in await self.repository.shares_of(frontier) if s.id not in seen]
            for share in shares:
                self._revoke_one(scope, share, building_id, now)
            seen.update(s.id for s in shares)
            frontier = [s.id for s in shares]
        await self.repository.flush()
        # Offline tokens issued on these grants die with them; the revocation publisher
        # sends the gateways their new signed lists after this transaction commits.
        await revoke_for_grants(self._session, sorted(seen), actor=scope.user.id)
        return GrantOut.of(grant, building_id)

    def _revoke_one(self, scope: Scope, grant: Grant, building_id: str, now: datetime) -> None:
        if grant.revoked_at is not None:
            return
        before = snapshot(grant)
        grant.revoked_at = now
        grant.revoked_by = scope.user.id
        self._audit(scope, "grant.revoked", grant, building_id, before)
