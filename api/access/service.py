"""Access decisions with the facts loaded: the bridge between the database and the pure
policy function. Used by the unlock endpoint and the citizen views."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from api.access import policy
from api.access.models import Grant
from api.access.repository import AccessRepository
from api.buildings.models import Building, Door
from api.common import as_utc
from api.identity.models import User
from api.public_access.models import PublicAccess
from api.schedules import Schedule


@dataclass(frozen=True, slots=True)
class DoorAccess:
    door: Door
    building: Building
    decision: policy.Decision


def age_on(birth: date, today: date) -> int:
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def _aware(value: datetime | None) -> datetime | None:
    return as_utc(value) if value is not None else None


def rule_from_grant(grant: Grant, parent: Grant | None = None) -> policy.AccessRule:
    kind = policy.RuleKind.GRANT
    if grant.parent_grant_id is not None:
        kind = policy.RuleKind.SHARE
    elif grant.booking_id is not None:
        kind = policy.RuleKind.BOOKING
    return policy.AccessRule(
        id=grant.id,
        kind=kind,
        valid_from=_aware(grant.valid_from),
        valid_until=_aware(grant.valid_until),
        schedule=Schedule.model_validate(grant.schedule) if grant.schedule else None,
        respect_holidays=grant.respect_holidays,
        max_uses=grant.max_uses,
        use_count=grant.use_count,
        revoked_at=_aware(grant.revoked_at),
        parent=rule_from_grant(parent) if parent is not None else None,
    )


def rule_from_public_access(
    rule: PublicAccess, user: User, group_ids: set[str], today: date
) -> policy.AccessRule:
    eligible = True
    if rule.min_age is not None:
        eligible = user.birth_date is not None and age_on(user.birth_date, today) >= rule.min_age
    if rule.group_id is not None:
        eligible = eligible and rule.group_id in group_ids
    return policy.AccessRule(
        id=rule.id,
        kind=policy.RuleKind.PUBLIC,
        schedule=Schedule.model_validate(rule.schedule),
        respect_holidays=rule.respect_holidays,
        eligible=eligible,
    )


def door_facts(door: Door, building: Building, holidays: Iterable[date]) -> policy.DoorFacts:
    return policy.DoorFacts(
        door_id=door.id,
        timezone=building.timezone,
        enabled=door.enabled,
        lockdown=building.lockdown_since is not None,
        holidays=frozenset(holidays),
    )


class AccessService:
    def __init__(self, session: AsyncSession) -> None:
        self.repository = AccessRepository(session)

    async def decide(
        self, user: User, door_id: str, now: datetime
    ) -> tuple[Door, Building, policy.Decision] | None:
        """The decision for one door, or None when the door does not exist."""
        found = await self.repository.door_with_building(door_id)
        if found is None:
            return None
        door, building = found
        grants = await self.repository.grants_for_door(user.id, door.id, building.id)
        public = await self.repository.public_access_for_door(door.id)
        rules = [rule_from_grant(g, p) for g, p in grants]
        if public:
            group_ids = await self.repository.group_ids(user.id)
            today = now.date()
            rules += [rule_from_public_access(r, user, group_ids, today) for r in public]
        start, end = self.repository.horizon(now)
        holidays = (await self.repository.holidays([building.id], start, end))[building.id]
        return door, building, policy.decide(door_facts(door, building, holidays), rules, now)

    async def my_doors(self, user: User, now: datetime) -> list[DoorAccess]:
        """Every door the user has any rule for, each with its decision at ``now``."""
        grants = await self.repository.all_grants(user.id)
        public = await self.repository.all_public_access()
        door_ids = {g.door_id for g, _ in grants if g.door_id} | {r.door_id for r in public}
        building_ids = {g.building_id for g, _ in grants if g.building_id}
        doors = await self.repository.doors(sorted(door_ids), sorted(building_ids))
        start, end = self.repository.horizon(now)
        holidays = await self.repository.holidays(sorted({b.id for _, b in doors}), start, end)
        group_ids = await self.repository.group_ids(user.id) if public else set()
        today = now.date()
        results: list[DoorAccess] = []
        for door, building in doors:
            rules = [
                rule_from_grant(g, p)
                for g, p in grants
                if g.door_id == door.id or g.building_id == building.id
            ]
            rules += [
                rule_from_public_access(r, user, group_ids, today)
                for r in public
                if r.door_id == door.id
            ]
            facts = door_facts(door, building, holidays.get(building.id, ()))
            results.append(DoorAccess(door, building, policy.decide(facts, rules, now)))
        return results
