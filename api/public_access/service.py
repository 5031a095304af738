"""Public opening hours: rules, authorization and audit.

A rule is in a manager's scope when its door's building is; otherwise 404, as if missing.
A rule limited to a group needs the group's owner to own the building, like a grant to a group.
"""

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from api.access.schemas import Page, decode_cursor, page_of, require_useful_schedule
from api.audit.service import record_change, snapshot
from api.authz import Scope, not_found
from api.buildings.models import Building
from api.common import new_id, utcnow
from api.errors import ApiError
from api.groups.service import GroupService
from api.public_access.models import PublicAccess
from api.public_access.repository import PublicAccessRepository
from api.public_access.schemas import PublicAccessCreate, PublicAccessOut, PublicAccessUpdate


class PublicAccessService:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self.repository = PublicAccessRepository(session)
        self._groups = GroupService(session)

    async def _building_of_door(self, scope: Scope, door_id: str) -> Building:
        found = await self.repository.door(door_id)
        if found is None or not scope.has_building(found[1].id):
            raise not_found("door", door_id)
        return found[1]

    async def _rule(self, scope: Scope, rule_id: str) -> tuple[PublicAccess, Building]:
        found = await self.repository.get(rule_id, for_update=True)
        if found is None or not scope.has_building(found[1].id):
            raise not_found("public_access", rule_id)
        return found

    async def _check_group(self, scope: Scope, group_id: str, building: Building) -> None:
        group = await self._groups.readable_group(scope, group_id)
        if group.owner_id != building.owner_id:
            raise ApiError(
                422,
                "group_owner_mismatch",
                "the group belongs to another owner than the building",
                group_id=group.id,
                building_id=building.id,
            )

    def _audit(
        self,
        scope: Scope,
        action: str,
        rule: PublicAccess,
        building: Building,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> None:
        record_change(
            self._session,
            actor=scope.user.id,
            action=action,
            target_type="public_access",
            target_id=rule.id,
            before=before,
            after=after,
            building_id=building.id,
            door_id=rule.door_id,
        )

    async def create(self, scope: Scope, door_id: str, body: PublicAccessCreate) -> PublicAccessOut:
        """Open a door to the public at set hours, optionally for an age or a group only."""
        building = await self._building_of_door(scope, door_id)
        if body.group_id is not None:
            await self._check_group(scope, body.group_id, building)
        require_useful_schedule(body.schedule)
        rule = PublicAccess(
            id=new_id("pub"),
            door_id=door_id,
            schedule=body.schedule.model_dump(mode="json"),
            min_age=body.min_age,
            group_id=body.group_id,
            respect_holidays=body.respect_holidays,
            created_by=scope.user.id,
            created_at=utcnow(),
        )
        self.repository.add(rule)
        self._audit(scope, "public_access.created", rule, building, None, snapshot(rule))
        return PublicAccessOut.of(rule, building)

    async def list(
        self, scope: Scope, door_id: str, limit: int, cursor: str | None
    ) -> Page[PublicAccessOut]:
        after = decode_cursor(cursor)
        building = await self._building_of_door(scope, door_id)
        rules = await self.repository.for_door(door_id, after, limit)
        return page_of(
            rules,
            limit,
            lambda r: (r.created_at, r.id),
            lambda r: PublicAccessOut.of(r, building),
        )

    async def get(self, scope: Scope, rule_id: str) -> PublicAccessOut:
        found = await self.repository.get(rule_id)
        if found is None or not scope.has_building(found[1].id):
            raise not_found("public_access", rule_id)
        return PublicAccessOut.of(*found)

    async def update(self, scope: Scope, rule_id: str, body: PublicAccessUpdate) -> PublicAccessOut:
        """Change schedule, eligibility, holidays rule or switch the rule on or off."""
        rule, building = await self._rule(scope, rule_id)
        fields = body.model_fields_set
        if "group_id" in fields and body.group_id is not None:
            await self._check_group(scope, body.group_id, building)
        before = snapshot(rule)
        if body.schedule is not None:
            require_useful_schedule(body.schedule)
            rule.schedule = body.schedule.model_dump(mode="json")
        if "min_age" in fields:
            rule.min_age = body.min_age
        if "group_id" in fields:
            rule.group_id = body.group_id
        if body.respect_holidays is not None:
            rule.respect_holidays = body.respect_holidays
        if body.enabled is not None:
            rule.enabled = body.enabled
        after = snapshot(rule)
        if after != before:
            self._audit(scope, "public_access.updated", rule, building, before, after)
        return PublicAccessOut.of(rule, building)

    async def delete(self, scope: Scope, rule_id: str) -> None:
        """Delete a rule (audited with its last state)."""
        rule, building = await self._rule(scope, rule_id)
        before = snapshot(rule)
        await self.repository.delete(rule)
        self._audit(scope, "public_access.deleted", rule, building, before, None)
