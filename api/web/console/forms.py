"""Turning the console's HTML form fields into the API's request models: local date-times in
the building's timezone, weekly schedules from day checkboxes, "door:<id>" and
"building:<id>" target choices."""

from datetime import datetime, time

from api.errors import ApiError
from api.schedules import Schedule, TimeRange

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def blank_to_none(value: str | None) -> str | None:
    """Form fields arrive as "" when left empty."""
    if value is None:
        return None
    value = value.strip()
    return value or None


def local_datetime(value: str | None, field: str) -> datetime | None:
    """A ``datetime-local`` input (no offset: the building's local time), or None."""
    text = blank_to_none(value)
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(
            422, "invalid_datetime", f"{field}: {text!r} is not a date and time"
        ) from None
    return parsed.replace(tzinfo=None)


def weekly_schedule(days: list[int], start: str | None, end: str | None) -> Schedule | None:
    """The schedule "these weekdays from start to end", or None (always) without days."""
    if not days:
        return None
    try:
        begin = time.fromisoformat(blank_to_none(start) or "00:00")
        finish = time.fromisoformat(blank_to_none(end) or "00:00")
    except ValueError:
        raise ApiError(422, "invalid_time", "opening times are HH:MM") from None
    if any(d < 0 or d > 6 for d in days):
        raise ApiError(422, "invalid_weekday", "weekdays are 0 (Monday) to 6 (Sunday)")
    return Schedule(
        weekly=[TimeRange(weekday=d, start=begin, end=finish) for d in sorted(set(days))]
    )


def target(value: str) -> tuple[str | None, str | None]:
    """(door_id, building_id) from a "door:<id>" or "building:<id>" choice."""
    kind, _, object_id = value.partition(":")
    if not object_id or kind not in ("door", "building"):
        raise ApiError(422, "invalid_target", "choose a door or a building")
    return (object_id, None) if kind == "door" else (None, object_id)
