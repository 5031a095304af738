"""Request and response models for grants, plus the cursor pagination and the datetime rules
that the management endpoints of groups, grants and public hours share.

Datetimes in requests must say which instant they mean. Two spellings are accepted:

- an ISO 8601 datetime with an explicit offset (``2025-03-01T07:00:00+01:00`` or ``...Z``);
- a local datetime without offset plus a ``timezone`` field naming an IANA zone
  (``"2025-03-01T07:00:00"`` with ``"timezone": "Europe/Oslo"``): the wall-clock time there.
  A local time that does not exist (skipped by a spring-forward change) or that exists twice
  (repeated by a fall-back change) is refused, because guessing would move a permission.

A datetime without offset and without ``timezone`` is refused with ``naive_datetime``.
Answers always carry UTC.
"""

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Generic, Self, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.config import JsonDict

from api.access.models import Grant
from api.common import as_utc
from api.errors import ApiError
from api.schedules import Schedule

T = TypeVar("T")
R = TypeVar("R")

Id = Annotated[str, Field(min_length=1, max_length=64)]

# ----------------------------------------------------------------------------- pagination
# Shared by groups, grants and public hours. Keyset pagination on (created_at, id): stable
# under concurrent inserts, and the cursor is opaque so its shape may change later.

DEFAULT_LIMIT = 50
MAX_LIMIT = 200

LimitQuery = Annotated[
    int, Query(ge=1, le=MAX_LIMIT, description="Page size", examples=[DEFAULT_LIMIT])
]
CursorQuery = Annotated[
    str | None,
    Query(max_length=512, description="The `next_cursor` of the previous page"),
]


class Page(BaseModel, Generic[T]):
    """One page of a listing. ``next_cursor`` is null on the last page."""

    items: list[T]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` to get the next page; null when done"
    )


def encode_cursor(at: datetime, key: str) -> str:
    """An opaque cursor pointing just after the row (``at``, ``key``)."""
    raw = json.dumps([as_utc(at).isoformat(), key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    """The position a cursor points after; 422 ``invalid_cursor`` for anything not ours."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, key = json.loads(raw)
        if not isinstance(at, str) or not isinstance(key, str):
            raise ValueError("cursor fields")
        parsed = datetime.fromisoformat(at)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise ApiError(422, "invalid_cursor", "the cursor is not one this API issued") from None
    if parsed.tzinfo is None:
        raise ApiError(422, "invalid_cursor", "the cursor is not one this API issued")
    return parsed, key


def page_of(
    rows: Sequence[R],
    limit: int,
    position: Callable[[R], tuple[datetime, str]],
    to_item: Callable[[R], T],
) -> Page[T]:
    """Build a page from up to ``limit + 1`` rows: the extra row only says "there is more".
    ``position(row)`` gives the (created_at, id) of a row, ``to_item(row)`` its answer."""
    more = len(rows) > limit
    kept = rows[:limit]
    next_cursor = encode_cursor(*position(kept[-1])) if more and kept else None
    return Page(items=[to_item(r) for r in kept], next_cursor=next_cursor)


# ----------------------------------------------------------------------------- datetimes


def resolve_instant(value: datetime | None, timezone: str | None, field: str) -> datetime | None:
    """The UTC instant a request datetime means (see the module docstring), or raise 422."""
    if value is None:
        return None
    if value.tzinfo is not None and value.utcoffset() is not None:
        return value.astimezone(UTC)
    if timezone is None:
        raise ApiError(
            422,
            "naive_datetime",
            f"{field} has no UTC offset: add one (e.g. +01:00 or Z) or give a timezone",
            field=field,
        )
    zone = zone_named(timezone)
    earlier = value.replace(tzinfo=zone, fold=0)
    later = value.replace(tzinfo=zone, fold=1)
    if earlier.utcoffset() != later.utcoffset():
        # zoneinfo answers both folds differently exactly for skipped and repeated wall times.
        skipped = earlier.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != value
        raise ApiError(
            422,
            "nonexistent_local_time" if skipped else "ambiguous_local_time",
            f"{field} {value.isoformat()} "
            + ("does not exist" if skipped else "occurs twice")
            + f" in {timezone} (daylight-saving change): give an explicit offset",
            field=field,
        )
    return earlier.astimezone(UTC)


def zone_named(name: str) -> ZoneInfo:
    """The IANA zone ``name``, or 422 ``invalid_timezone``."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ApiError(422, "invalid_timezone", f"unknown timezone {name!r}") from None


def require_window(valid_from: datetime | None, valid_until: datetime | None) -> None:
    """422 ``invalid_window`` unless the window ends after it starts."""
    if valid_from is not None and valid_until is not None and valid_until <= valid_from:
        raise ApiError(
            422,
            "invalid_window",
            "valid_until must be after valid_from",
            valid_from=valid_from.isoformat(),
            valid_until=valid_until.isoformat(),
        )


def require_useful_schedule(schedule: Schedule | None) -> None:
    """422 ``empty_schedule`` for a schedule that never opens (almost surely a mistake; a
    missing schedule is how "always" is said)."""
    if schedule is not None and not schedule.weekly and not schedule.open_days:
        raise ApiError(
            422,
            "empty_schedule",
            "the schedule has no weekly ranges and no open days, so it never opens",
        )


# ----------------------------------------------------------------------------- grants

_SCHEDULE_EXAMPLE: JsonDict = {
    "weekly": [{"weekday": d, "start": "07:00", "end": "23:00"} for d in range(7)],
    "closed_dates": ["2025-12-25"],
    "open_days": [],
}


class SubjectIn(BaseModel):
    """Who receives the grant: exactly one of a citizen or a group."""

    model_config = ConfigDict(extra="forbid")

    user_id: Id | None = None
    group_id: Id | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.user_id is None) == (self.group_id is None):
            raise ValueError("give exactly one of user_id or group_id")
        return self


class TargetIn(BaseModel):
    """What the grant opens: exactly one of a door or every door of a building."""

    model_config = ConfigDict(extra="forbid")

    door_id: Id | None = None
    building_id: Id | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.door_id is None) == (self.building_id is None):
            raise ValueError("give exactly one of door_id or building_id")
        return self


class GrantCreate(BaseModel):
    """A new grant. Datetimes need an offset, or a ``timezone`` for local ones."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "subject": {"user_id": "u_3f9c2a7be01d4c55"},
                    "target": {"door_id": "door_3f9c2a7be01d4c55"},
                    "valid_from": "2025-09-01T00:00:00",
                    "valid_until": "2026-06-30T23:59:00",
                    "timezone": "Europe/Oslo",
                    "schedule": _SCHEDULE_EXAMPLE,
                    "respect_holidays": True,
                    "shareable": False,
                    "note": "Choir rehearsals",
                },
                {
                    "subject": {"group_id": "grp_8b1e0c9d2a4f6e71"},
                    "target": {"building_id": "bld_5a2d9e1f0b3c4d87"},
                    "valid_until": "2025-12-31T23:00:00Z",
                    "max_uses": 10,
                },
            ]
        },
    )

    subject: SubjectIn
    target: TargetIn
    valid_from: datetime | None = Field(default=None, description="Start; none = now")
    valid_until: datetime | None = Field(default=None, description="End; none = open-ended")
    timezone: str | None = Field(
        default=None,
        max_length=64,
        description="IANA zone for valid_from/valid_until given without offset",
        examples=["Europe/Oslo"],
    )
    schedule: Schedule | None = Field(
        default=None, description="Weekly hours in the building's local time; none = always"
    )
    respect_holidays: bool = Field(
        default=True, description="Closed on the building's holidays (scheduled grants only)"
    )
    max_uses: int | None = Field(default=None, ge=1, le=1_000_000)
    shareable: bool = False
    note: str = Field(default="", max_length=500)


class GrantUpdate(BaseModel):
    """Fields to change. Absent fields stay; ``null`` clears (no start, no end, no schedule =
    always, no use limit)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"valid_until": "2026-01-31T23:00:00+01:00", "note": "extended"},
                {"schedule": None, "max_uses": None},
            ]
        },
    )

    valid_from: datetime | None = None
    valid_until: datetime | None = None
    timezone: str | None = Field(default=None, max_length=64, examples=["Europe/Oslo"])
    schedule: Schedule | None = None
    respect_holidays: bool | None = None
    max_uses: int | None = Field(default=None, ge=1, le=1_000_000)
    shareable: bool | None = None
    note: str | None = Field(default=None, max_length=500)

    @model_validator(mode="after")
    def _not_null(self) -> Self:
        for name in ("respect_holidays", "shareable", "note"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class SubjectOut(BaseModel):
    user_id: str | None = None
    group_id: str | None = None
    phone: str | None = Field(default=None, description="Unclaimed phone subject (bookings)")


class TargetOut(BaseModel):
    door_id: str | None = None
    building_id: str | None = None


class GrantOut(BaseModel):
    """A grant as managers see it. Datetimes are UTC."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "grt_0c1d2e3f4a5b6c7d",
                    "subject": {"user_id": "u_3f9c2a7be01d4c55", "group_id": None, "phone": None},
                    "target": {"door_id": "door_3f9c2a7be01d4c55", "building_id": None},
                    "building_id": "bld_5a2d9e1f0b3c4d87",
                    "valid_from": "2025-08-31T22:00:00Z",
                    "valid_until": None,
                    "schedule": _SCHEDULE_EXAMPLE,
                    "respect_holidays": True,
                    "max_uses": None,
                    "use_count": 0,
                    "shareable": False,
                    "parent_grant_id": None,
                    "booking_id": None,
                    "note": "Choir rehearsals",
                    "created_by": "u_manager",
                    "created_at": "2025-08-20T09:12:00Z",
                    "revoked_at": None,
                    "revoked_by": None,
                }
            ]
        }
    )

    id: str
    subject: SubjectOut
    target: TargetOut
    building_id: str = Field(description="The building the target lies in")
    valid_from: datetime | None
    valid_until: datetime | None
    schedule: Schedule | None
    respect_holidays: bool
    max_uses: int | None
    use_count: int
    shareable: bool
    parent_grant_id: str | None = Field(description="Set on a share: the grant it came from")
    booking_id: str | None
    note: str
    created_by: str | None
    created_at: datetime
    revoked_at: datetime | None
    revoked_by: str | None

    @classmethod
    def of(cls, grant: Grant, building_id: str) -> "GrantOut":
        """The answer for ``grant``, whose target lies in ``building_id``."""
        return cls(
            id=grant.id,
            subject=SubjectOut(
                user_id=grant.user_id, group_id=grant.group_id, phone=grant.subject_phone
            ),
            target=TargetOut(door_id=grant.door_id, building_id=grant.building_id),
            building_id=building_id,
            valid_from=_utc(grant.valid_from),
            valid_until=_utc(grant.valid_until),
            schedule=Schedule.model_validate(grant.schedule) if grant.schedule else None,
            respect_holidays=grant.respect_holidays,
            max_uses=grant.max_uses,
            use_count=grant.use_count,
            shareable=grant.shareable,
            parent_grant_id=grant.parent_grant_id,
            booking_id=grant.booking_id,
            note=grant.note,
            created_by=grant.created_by,
            created_at=as_utc(grant.created_at),
            revoked_at=_utc(grant.revoked_at),
            revoked_by=grant.revoked_by,
        )


def _utc(value: datetime | None) -> datetime | None:
    return as_utc(value) if value is not None else None
