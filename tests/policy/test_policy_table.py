"""Table-driven tests of the pure access decision (api/access/policy.decide): every deny
reason, which reason wins when several rules fail, Europe/Oslo's daylight-saving days,
midnight-crossing ranges, holidays, overlapping grants, revocation, use limits, door state and
shares. No database, no clock: every case names its instant."""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from api.access.policy import AccessRule, Decision, DenyReason, DoorFacts, RuleKind, decide
from api.schedules import Schedule, TimeRange

OSLO = ZoneInfo("Europe/Oslo")
SPRING = date(2025, 3, 30)  # last Sunday of March: 02:00 CET -> 03:00 CEST
AUTUMN = date(2025, 10, 26)  # last Sunday of October: 03:00 CEST -> 02:00 CET
WEDNESDAY = date(2025, 6, 11)
FRIDAY = date(2025, 6, 13)


def local(day: date, hour: int, minute: int = 0, *, fold: int = 0) -> datetime:
    """The UTC instant of a wall-clock time in Oslo (fold=1: the repeated hour's second pass)."""
    naive = datetime.combine(day, time(hour, minute))
    return naive.replace(tzinfo=OSLO, fold=fold).astimezone(UTC)


def wed(hour: int, minute: int = 0) -> datetime:
    return local(WEDNESDAY, hour, minute)


def thu(hour: int, minute: int = 0) -> datetime:
    return local(WEDNESDAY + timedelta(days=1), hour, minute)


def daily(start: int, end: int, minute: int = 0) -> Schedule:
    return Schedule.every_day(time(start, minute), time(end))


def weekly(weekday: int, start: int, end: int) -> Schedule:
    return Schedule(weekly=[TimeRange(weekday=weekday, start=time(start), end=time(end))])


DAILY = daily(7, 23)
DOOR = DoorFacts("door", "Europe/Oslo")
ON_HOLIDAY = DoorFacts("door", "Europe/Oslo", holidays=frozenset({WEDNESDAY}))


def rule(rule_id: str = "g", **kwargs: Any) -> AccessRule:
    return AccessRule(id=rule_id, **kwargs)


@dataclass(frozen=True)
class Expect:
    allowed: bool
    reason: DenyReason | None = None
    next_window: datetime | None = None
    rule_id: str | None = None


ALLOW = Expect(True)


def deny(reason: DenyReason, next_window: datetime | None = None) -> Expect:
    return Expect(False, reason, next_window)


def case(name: str, door: DoorFacts, rules: list[AccessRule], now: datetime, expect: Expect) -> Any:
    return pytest.param(door, rules, now, expect, id=name)


EVERY_REASON = [
    case("no rules: no_grant", DOOR, [], wed(10), deny(DenyReason.NO_GRANT)),
    case("unscheduled grant allows", DOOR, [rule()], wed(10), ALLOW),
    case(
        "starts later: not_yet_valid, opens at valid_from",
        DOOR,
        [rule(valid_from=wed(12))],
        wed(10),
        deny(DenyReason.NOT_YET_VALID, wed(12)),
    ),
    case("ended: expired", DOOR, [rule(valid_until=wed(9))], wed(10), deny(DenyReason.EXPIRED)),
    case(
        "after hours: outside_schedule, opens next morning",
        DOOR,
        [rule(schedule=DAILY)],
        wed(23, 30),
        deny(DenyReason.OUTSIDE_SCHEDULE, thu(7)),
    ),
    case(
        "building holiday: holiday, opens next morning",
        ON_HOLIDAY,
        [rule(schedule=DAILY)],
        wed(10),
        deny(DenyReason.HOLIDAY, thu(7)),
    ),
    case("revoked", DOOR, [rule(revoked_at=wed(9))], wed(10), deny(DenyReason.REVOKED)),
    case(
        "all uses spent: uses_exhausted",
        DOOR,
        [rule(max_uses=2, use_count=2)],
        wed(10),
        deny(DenyReason.USES_EXHAUSTED),
    ),
    case(
        "lockdown",
        DoorFacts("door", "Europe/Oslo", lockdown=True),
        [rule()],
        wed(10),
        deny(DenyReason.LOCKDOWN),
    ),
    case(
        "public hours, too young: not_eligible",
        DOOR,
        [rule(kind=RuleKind.PUBLIC, schedule=DAILY, eligible=False)],
        wed(10),
        deny(DenyReason.NOT_ELIGIBLE),
    ),
    case(
        "door out of service: door_disabled",
        DoorFacts("door", "Europe/Oslo", enabled=False),
        [rule()],
        wed(10),
        deny(DenyReason.DOOR_DISABLED),
    ),
]

BOUNDARIES = [
    case("valid_from is inclusive", DOOR, [rule(valid_from=wed(10))], wed(10), ALLOW),
    case(
        "valid_until is exclusive",
        DOOR,
        [rule(valid_until=wed(10))],
        wed(10),
        deny(DenyReason.EXPIRED),
    ),
    case("revocation counts from its instant", DOOR, [rule(revoked_at=wed(11))], wed(10), ALLOW),
    case("opens at the range start", DOOR, [rule(schedule=DAILY)], wed(7), ALLOW),
    case(
        "closes at the range end",
        DOOR,
        [rule(schedule=DAILY)],
        wed(23),
        deny(DenyReason.OUTSIDE_SCHEDULE, thu(7)),
    ),
    case("one use left", DOOR, [rule(max_uses=3, use_count=2)], wed(10), ALLOW),
]

PRIORITY = [
    case(
        "holiday beats outside_schedule",
        ON_HOLIDAY,
        [rule("a", schedule=DAILY), rule("b", schedule=weekly(0, 7, 23))],
        wed(10),
        deny(DenyReason.HOLIDAY, thu(7)),
    ),
    case(
        "outside_schedule beats not_yet_valid",
        DOOR,
        [rule("a", valid_from=thu(12)), rule("b", schedule=DAILY)],
        wed(23, 30),
        deny(DenyReason.OUTSIDE_SCHEDULE, thu(7)),
    ),
    case(
        "not_yet_valid beats uses_exhausted",
        DOOR,
        [rule("a", max_uses=1, use_count=1), rule("b", valid_from=wed(12))],
        wed(10),
        deny(DenyReason.NOT_YET_VALID, wed(12)),
    ),
    case(
        "uses_exhausted beats expired",
        DOOR,
        [rule("a", valid_until=wed(9)), rule("b", max_uses=1, use_count=1)],
        wed(10),
        deny(DenyReason.USES_EXHAUSTED),
    ),
    case(
        "expired beats revoked",
        DOOR,
        [rule("a", revoked_at=wed(9)), rule("b", valid_until=wed(9))],
        wed(10),
        deny(DenyReason.EXPIRED),
    ),
    case(
        "revoked beats not_eligible",
        DOOR,
        [rule("a", kind=RuleKind.PUBLIC, eligible=False), rule("b", revoked_at=wed(9))],
        wed(10),
        deny(DenyReason.REVOKED),
    ),
    case(
        "the earliest window wins even from a rule whose reason lost",
        DOOR,
        [rule("a", valid_from=wed(23, 45)), rule("b", schedule=DAILY)],
        wed(23, 30),
        deny(DenyReason.OUTSIDE_SCHEDULE, wed(23, 45)),
    ),
    case(
        "within one rule, revoked is checked before expired",
        DOOR,
        [rule(revoked_at=wed(8), valid_until=wed(9))],
        wed(10),
        deny(DenyReason.REVOKED),
    ),
    case(
        "within one rule, not_eligible is checked before expired",
        DOOR,
        [rule(eligible=False, valid_until=wed(9))],
        wed(10),
        deny(DenyReason.NOT_ELIGIBLE),
    ),
]

DOOR_STATE = [
    case(
        "door_disabled beats lockdown",
        DoorFacts("door", "Europe/Oslo", enabled=False, lockdown=True),
        [rule()],
        wed(10),
        deny(DenyReason.DOOR_DISABLED),
    ),
    case(
        "lockdown beats a live grant and public hours",
        DoorFacts("door", "Europe/Oslo", lockdown=True),
        [rule(), rule("p", kind=RuleKind.PUBLIC, schedule=DAILY)],
        wed(10),
        deny(DenyReason.LOCKDOWN),
    ),
    case(
        "lockdown without any rule is still lockdown",
        DoorFacts("door", "Europe/Oslo", lockdown=True),
        [],
        wed(10),
        deny(DenyReason.LOCKDOWN),
    ),
    case(
        "door_disabled beats a live grant",
        DoorFacts("door", "Europe/Oslo", enabled=False),
        [rule()],
        wed(10),
        deny(DenyReason.DOOR_DISABLED),
    ),
]

DST = [
    # 07:00-23:00 every day opens at 07:00 local on the short and on the long day.
    case(
        "spring 06:59 closed",
        DOOR,
        [rule(schedule=DAILY)],
        local(SPRING, 6, 59),
        deny(DenyReason.OUTSIDE_SCHEDULE, datetime(2025, 3, 30, 5, tzinfo=UTC)),
    ),
    case(
        "spring 07:00 CEST open",
        DOOR,
        [rule(schedule=DAILY)],
        datetime(2025, 3, 30, 5, tzinfo=UTC),
        ALLOW,
    ),
    case("spring 22:59 open", DOOR, [rule(schedule=DAILY)], local(SPRING, 22, 59), ALLOW),
    case(
        "spring 23:00 closed",
        DOOR,
        [rule(schedule=DAILY)],
        local(SPRING, 23),
        deny(DenyReason.OUTSIDE_SCHEDULE, datetime(2025, 3, 31, 5, tzinfo=UTC)),
    ),
    case(
        "autumn 06:59 closed",
        DOOR,
        [rule(schedule=DAILY)],
        local(AUTUMN, 6, 59),
        deny(DenyReason.OUTSIDE_SCHEDULE, datetime(2025, 10, 26, 6, tzinfo=UTC)),
    ),
    case(
        "autumn 07:00 CET open",
        DOOR,
        [rule(schedule=DAILY)],
        datetime(2025, 10, 26, 6, tzinfo=UTC),
        ALLOW,
    ),
    case(
        "autumn 23:00 closed",
        DOOR,
        [rule(schedule=DAILY)],
        local(AUTUMN, 23),
        deny(DenyReason.OUTSIDE_SCHEDULE, datetime(2025, 10, 27, 6, tzinfo=UTC)),
    ),
    # next_window computed the evening before a change lands on 07:00 of the new offset.
    case(
        "next window across spring change",
        DOOR,
        [rule(schedule=DAILY)],
        local(SPRING - timedelta(days=1), 23, 30),
        deny(DenyReason.OUTSIDE_SCHEDULE, datetime(2025, 3, 30, 5, tzinfo=UTC)),
    ),
    case(
        "next window across autumn change",
        DOOR,
        [rule(schedule=DAILY)],
        local(AUTUMN - timedelta(days=1), 23, 30),
        deny(DenyReason.OUTSIDE_SCHEDULE, datetime(2025, 10, 26, 6, tzinfo=UTC)),
    ),
    # 01:00-04:00 spans the change: two real hours in spring, four in autumn.
    case(
        "spring 00:59 before the range",
        DOOR,
        [rule(schedule=daily(1, 4))],
        local(SPRING, 0, 59),
        deny(DenyReason.OUTSIDE_SCHEDULE, datetime(2025, 3, 30, 0, tzinfo=UTC)),
    ),
    case("spring 01:30 CET open", DOOR, [rule(schedule=daily(1, 4))], local(SPRING, 1, 30), ALLOW),
    case(
        "spring 03:30 CEST open",
        DOOR,
        [rule(schedule=daily(1, 4))],
        datetime(2025, 3, 30, 1, 30, tzinfo=UTC),
        ALLOW,
    ),
    case(
        "spring 03:59 CEST open",
        DOOR,
        [rule(schedule=daily(1, 4))],
        datetime(2025, 3, 30, 1, 59, tzinfo=UTC),
        ALLOW,
    ),
    case(
        "spring 04:00 CEST closed",
        DOOR,
        [rule(schedule=daily(1, 4))],
        datetime(2025, 3, 30, 2, tzinfo=UTC),
        deny(DenyReason.OUTSIDE_SCHEDULE, datetime(2025, 3, 30, 23, tzinfo=UTC)),
    ),
    case(
        "autumn first 02:30 (CEST) open",
        DOOR,
        [rule(schedule=daily(1, 4))],
        local(AUTUMN, 2, 30, fold=0),
        ALLOW,
    ),
    case(
        "autumn second 02:30 (CET) open",
        DOOR,
        [rule(schedule=daily(1, 4))],
        local(AUTUMN, 2, 30, fold=1),
        ALLOW,
    ),
    case(
        "autumn 03:59 CET open",
        DOOR,
        [rule(schedule=daily(1, 4))],
        datetime(2025, 10, 26, 2, 59, tzinfo=UTC),
        ALLOW,
    ),
    case(
        "autumn 04:00 CET closed",
        DOOR,
        [rule(schedule=daily(1, 4))],
        datetime(2025, 10, 26, 3, tzinfo=UTC),
        deny(DenyReason.OUTSIDE_SCHEDULE, datetime(2025, 10, 27, 0, tzinfo=UTC)),
    ),
]

FRIDAY_NIGHT = weekly(4, 22, 2)  # Friday 22:00 to Saturday 02:00
SATURDAY = FRIDAY + timedelta(days=1)

MIDNIGHT = [
    case(
        "21:59 Friday closed",
        DOOR,
        [rule(schedule=FRIDAY_NIGHT)],
        local(FRIDAY, 21, 59),
        deny(DenyReason.OUTSIDE_SCHEDULE, local(FRIDAY, 22)),
    ),
    case("23:00 Friday open", DOOR, [rule(schedule=FRIDAY_NIGHT)], local(FRIDAY, 23), ALLOW),
    case(
        "01:00 Saturday still open", DOOR, [rule(schedule=FRIDAY_NIGHT)], local(SATURDAY, 1), ALLOW
    ),
    case(
        "02:00 Saturday closed until next Friday",
        DOOR,
        [rule(schedule=FRIDAY_NIGHT)],
        local(SATURDAY, 2),
        deny(DenyReason.OUTSIDE_SCHEDULE, local(FRIDAY + timedelta(days=7), 22)),
    ),
    case("22:00-02:00 every day open at 01:00", DOOR, [rule(schedule=daily(22, 2))], wed(1), ALLOW),
]

HOLIDAYS = [
    case(
        "holiday ignored by a grant that does not respect holidays",
        ON_HOLIDAY,
        [rule(schedule=DAILY, respect_holidays=False)],
        wed(10),
        ALLOW,
    ),
    case("holiday does not touch an unscheduled grant", ON_HOLIDAY, [rule()], wed(10), ALLOW),
    case(
        "holiday closes public hours",
        ON_HOLIDAY,
        [rule(kind=RuleKind.PUBLIC, schedule=DAILY)],
        wed(10),
        deny(DenyReason.HOLIDAY, thu(7)),
    ),
    case(
        "a schedule's own closed date reads as holiday",
        DOOR,
        [rule(schedule=Schedule(weekly=DAILY.weekly, closed_dates=[WEDNESDAY]))],
        wed(10),
        deny(DenyReason.HOLIDAY, thu(7)),
    ),
    case(
        "next window skips a holiday",
        DoorFacts("door", "Europe/Oslo", holidays=frozenset({WEDNESDAY + timedelta(days=1)})),
        [rule(schedule=DAILY)],
        wed(23, 30),
        deny(DenyReason.OUTSIDE_SCHEDULE, local(FRIDAY, 7)),
    ),
]

OVERLAP = [
    case(
        "an expired grant and a live one: allowed by the live one",
        DOOR,
        [rule("old", valid_until=wed(9)), rule("new")],
        wed(10),
        Expect(True, rule_id="new"),
    ),
    case(
        "door grant outside hours, building grant without hours",
        DOOR,
        [rule("door", schedule=DAILY), rule("building")],
        wed(23, 30),
        Expect(True, rule_id="building"),
    ),
    case(
        "two live grants: the first one counts",
        DOOR,
        [rule("a"), rule("b")],
        wed(10),
        Expect(True, rule_id="a"),
    ),
    case(
        "too young for public hours, but holds a grant",
        DOOR,
        [rule("p", kind=RuleKind.PUBLIC, schedule=DAILY, eligible=False), rule("g")],
        wed(10),
        Expect(True, rule_id="g"),
    ),
    case(
        "revoked grant and a live one",
        DOOR,
        [rule("r", revoked_at=wed(9)), rule("l")],
        wed(10),
        Expect(True, rule_id="l"),
    ),
    case(
        "exhausted grant and an unlimited one",
        DOOR,
        [rule("x", max_uses=1, use_count=1), rule("u")],
        wed(10),
        Expect(True, rule_id="u"),
    ),
]


def share(parent: AccessRule, **kwargs: Any) -> AccessRule:
    return rule("share", kind=RuleKind.SHARE, parent=parent, **kwargs)


SHARES = [
    case(
        "share of a live grant allows",
        DOOR,
        [share(rule("parent"))],
        wed(10),
        Expect(True, rule_id="share"),
    ),
    case(
        "share dies with a revoked parent",
        DOOR,
        [share(rule("parent", revoked_at=wed(9)))],
        wed(10),
        deny(DenyReason.REVOKED),
    ),
    case(
        "share dies with an expired parent",
        DOOR,
        [share(rule("parent", valid_until=wed(9)))],
        wed(10),
        deny(DenyReason.REVOKED),
    ),
    case(
        "share dies with a used-up parent",
        DOOR,
        [share(rule("parent", max_uses=1, use_count=1))],
        wed(10),
        deny(DenyReason.REVOKED),
    ),
    case(
        "share follows its parent's hours",
        DOOR,
        [share(rule("parent", schedule=DAILY))],
        wed(23, 30),
        deny(DenyReason.OUTSIDE_SCHEDULE, thu(7)),
    ),
    case(
        "share revoked on its own",
        DOOR,
        [share(rule("parent"), revoked_at=wed(9))],
        wed(10),
        deny(DenyReason.REVOKED),
    ),
    case(
        "parent revoked later: share still live now",
        DOOR,
        [share(rule("parent", revoked_at=wed(11)))],
        wed(10),
        Expect(True, rule_id="share"),
    ),
    case(
        "the parent's own grant stays when only the share is revoked",
        DOOR,
        [rule("parent"), share(rule("parent"), revoked_at=wed(9))],
        wed(10),
        Expect(True, rule_id="parent"),
    ),
]


@pytest.mark.parametrize(
    ("door", "rules", "now", "expect"),
    EVERY_REASON
    + BOUNDARIES
    + PRIORITY
    + DOOR_STATE
    + DST
    + MIDNIGHT
    + HOLIDAYS
    + OVERLAP
    + SHARES,
)
def test_decide(door: DoorFacts, rules: list[AccessRule], now: datetime, expect: Expect) -> None:
    decision = decide(door, rules, now)

    assert decision.allowed is expect.allowed
    assert decision.reason == expect.reason
    if not expect.allowed:
        assert decision.next_window == expect.next_window
    if expect.rule_id is not None:
        assert decision.rule_id == expect.rule_id


def test_every_deny_reason_is_covered() -> None:
    covered = {p.values[3].reason for p in EVERY_REASON}
    assert covered >= set(DenyReason)


def test_limited_allow_asks_to_consume_a_use() -> None:
    limited = decide(DOOR, [rule(max_uses=3, use_count=2)], wed(10))
    unlimited = decide(DOOR, [rule()], wed(10))

    assert (limited.allowed, limited.limited) == (True, True)
    assert (unlimited.allowed, unlimited.limited) == (True, False)


def test_allow_names_the_rule_and_its_kind() -> None:
    decision = decide(DOOR, [share(rule("parent"))], wed(10))

    assert decision == Decision(True, rule_id="share", rule_kind=RuleKind.SHARE)


def test_the_dst_days_are_the_last_sundays() -> None:
    for day in (SPRING, AUTUMN):
        assert day.weekday() == 6
        assert (day + timedelta(days=7)).month != day.month
    # Sanity of the helper: the spring gap and the autumn repeat as Oslo has them.
    assert local(SPRING, 3) - local(SPRING, 1) == timedelta(hours=1)
    assert local(AUTUMN, 2, 30, fold=1) - local(AUTUMN, 2, 30) == timedelta(hours=1)


# ------------------------------------------------------------------ known bugs (not fixed
# here: api/access/policy.py and api/schedules.py belong to others). Each test states the
# correct behaviour and is expected to fail until the code is fixed.


def test_not_yet_valid_scheduled_grant_opens_at_valid_from() -> None:
    grant = rule(valid_from=thu(9), schedule=DAILY)

    decision = decide(DOOR, [grant], wed(10))

    assert decision.reason is DenyReason.NOT_YET_VALID
    assert decision.next_window == thu(9)


def test_share_next_window_respects_the_parent_end() -> None:
    parent = rule("parent", valid_until=wed(20))
    only_thursday = weekly(3, 7, 23)

    decision = decide(DOOR, [share(parent, schedule=only_thursday)], wed(10))

    assert decision.reason is DenyReason.OUTSIDE_SCHEDULE
    assert (
        decision.next_window is None
        or decide(DOOR, [share(parent, schedule=only_thursday)], decision.next_window).allowed
    )


def test_share_next_window_respects_its_own_schedule() -> None:
    parent = rule("parent", valid_from=wed(12))
    afternoon = weekly(2, 14, 16)
    rules = [share(parent, schedule=afternoon)]

    decision = decide(DOOR, rules, wed(10))

    assert decision.next_window == wed(14)
    assert decide(DOOR, rules, decision.next_window).allowed


def test_range_starting_in_the_spring_gap_opens_when_the_gap_ends() -> None:
    gap_start = Schedule(weekly=[TimeRange(weekday=6, start=time(2, 30), end=time(5))])
    grant = rule(schedule=gap_start)
    three_fifteen = datetime(2025, 3, 30, 1, 15, tzinfo=UTC)  # 03:15 CEST

    before = decide(DOOR, [grant], local(SPRING, 1))
    during = decide(DOOR, [grant], three_fifteen)

    assert before.next_window == datetime(2025, 3, 30, 1, tzinfo=UTC)  # 03:00 CEST
    assert during.allowed
