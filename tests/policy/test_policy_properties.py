"""Property tests of the access decision (hypothesis), over generated schedules, rules,
timezones and instants:

(a) adding a rule never turns an allow into a deny;
(b) lockdown always denies;
(c) a refusal's next_window is in the future, and deciding at it allows (rules without use
    limits);
(d) decide never raises for any valid schedule, rule set, timezone and instant.

Runtime is bounded with ``max_examples``; no example database is written to the repository.
"""

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from api.access.policy import AccessRule, DenyReason, DoorFacts, RuleKind, decide
from api.schedules import OpenDay, Schedule, TimeRange

BOUNDED = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

ZONES = ["Europe/Oslo", "UTC", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
"""Oslo, no DST, the other hemisphere's DST, a 30-minute DST shift, a half-hour offset."""

EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
OSLO_CHANGES = [
    datetime(2024, 3, 31, 1, tzinfo=UTC),
    datetime(2024, 10, 27, 1, tzinfo=UTC),
    datetime(2025, 3, 30, 1, tzinfo=UTC),
    datetime(2025, 10, 26, 1, tzinfo=UTC),
]

instants = st.one_of(
    st.integers(0, 3 * 366 * 24 * 60).map(lambda m: EPOCH + timedelta(minutes=m)),
    # Near Oslo's daylight-saving changes, where wall clocks skip and repeat.
    st.builds(
        lambda change, minutes: change + timedelta(minutes=minutes),
        st.sampled_from(OSLO_CHANGES),
        st.integers(-36 * 60, 36 * 60),
    ),
)
clock = st.builds(time, st.integers(0, 23), st.sampled_from([0, 1, 15, 30, 45, 59]))
time_ranges = st.builds(TimeRange, weekday=st.integers(0, 6), start=clock, end=clock)


def near(now: datetime) -> st.SearchStrategy[date]:
    return st.integers(-2, 16).map(lambda k: now.date() + timedelta(days=k))


def schedules(now: datetime) -> st.SearchStrategy[Schedule]:
    return st.builds(
        Schedule,
        weekly=st.lists(time_ranges, max_size=4),
        closed_dates=st.lists(near(now), max_size=3),
        open_days=st.lists(st.builds(OpenDay, date=near(now), start=clock, end=clock), max_size=2),
    )


def offsets(now: datetime) -> st.SearchStrategy[datetime]:
    return st.integers(-20 * 24 * 60, 20 * 24 * 60).map(lambda m: now + timedelta(minutes=m))


@st.composite
def one_rule(
    draw: st.DrawFn,
    /,
    now: datetime,
    *,
    limits: bool = True,
    future_start_with_schedule: bool = True,
) -> AccessRule:
    """A grant or public-hours rule. Windows are well-formed (the API refuses others);
    revocation lies in the past (revoking stamps the current time)."""
    start, end = draw(st.none() | offsets(now)), draw(st.none() | offsets(now))
    if start is not None and end is not None and end <= start:
        start, end = end - timedelta(minutes=1), start
    schedule = draw(st.none() | schedules(now))
    if not future_start_with_schedule and schedule is not None and start and start > now:
        start = now - timedelta(minutes=draw(st.integers(0, 10_000)))
        if end is not None and end <= start:
            end = None
    max_uses = draw(st.none() | st.integers(1, 3)) if limits else None
    # Revoked and ineligible rules refuse without a window; keep them a minority so the
    # interesting refusals (schedules, windows) are well represented.
    revoked = None
    if draw(st.integers(0, 4)) == 0:
        revoked = now - timedelta(minutes=draw(st.integers(0, 10_000)))
    return AccessRule(
        id=draw(st.text("abcdef", min_size=1, max_size=6)),
        kind=draw(st.sampled_from([RuleKind.GRANT, RuleKind.PUBLIC, RuleKind.BOOKING])),
        valid_from=start,
        valid_until=end,
        schedule=schedule,
        respect_holidays=draw(st.booleans()),
        max_uses=max_uses,
        use_count=draw(st.integers(0, 4)) if max_uses is not None else 0,
        revoked_at=revoked,
        eligible=draw(st.integers(0, 4)) != 0,
    )


@st.composite
def rules(
    draw: st.DrawFn,
    /,
    now: datetime,
    *,
    shares: bool = True,
    limits: bool = True,
    future_start_with_schedule: bool = True,
    min_size: int = 0,
    max_size: int = 4,
) -> list[AccessRule]:
    options = {"limits": limits, "future_start_with_schedule": future_start_with_schedule}
    result = []
    for _ in range(draw(st.integers(min_size, max_size))):
        rule = draw(one_rule(now, **options))
        if shares and draw(st.booleans()):
            parent = draw(one_rule(now, **options))
            rule = AccessRule(
                **{**_fields(rule), "kind": RuleKind.SHARE, "parent": parent, "eligible": True}
            )
        result.append(rule)
    return result


def _fields(rule: AccessRule) -> dict[str, Any]:
    return {name: getattr(rule, name) for name in AccessRule.__slots__}


@st.composite
def situations(
    draw: st.DrawFn,
    /,
    *,
    zones: list[str] = ZONES,
    when: st.SearchStrategy[datetime] = instants,
    **rule_options: Any,
) -> tuple[DoorFacts, list[AccessRule], datetime]:
    now = draw(when)
    door = DoorFacts(
        door_id="door",
        timezone=draw(st.sampled_from(zones)),
        enabled=draw(st.booleans()),
        lockdown=draw(st.booleans()),
        holidays=draw(st.frozensets(near(now), max_size=3)),
    )
    return door, draw(rules(now, **rule_options)), now


def open_door(door: DoorFacts) -> DoorFacts:
    return DoorFacts(door.door_id, door.timezone, holidays=door.holidays)


# (a) ---------------------------------------------------------------------------------------


@BOUNDED
@given(situations(), st.data())
def test_adding_a_rule_never_turns_allow_into_deny(
    situation: tuple[DoorFacts, list[AccessRule], datetime], data: st.DataObject
) -> None:
    door, existing, now = situation
    extra = data.draw(one_rule(now))
    position = data.draw(st.integers(0, len(existing)))

    before = decide(door, existing, now)
    after = decide(door, [*existing[:position], extra, *existing[position:]], now)

    if before.allowed:
        assert after.allowed


# (b) ---------------------------------------------------------------------------------------


@BOUNDED
@given(situations())
def test_lockdown_always_denies(situation: tuple[DoorFacts, list[AccessRule], datetime]) -> None:
    door, existing, now = situation
    locked = DoorFacts(door.door_id, door.timezone, door.enabled, True, door.holidays)

    decision = decide(locked, existing, now)

    assert not decision.allowed
    assert decision.reason in (DenyReason.LOCKDOWN, DenyReason.DOOR_DISABLED)
    assert decision.next_window is None


# (c) ---------------------------------------------------------------------------------------


def _opens_at_next_window(door: DoorFacts, existing: list[AccessRule], now: datetime) -> None:
    decision = decide(door, existing, now)
    if decision.allowed or decision.next_window is None:
        event("allowed" if decision.allowed else "denied without a next window")
        return
    event(f"denied with a next window ({decision.reason})")
    window = decision.next_window
    assert window > now, "the next window must lie ahead"
    assert (
        decide(door, existing, window).allowed
        or decide(door, existing, window + timedelta(microseconds=1)).allowed
    )


@settings(BOUNDED, max_examples=400)
@given(situations(shares=False, limits=False, future_start_with_schedule=False, min_size=1))
def test_next_window_opens_the_door(
    situation: tuple[DoorFacts, list[AccessRule], datetime],
) -> None:
    """Rules without use limits, shares or future scheduled starts (the common case, sampled
    densely); the variant below covers every rule kind."""
    door, existing, now = situation
    _opens_at_next_window(open_door(door), existing, now)


_WED_10_OSLO = datetime(2025, 6, 11, 8, tzinfo=UTC)
_DAILY = Schedule.every_day(time(7), time(23))


@BOUNDED
@example(  # a scheduled grant that starts tomorrow, while its schedule is open now
    situation=(
        DoorFacts("door", "Europe/Oslo"),
        [AccessRule("g", valid_from=_WED_10_OSLO + timedelta(days=1), schedule=_DAILY)],
        _WED_10_OSLO,
    )
)
@example(  # a share opening tomorrow whose parent expires tonight
    situation=(
        DoorFacts("door", "Europe/Oslo"),
        [
            AccessRule(
                "s",
                kind=RuleKind.SHARE,
                schedule=Schedule(weekly=[TimeRange(weekday=3, start=time(7), end=time(23))]),
                parent=AccessRule("p", valid_until=_WED_10_OSLO + timedelta(hours=10)),
            )
        ],
        _WED_10_OSLO,
    )
)
@given(situations(limits=False))
def test_next_window_opens_the_door_for_every_rule(
    situation: tuple[DoorFacts, list[AccessRule], datetime],
) -> None:
    door, existing, now = situation
    _opens_at_next_window(open_door(door), existing, now)


# (d) ---------------------------------------------------------------------------------------

EVERY_ZONE = sorted(z for z in available_timezones() if not z.startswith(("posix", "right")))


ANY_ERA = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
)


@BOUNDED
@given(situations(zones=EVERY_ZONE, when=ANY_ERA | instants, max_size=6))
def test_decide_never_raises(situation: tuple[DoorFacts, list[AccessRule], datetime]) -> None:
    door, existing, now = situation
    ZoneInfo(door.timezone)  # the zone itself is valid

    decision = decide(door, existing, now)

    assert decision.allowed == (decision.reason is None)
    if decision.allowed:
        assert decision.rule_id is not None
