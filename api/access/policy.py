"""The access decision: may this citizen open this door at this instant, and if not, why not.

One pure function, ``decide``, used by the unlock endpoint and the citizen views alike. The
caller loads the facts (door, building, the citizen's rules) and passes them in; nothing here
touches the database or the clock, which is what makes it table- and property-testable.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

from api.schedules import Schedule, first, schedule_state


class DenyReason(StrEnum):
    """Stable reason codes shown to citizens and written to the audit log."""

    NO_GRANT = "no_grant"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    OUTSIDE_SCHEDULE = "outside_schedule"
    HOLIDAY = "holiday"
    REVOKED = "revoked"
    USES_EXHAUSTED = "uses_exhausted"
    LOCKDOWN = "lockdown"
    NOT_ELIGIBLE = "not_eligible"
    DOOR_DISABLED = "door_disabled"


class RuleKind(StrEnum):
    GRANT = "grant"
    SHARE = "share"
    BOOKING = "booking"
    PUBLIC = "public"


@dataclass(frozen=True, slots=True)
class AccessRule:
    """A grant, share, booking or public-hours rule, normalized for the decision."""

    id: str
    kind: RuleKind = RuleKind.GRANT
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    schedule: Schedule | None = None
    respect_holidays: bool = True
    max_uses: int | None = None
    use_count: int = 0
    revoked_at: datetime | None = None
    eligible: bool = True
    """False when the citizen does not meet the rule's eligibility (public hours: age, group)."""
    parent: "AccessRule | None" = None
    """For a share: the grant it was shared from; the share lives only while it does."""


@dataclass(frozen=True, slots=True)
class DoorFacts:
    door_id: str
    timezone: str
    enabled: bool = True
    lockdown: bool = False
    holidays: frozenset[date] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: DenyReason | None = None
    rule_id: str | None = None
    rule_kind: RuleKind | None = None
    next_window: datetime | None = None
    """When refused: the next instant the citizen may open the door, if one is known."""
    limited: bool = False
    """When allowed by a rule with a use limit: the unlock must consume one use."""


# When every rule refuses, the reason that helps the citizen most wins: "come back later"
# before "it ended", before "you have nothing".
_PRIORITY = (
    DenyReason.HOLIDAY,
    DenyReason.OUTSIDE_SCHEDULE,
    DenyReason.NOT_YET_VALID,
    DenyReason.USES_EXHAUSTED,
    DenyReason.EXPIRED,
    DenyReason.REVOKED,
    DenyReason.NOT_ELIGIBLE,
)


@dataclass(frozen=True, slots=True)
class _RuleVerdict:
    reason: DenyReason | None
    next_window: datetime | None = None


_DEAD = frozenset({DenyReason.REVOKED, DenyReason.EXPIRED, DenyReason.USES_EXHAUSTED})
"""Parent states that end a share for good: it dies with its original."""

_SHARE_SEARCH_STEPS = 16
"""How many times the next window of a share is moved forward to meet its parent's."""


def _evaluate_own(
    rule: AccessRule, now: datetime, zone: ZoneInfo, holidays: frozenset[date]
) -> _RuleVerdict:
    """The rule on its own, ignoring any parent."""
    if rule.revoked_at is not None and rule.revoked_at <= now:
        return _RuleVerdict(DenyReason.REVOKED)
    if not rule.eligible:
        return _RuleVerdict(DenyReason.NOT_ELIGIBLE)
    if rule.valid_until is not None and rule.valid_until <= now:
        return _RuleVerdict(DenyReason.EXPIRED)
    if rule.max_uses is not None and rule.use_count >= rule.max_uses:
        return _RuleVerdict(DenyReason.USES_EXHAUSTED)
    not_yet = rule.valid_from is not None and rule.valid_from > now
    if rule.schedule is None:
        if not_yet:
            return _RuleVerdict(DenyReason.NOT_YET_VALID, rule.valid_from)
        return _RuleVerdict(None)
    active_holidays = holidays if rule.respect_holidays else frozenset()
    if not_yet:
        assert rule.valid_from is not None
        # The first opening at or after the start of validity, not "now".
        _, _, upcoming = schedule_state(
            rule.schedule, rule.valid_from, zone, active_holidays, not_after=rule.valid_until
        )
        return _RuleVerdict(DenyReason.NOT_YET_VALID, upcoming)
    is_open, holiday, upcoming = schedule_state(
        rule.schedule, now, zone, active_holidays, not_after=rule.valid_until
    )
    if is_open:
        return _RuleVerdict(None)
    return _RuleVerdict(DenyReason.HOLIDAY if holiday else DenyReason.OUTSIDE_SCHEDULE, upcoming)


def _evaluate(
    rule: AccessRule, now: datetime, zone: ZoneInfo, holidays: frozenset[date]
) -> _RuleVerdict:
    """The rule at ``now``; a share also needs its parent, now and at its next window."""
    if rule.parent is None:
        return _evaluate_own(rule, now, zone, holidays)
    parent_now = _evaluate(rule.parent, now, zone, holidays)
    if parent_now.reason in _DEAD:
        return _RuleVerdict(DenyReason.REVOKED)
    own_now = _evaluate_own(rule, now, zone, holidays)
    reason = own_now.reason or parent_now.reason
    if reason is None:
        return _RuleVerdict(None)
    # The next window is the first instant both the share and its parent allow: move the
    # candidate forward to whichever of the two opens later until they agree.
    candidate = now
    own, parent = own_now, parent_now
    for _ in range(_SHARE_SEARCH_STEPS):
        if own.reason is None and parent.reason is None:
            return _RuleVerdict(reason, candidate)
        later = [v.next_window for v in (own, parent) if v.reason is not None]
        if any(t is None for t in later):
            break
        step = max(t for t in later if t is not None)
        if step <= candidate:
            break
        candidate = step
        own = _evaluate_own(rule, candidate, zone, holidays)
        parent = _evaluate(rule.parent, candidate, zone, holidays)
        if parent.reason in _DEAD or own.reason in _DEAD:
            break
    return _RuleVerdict(reason, None)


class VerdictCache:
    """Verdicts of rules already evaluated at one instant for one building (same timezone and
    holidays), so a building-wide rule is evaluated once, not once per door of the building.
    Create one per (building, instant); sharing one across buildings would be wrong."""

    __slots__ = ("_verdicts",)

    def __init__(self) -> None:
        self._verdicts: dict[str, _RuleVerdict] = {}


def decide(
    door: DoorFacts,
    rules: Sequence[AccessRule],
    now: datetime,
    cache: VerdictCache | None = None,
) -> Decision:
    """Allow when any rule is live at ``now``; otherwise the most helpful reason and the next
    window. Door state (disabled, lockdown) overrides every rule."""
    if not door.enabled:
        return Decision(False, DenyReason.DOOR_DISABLED)
    if door.lockdown:
        return Decision(False, DenyReason.LOCKDOWN)
    if not rules:
        return Decision(False, DenyReason.NO_GRANT)
    zone = ZoneInfo(door.timezone)
    reasons: set[DenyReason] = set()
    windows: list[datetime | None] = []
    for rule in rules:
        verdict = cache._verdicts.get(rule.id) if cache is not None else None
        if verdict is None:
            verdict = _evaluate(rule, now, zone, door.holidays)
            if cache is not None:
                cache._verdicts[rule.id] = verdict
        if verdict.reason is None:
            return Decision(
                True, rule_id=rule.id, rule_kind=rule.kind, limited=rule.max_uses is not None
            )
        reasons.add(verdict.reason)
        windows.append(verdict.next_window)
    reason = next((r for r in _PRIORITY if r in reasons), DenyReason.NO_GRANT)
    return Decision(False, reason, next_window=first(windows))
