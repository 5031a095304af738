"""What each gateway should be doing now: the desired mode, computed from the facts. Pure.

A gateway's desired mode is the building's lockdown flag and, outside lockdown, the doors of
that gateway whose passage schedule is open now, each with the end of its window. Lockdown
overrides passage: no door is held during a lockdown.

The window end is the end of the open stretch that contains ``now``: overlapping and abutting
ranges are chained (a Monday 22:00-02:00 range followed by Tuesday 02:00-06:00 is one window),
holidays and closed dates suppress weekly ranges exactly as for access (open days do not), and
the chaining stops at the first range boundary past ``now + PASSAGE_HORIZON``. So a door open
around the clock is held up to about two days ahead, and its end moves forward once per range
boundary (once a day), not on every tick: the scheduler republishes on changes only.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from api.schedules import Schedule, _intervals_starting_on

PASSAGE_HORIZON = timedelta(hours=48)
"""How far ahead a hold may reach; a later end is renewed by a later message."""


@dataclass(frozen=True, slots=True)
class DesiredMode:
    """The mode one gateway should hold: compared between ticks, signed when it changes."""

    lockdown: bool = False
    holds: tuple[tuple[str, int], ...] = ()
    """(door id, Unix second its hold ends), sorted by door."""

    @property
    def is_default(self) -> bool:
        """The mode of a gateway that never received one: nothing to tell it."""
        return not self.lockdown and not self.holds


@dataclass(frozen=True, slots=True)
class PassageDoor:
    """The facts about one door that passage mode needs."""

    door_id: str
    gateway_id: str
    enabled: bool
    schedule: Schedule | None


def passage_window_end(
    schedule: Schedule,
    now: datetime,
    zone: ZoneInfo,
    holidays: frozenset[date] = frozenset(),
    horizon: timedelta = PASSAGE_HORIZON,
) -> datetime | None:
    """The end of the passage window open at ``now``, or None when the door is not in one."""
    first_day = now.astimezone(zone).date() - timedelta(days=1)
    last_day = (now + horizon).astimezone(zone).date() + timedelta(days=1)
    intervals = sorted(
        (start, end)
        for offset in range((last_day - first_day).days + 1)
        for start, end, closed in _intervals_starting_on(
            schedule, first_day + timedelta(days=offset), zone, holidays
        )
        if not closed and start < end
    )
    current = [end for start, end in intervals if start <= now < end]
    if not current:
        return None
    window_end = max(current)
    limit = now + horizon
    # Sorted by start, one pass chains every range that begins before the window ends.
    for start, end in intervals:
        if window_end > limit:
            break
        if start <= window_end < end:
            window_end = end
    return window_end


def desired_modes(
    *,
    lockdown: bool,
    gateway_ids: Iterable[str],
    doors: Iterable[PassageDoor],
    zone: ZoneInfo,
    holidays: frozenset[date],
    now: datetime,
) -> dict[str, DesiredMode]:
    """The desired mode of every gateway of one building at ``now``."""
    holds: dict[str, list[tuple[str, int]]] = {gateway_id: [] for gateway_id in gateway_ids}
    if not lockdown:
        for door in doors:
            if not door.enabled or door.schedule is None or door.gateway_id not in holds:
                continue
            end = passage_window_end(door.schedule, now, zone, holidays)
            if end is not None:
                # Whole seconds, rounded down: a window may end a fraction early, never late.
                holds[door.gateway_id].append((door.door_id, int(end.timestamp())))
    return {
        gateway_id: DesiredMode(lockdown, tuple(sorted(door_holds)))
        for gateway_id, door_holds in holds.items()
    }
