"""Request and response models for public opening hours."""

from datetime import datetime
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.config import JsonDict

from api.buildings.models import Building
from api.common import as_utc
from api.public_access.models import PublicAccess
from api.schedules import Schedule

_LIBRARY: JsonDict = {
    "weekly": [{"weekday": d, "start": "07:00", "end": "23:00"} for d in range(7)],
    "closed_dates": [],
    "open_days": [],
}


class PublicAccessCreate(BaseModel):
    """Public hours on a door: when any eligible signed-in citizen may open it."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"schedule": _LIBRARY, "min_age": 15, "respect_holidays": True},
                {"schedule": _LIBRARY, "group_id": "grp_8b1e0c9d2a4f6e71"},
            ]
        },
    )

    schedule: Schedule = Field(description="Weekly hours in the building's local time")
    min_age: int | None = Field(default=None, ge=0, le=150, description="Minimum age in years")
    group_id: str | None = Field(
        default=None, min_length=1, max_length=64, description="Only members of this group"
    )
    respect_holidays: bool = Field(default=True, description="Closed on the building's holidays")


class PublicAccessUpdate(BaseModel):
    """Fields to change; absent fields stay. ``null`` clears ``min_age`` or ``group_id``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"min_age": 16}, {"enabled": False}]},
    )

    schedule: Schedule | None = None
    min_age: int | None = Field(default=None, ge=0, le=150)
    group_id: str | None = Field(default=None, min_length=1, max_length=64)
    respect_holidays: bool | None = None
    enabled: bool | None = Field(default=None, description="Switch the rule off without losing it")

    @model_validator(mode="after")
    def _not_null(self) -> Self:
        for name in ("schedule", "respect_holidays", "enabled"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class PublicAccessOut(BaseModel):
    """A public-hours rule."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "pub_4e5f6a7b8c9d0e1f",
                    "door_id": "door_3f9c2a7be01d4c55",
                    "building_id": "bld_5a2d9e1f0b3c4d87",
                    "timezone": "Europe/Oslo",
                    "schedule": _LIBRARY,
                    "min_age": 15,
                    "group_id": None,
                    "respect_holidays": True,
                    "enabled": True,
                    "created_by": "u_manager",
                    "created_at": "2025-08-20T09:12:00Z",
                }
            ]
        }
    )

    id: str
    door_id: str
    building_id: str
    timezone: str = Field(description="The building's timezone: the schedule's local time")
    schedule: Schedule
    min_age: int | None
    group_id: str | None
    respect_holidays: bool
    enabled: bool
    created_by: str | None
    created_at: datetime

    @classmethod
    def of(cls, rule: PublicAccess, building: Building) -> "PublicAccessOut":
        return cls(
            id=rule.id,
            door_id=rule.door_id,
            building_id=building.id,
            timezone=building.timezone,
            schedule=Schedule.model_validate(rule.schedule),
            min_age=rule.min_age,
            group_id=rule.group_id,
            respect_holidays=rule.respect_holidays,
            enabled=rule.enabled,
            created_by=rule.created_by,
            created_at=as_utc(rule.created_at),
        )
