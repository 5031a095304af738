"""The API side of passage mode: windows and desired modes, at chosen instants."""

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from api.modes.plan import (
    PASSAGE_HORIZON,
    DesiredMode,
    PassageDoor,
    desired_modes,
    passage_window_end,
)
from api.schedules import OpenDay, Schedule, TimeRange, schedule_state

OSLO = ZoneInfo("Europe/Oslo")
MONDAY = date(2025, 3, 3)


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=OSLO).astimezone(UTC)


def weekdays(start: time, end: time, days: range = range(5)) -> Schedule:
    return Schedule(weekly=[TimeRange(weekday=d, start=start, end=end) for d in days])


def test_the_window_open_now_and_its_end() -> None:
    schedule = weekdays(time(8), time(16))
    assert passage_window_end(schedule, at(MONDAY, 9), OSLO) == at(MONDAY, 16)
    assert passage_window_end(schedule, at(MONDAY, 7, 59), OSLO) is None
    assert passage_window_end(schedule, at(MONDAY, 16), OSLO) is None  # the end is exclusive


def test_overlapping_and_abutting_ranges_make_one_window() -> None:
    schedule = Schedule(
        weekly=[
            TimeRange(weekday=0, start=time(22), end=time(2)),  # Monday night into Tuesday
            TimeRange(weekday=1, start=time(2), end=time(6)),
            TimeRange(weekday=1, start=time(5), end=time(7)),
        ]
    )
    assert passage_window_end(schedule, at(MONDAY, 23), OSLO) == at(MONDAY + timedelta(1), 7)


def test_holidays_and_closed_dates_suppress_weekly_ranges_but_not_open_days() -> None:
    schedule = weekdays(time(8), time(16))
    assert passage_window_end(schedule, at(MONDAY, 9), OSLO, frozenset({MONDAY})) is None
    closed = schedule.model_copy(update={"closed_dates": [MONDAY]})
    assert passage_window_end(closed, at(MONDAY, 9), OSLO) is None
    extra = Schedule(open_days=[OpenDay(date=MONDAY, start=time(10), end=time(12))])
    assert passage_window_end(extra, at(MONDAY, 11), OSLO, frozenset({MONDAY})) == at(MONDAY, 12)


def test_a_door_open_around_the_clock_is_held_ahead_and_renewed_once_a_day() -> None:
    always = Schedule.every_day(time(0), time(0))
    now = at(MONDAY, 9)
    end = passage_window_end(always, now, OSLO)
    assert end is not None
    assert now + PASSAGE_HORIZON < end <= now + PASSAGE_HORIZON + timedelta(days=1)
    # Stable from tick to tick: it moves only when a range boundary comes into reach.
    assert passage_window_end(always, now + timedelta(minutes=5), OSLO) == end
    assert passage_window_end(always, at(MONDAY + timedelta(1), 9), OSLO) == end + timedelta(1)


def test_windows_agree_with_the_access_schedule_evaluation() -> None:
    schedule = Schedule(
        weekly=[
            TimeRange(weekday=0, start=time(7, 30), end=time(11)),
            TimeRange(weekday=0, start=time(21), end=time(1)),
            TimeRange(weekday=6, start=time(23), end=time(23)),
        ],
        closed_dates=[MONDAY + timedelta(days=7)],
    )
    holidays = frozenset({MONDAY + timedelta(days=1)})
    instant = at(MONDAY - timedelta(days=1), 0)
    for _ in range(24 * 4 * 9):  # every 15 minutes for nine days
        open_now, _, _ = schedule_state(schedule, instant, OSLO, holidays)
        end = passage_window_end(schedule, instant, OSLO, holidays)
        assert (end is not None) == open_now, instant
        if end is not None:
            assert end > instant
            assert schedule_state(schedule, end - timedelta(seconds=1), OSLO, holidays)[0]
        instant += timedelta(minutes=15)


def test_across_a_daylight_saving_change_the_end_is_local_time() -> None:
    spring_sunday = date(2025, 3, 30)  # 02:00 -> 03:00 in Oslo
    schedule = Schedule(weekly=[TimeRange(weekday=6, start=time(1), end=time(5))])
    end = passage_window_end(schedule, at(spring_sunday, 1, 30), OSLO)
    assert end == at(spring_sunday, 5)
    assert end - at(spring_sunday, 1) == timedelta(hours=3)


def test_desired_modes_lockdown_overrides_passage_and_disabled_doors_stay_shut() -> None:
    schedule = weekdays(time(8), time(16))
    doors = [
        PassageDoor("d1", "gw-a", True, schedule),
        PassageDoor("d2", "gw-a", False, schedule),
        PassageDoor("d3", "gw-b", True, None),
    ]
    now = at(MONDAY, 9)

    def modes(lockdown: bool) -> dict[str, DesiredMode]:
        return desired_modes(
            lockdown=lockdown,
            gateway_ids=["gw-a", "gw-b"],
            doors=doors,
            zone=OSLO,
            holidays=frozenset(),
            now=now,
        )

    until = int(at(MONDAY, 16).timestamp())
    assert modes(False) == {"gw-a": DesiredMode(False, (("d1", until),)), "gw-b": DesiredMode()}
    assert modes(True) == {"gw-a": DesiredMode(True, ()), "gw-b": DesiredMode(True, ())}
    assert DesiredMode().is_default
    assert not DesiredMode(True).is_default
