"""Request and response models for buildings, doors, holidays and door status."""

import datetime as dt
import functools
import zoneinfo
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field

from api.owners.schemas import Name, PatchModel, RequestModel
from citykey_protocol.topics import is_valid_segment


@functools.cache
def _zone_names() -> frozenset[str]:
    # Scans the tz database once; a set lookup also keeps odd strings (paths, "..") away
    # from ZoneInfo's file loader.
    return frozenset(zoneinfo.available_timezones())


def _check_timezone(value: str) -> str:
    if value not in _zone_names():
        raise ValueError(f"{value!r} is not an IANA timezone name such as 'Europe/Oslo'")
    return value


def _check_segment(value: str) -> str:
    if not is_valid_segment(value):
        raise ValueError(
            "must be 1-64 characters of A-Z, a-z, 0-9, '_', '.', '-', starting with a letter "
            "or digit (it is used in MQTT topics)"
        )
    return value


Timezone = Annotated[str, AfterValidator(_check_timezone)]
TopicId = Annotated[str, AfterValidator(_check_segment)]
"""A client-chosen id that travels in MQTT topics and tokens."""
UnlockSeconds = Annotated[int, Field(ge=1, le=3600, description="Default unlock time, seconds")]
Channel = Annotated[int, Field(ge=0, le=65535, description="Relay channel on the gateway")]


class BuildingCreate(RequestModel):
    name: Name = Field(examples=["Deichman Grünerløkka"])
    owner_id: str = Field(min_length=1, max_length=64, examples=["own_5d1c0e2f9a3b4c7d"])
    timezone: Timezone = Field(examples=["Europe/Oslo"])


class BuildingUpdate(PatchModel):
    name: Name | None = Field(default=None, examples=["Deichman Grünerløkka"])
    timezone: Timezone | None = Field(default=None, examples=["Europe/Oslo"])
    owner_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Move the building to another owner (administrators only)",
    )


class BuildingOut(BaseModel):
    id: str = Field(examples=["bld_9a8b7c6d5e4f3a2b"])
    name: str = Field(examples=["Deichman Grünerløkka"])
    owner_id: str | None = Field(examples=["own_5d1c0e2f9a3b4c7d"])
    timezone: str = Field(examples=["Europe/Oslo"])
    lockdown_since: datetime | None = Field(examples=[None])
    lockdown_reason: str | None = Field(examples=[None])
    mode_version: int = Field(examples=[0])
    created_at: datetime


class DoorCreate(RequestModel):
    id: TopicId | None = Field(
        default=None,
        description="Optional id; generated when absent",
        examples=["grunerlokka-main"],
    )
    name: Name = Field(examples=["Main entrance"])
    gateway_id: str = Field(min_length=1, max_length=64, examples=["gw_1a2b3c4d5e6f7a8b"])
    channel: Channel = Field(examples=[1])
    default_unlock_seconds: UnlockSeconds = 5


class DoorUpdate(PatchModel):
    name: Name | None = Field(default=None, examples=["Main entrance"])
    enabled: bool | None = Field(default=None, examples=[False])
    default_unlock_seconds: UnlockSeconds | None = Field(default=None, examples=[8])


class DoorOut(BaseModel):
    id: str = Field(examples=["grunerlokka-main"])
    name: str = Field(examples=["Main entrance"])
    building_id: str = Field(examples=["bld_9a8b7c6d5e4f3a2b"])
    gateway_id: str = Field(examples=["gw_1a2b3c4d5e6f7a8b"])
    channel: int = Field(examples=[1])
    default_unlock_seconds: int = Field(examples=[5])
    enabled: bool = Field(examples=[True])
    passage_schedule: dict[str, Any] | None = Field(examples=[None])
    created_at: datetime


class HolidayCreate(RequestModel):
    date: dt.date = Field(examples=["2025-12-25"])
    name: Name = Field(examples=["Første juledag"])


class HolidayOut(BaseModel):
    id: str = Field(examples=["hol_0f1e2d3c4b5a6978"])
    building_id: str = Field(examples=["bld_9a8b7c6d5e4f3a2b"])
    date: dt.date
    name: str = Field(examples=["Første juledag"])


class DoorStatusOut(BaseModel):
    """Live reachability from the broker plus the last state the gateway reported."""

    door_id: str = Field(examples=["grunerlokka-main"])
    gateway_id: str = Field(examples=["gw_1a2b3c4d5e6f7a8b"])
    online: bool = Field(description="The door's gateway is connected now", examples=[True])
    lock_state: str | None = Field(
        description="locked, unlocked or jammed; null before the first report",
        examples=["locked"],
    )
    door_state: str | None = Field(description="open or closed", examples=["closed"])
    battery_pct: int | None = Field(examples=[87])
    alarms: list[str] = Field(
        description="Active alarms: forced_open, held_open, jammed, tamper, low_battery",
        examples=[[]],
    )
    last_event: str | None = Field(examples=["locked"])
    last_event_at: datetime | None
