"""Weekly schedules in a building's local time, date exceptions, and window arithmetic.

A schedule is a list of ranges "weekday, start, end" in wall-clock time of the building's
IANA timezone. ``end <= start`` means the range crosses midnight into the next day (22:00 to
02:00). Evaluation converts the instant to local wall time with zoneinfo, so daylight-saving
changes are handled by the tz database: "07:00-23:00 every day" means 07:00 local on the short
day and on the long day alike. A start time that does not exist on a spring-forward day (02:30
in Europe/Oslo) begins at the first instant after the gap.
"""

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

SEARCH_DAYS = 15
"""How far ahead the next window is looked for (two weeks and a day covers any weekly rule)."""


def _wall_time(value: time) -> time:
    if value.tzinfo is not None:
        raise ValueError("a local wall time has no UTC offset (the building's timezone applies)")
    return value


LocalTime = Annotated[
    time,
    AfterValidator(_wall_time),
    # Not JSON Schema's "time" format: that is RFC 3339 full-time, which requires an offset.
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?$",
            "description": "Local wall time HH:MM[:SS], without offset",
            "examples": ["08:00:00"],
        }
    ),
]
"""A wall-clock time of day in the building's timezone."""


class TimeRange(BaseModel):
    """One weekly opening: weekday (0 = Monday) from ``start`` to ``end`` local time."""

    model_config = ConfigDict(frozen=True)

    weekday: int = Field(ge=0, le=6, description="0 = Monday ... 6 = Sunday")
    start: LocalTime
    end: LocalTime = Field(description="Equal to or before start: crosses midnight")


class OpenDay(BaseModel):
    """An extra opening on one date, whatever the weekly schedule says."""

    model_config = ConfigDict(frozen=True)

    date: date
    start: LocalTime = time(0, 0)
    end: LocalTime = time(0, 0)


class Schedule(BaseModel):
    """Weekly ranges plus date exceptions. An empty ``weekly`` list means never (except
    ``open_days``); no schedule at all (None on the owner) means always."""

    model_config = ConfigDict(frozen=True)

    weekly: list[TimeRange] = Field(default_factory=list)
    closed_dates: list[date] = Field(default_factory=list, description="Closed on these dates")
    open_days: list[OpenDay] = Field(default_factory=list)

    @model_validator(mode="after")
    def _bounded(self) -> "Schedule":
        if len(self.weekly) > 200 or len(self.closed_dates) + len(self.open_days) > 1000:
            raise ValueError("schedule too large")
        return self

    @classmethod
    def every_day(cls, start: time, end: time) -> "Schedule":
        return cls(weekly=[TimeRange(weekday=d, start=start, end=end) for d in range(7)])


def _exists(naive: datetime, zone: ZoneInfo) -> bool:
    """False for a wall time inside a spring-forward gap (it does not round-trip)."""
    aware = naive.replace(tzinfo=zone)
    return aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == naive


def local_instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The UTC instant of wall-clock ``day at`` in ``zone``.

    A wall time inside a spring-forward gap becomes the end of the gap (02:30 on the night
    Europe/Oslo skips 02:00-03:00 becomes 03:00). A repeated wall time (autumn) is its first
    occurrence.
    """
    naive = datetime.combine(day, at)
    if not _exists(naive, zone):
        # Gaps are whole minutes and at most a few hours: walk to the first existing minute.
        naive = naive.replace(second=0, microsecond=0)
        for _ in range(24 * 60):
            naive += timedelta(minutes=1)
            if _exists(naive, zone):
                break
    return naive.replace(tzinfo=zone).astimezone(UTC)


def _intervals_starting_on(
    schedule: Schedule, day: date, zone: ZoneInfo, holidays: frozenset[date]
) -> Iterable[tuple[datetime, datetime, bool]]:
    """Intervals (start, end, closed) whose start falls on local ``day``; ``closed`` marks a
    weekly range suppressed by a holiday or closed date (kept to explain a refusal)."""
    closed = day in holidays or day in schedule.closed_dates
    for rng in schedule.weekly:
        if rng.weekday != day.weekday():
            continue
        end_day = day if rng.end > rng.start else day + timedelta(days=1)
        yield local_instant(day, rng.start, zone), local_instant(end_day, rng.end, zone), closed
    for extra in schedule.open_days:
        if extra.date != day:
            continue
        end_day = day if extra.end > extra.start else day + timedelta(days=1)
        yield local_instant(day, extra.start, zone), local_instant(end_day, extra.end, zone), False


def schedule_state(
    schedule: Schedule,
    now: datetime,
    zone: ZoneInfo,
    holidays: frozenset[date] = frozenset(),
    *,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> tuple[bool, bool, datetime | None]:
    """(open now, closed now only because of a holiday, next opening instant or None).

    ``not_before``/``not_after`` clip the search to a validity window.
    """
    today = now.astimezone(zone).date()
    held_by_holiday = False
    upcoming: datetime | None = None
    for offset in range(-1, SEARCH_DAYS):
        day = today + timedelta(days=offset)
        for start, end, closed in _intervals_starting_on(schedule, day, zone, holidays):
            if start <= now < end:
                if not closed:
                    return True, False, now
                held_by_holiday = True
            if closed or end <= now:
                continue
            begin = max(start, now)
            if not_before is not None:
                begin = max(begin, not_before)
            if begin >= end or (not_after is not None and begin >= not_after):
                continue
            if upcoming is None or begin < upcoming:
                upcoming = begin
    return False, held_by_holiday, upcoming


def first(values: Sequence[datetime | None]) -> datetime | None:
    """The earliest of the non-None values, or None."""
    present = [v for v in values if v is not None]
    return min(present) if present else None
