"""Access decisions with the facts loaded: the bridge between the database and the pure
policy function. Used by the unlock endpoint and the citizen views."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from api.access import policy
from api.access.facts import (
    AccessFacts,
    BuildingRow,
    CallerRow,
    DoorRow,
    load_caller_facts,
    load_my_facts,
)
from api.access.repository import AccessRepository
from api.common import as_utc
from api.identity.models import User
from api.schedules import Schedule


@dataclass(frozen=True, slots=True)
class DoorAccess:
    door: DoorRow
    building: BuildingRow
    decision: policy.Decision


def age_on(birth: date, today: date) -> int:
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def _aware(value: datetime | None) -> datetime | None:
    return as_utc(value) if value is not None else None


class GrantLike(Protocol):
    """A grant row, as an ORM object or as fetched by load_access_facts."""

    @property
    def id(self) -> str: ...
    @property
    def parent_grant_id(self) -> str | None: ...
    @property
    def booking_id(self) -> str | None: ...
    @property
    def valid_from(self) -> datetime | None: ...
    @property
    def valid_until(self) -> datetime | None: ...
    @property
    def schedule(self) -> dict[str, Any] | None: ...
    @property
    def respect_holidays(self) -> bool: ...
    @property
    def max_uses(self) -> int | None: ...
    @property
    def use_count(self) -> int: ...
    @property
    def revoked_at(self) -> datetime | None: ...


class Person(Protocol):
    """What a decision needs of the caller: a ``User`` or a ``CallerRow``."""

    @property
    def id(self) -> str: ...
    @property
    def birth_date(self) -> date | None: ...


class PublicAccessLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def schedule(self) -> dict[str, Any]: ...
    @property
    def min_age(self) -> int | None: ...
    @property
    def group_id(self) -> str | None: ...
    @property
    def respect_holidays(self) -> bool: ...


def rule_from_grant(grant: GrantLike, parent: GrantLike | None = None) -> policy.AccessRule:
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
    rule: PublicAccessLike, user: Person, group_ids: Iterable[str], today: date
) -> policy.AccessRule:
    eligible = True
    if rule.min_age is not None:
        eligible = user.birth_date is not None and age_on(user.birth_date, today) >= rule.min_age
    if rule.group_id is not None:
        eligible = eligible and rule.group_id in set(group_ids)
    return policy.AccessRule(
        id=rule.id,
        kind=policy.RuleKind.PUBLIC,
        schedule=Schedule.model_validate(rule.schedule),
        respect_holidays=rule.respect_holidays,
        eligible=eligible,
    )


class AccessService:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self.repository = AccessRepository(session)

    async def decide(
        self, user: Person, door_id: str, now: datetime
    ) -> tuple[DoorRow, policy.Decision] | None:
        """The decision for one door (one database round trip), or None for no such door."""
        _, decided = await self.decide_for(user.id, door_id, now, user)
        return decided

    async def decide_for(
        self, user_id: str, door_id: str, now: datetime, user: Person | None = None
    ) -> tuple[CallerRow | None, tuple[DoorRow, policy.Decision] | None]:
        """The user ``user_id`` as the database knows it (None: no such user) and the
        decision for one door (None: no such door), in one database round trip. ``user``:
        the caller already loaded (its birth date is used instead of the row's)."""
        first_day, last_day = self.repository.horizon(now)
        caller, facts = await load_caller_facts(
            self._session, user_id, door_id, first_day, last_day
        )
        person = user if user is not None else caller
        if facts is None or person is None:
            return caller, None
        return caller, (facts.door, self._decide(person, facts, now))

    @staticmethod
    def _decide(user: Person, facts: AccessFacts, now: datetime) -> policy.Decision:
        today = now.date()
        rules = [rule_from_grant(g, g.parent) for g in facts.grants]
        rules += [rule_from_public_access(p, user, facts.group_ids, today) for p in facts.public]
        door = facts.door
        door_facts = policy.DoorFacts(
            door_id=door.id,
            timezone=door.timezone,
            enabled=door.enabled,
            lockdown=door.lockdown,
            holidays=facts.holidays,
        )
        return policy.decide(door_facts, rules, now)

    async def my_doors(self, user: User, now: datetime) -> list[DoorAccess]:
        """Every door the user has any rule for, each with its decision at ``now``, ordered
        by building and door name. One database round trip; each rule is built once."""
        first_day, last_day = self.repository.horizon(now)
        facts = await load_my_facts(self._session, user.id, first_day, last_day)
        today = now.date()
        door_rules: dict[str, list[policy.AccessRule]] = {}
        building_rules: dict[str, list[policy.AccessRule]] = {}
        for grant in facts.grants:
            rule = rule_from_grant(grant, grant.parent)
            if grant.door_id is not None:
                door_rules.setdefault(grant.door_id, []).append(rule)
            elif grant.building_id is not None:
                building_rules.setdefault(grant.building_id, []).append(rule)
        for public in facts.public:
            door_rules.setdefault(public.door_id, []).append(
                rule_from_public_access(public, user, facts.group_ids, today)
            )
        results: list[DoorAccess] = []
        caches: dict[str, policy.VerdictCache] = {}
        for door, building in sorted(facts.doors, key=lambda d: (d[1].name, d[0].name, d[0].id)):
            rules = building_rules.get(building.id, []) + door_rules.get(door.id, [])
            door_facts = policy.DoorFacts(
                door_id=door.id,
                timezone=door.timezone,
                enabled=door.enabled,
                lockdown=door.lockdown,
                holidays=facts.holidays.get(building.id, frozenset()),
            )
            cache = caches.setdefault(building.id, policy.VerdictCache())
            decision = policy.decide(door_facts, rules, now, cache)
            results.append(DoorAccess(door, building, decision))
        return results
