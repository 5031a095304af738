"""Buildings (with an IANA timezone), doors (one gateway channel each), holidays and the
last known state of each door."""

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from api.common import timestamp_field, utcnow


class Building(SQLModel, table=True):
    __tablename__ = "buildings"

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    owner_id: str | None = Field(default=None, foreign_key="owners.id", index=True, max_length=64)
    timezone: str = Field(default="Europe/Oslo", max_length=64)
    lockdown_since: datetime | None = timestamp_field(nullable=True, default=None)
    lockdown_by: str | None = Field(default=None, max_length=64)
    lockdown_reason: str | None = Field(default=None, max_length=500)
    mode_version: int = Field(default=0)
    """Bumped on every lockdown change; gateways acknowledge the version they applied."""
    created_at: datetime = timestamp_field(default_factory=utcnow)


class Door(SQLModel, table=True):
    __tablename__ = "doors"
    __table_args__ = (UniqueConstraint("gateway_id", "channel", name="uq_doors_gateway_channel"),)

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    building_id: str = Field(foreign_key="buildings.id", index=True, max_length=64)
    gateway_id: str = Field(foreign_key="gateways.id", index=True, max_length=64)
    channel: int = Field(ge=0)
    default_unlock_seconds: int = Field(default=5, ge=1, le=3600)
    enabled: bool = True
    passage_schedule: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = timestamp_field(default_factory=utcnow)


class Holiday(SQLModel, table=True):
    """A date the building is closed for scheduled access (grants with schedules, public
    hours, passage mode). Unscheduled grants are not affected."""

    __tablename__ = "holidays"
    __table_args__ = (UniqueConstraint("building_id", "date", name="uq_holiday_building_date"),)

    id: str = Field(primary_key=True, max_length=64)
    building_id: str = Field(foreign_key="buildings.id", index=True, max_length=64)
    date: date
    name: str = Field(max_length=200)


class DoorStatus(SQLModel, table=True):
    """The last state each door's gateway reported."""

    __tablename__ = "door_status"

    door_id: str = Field(foreign_key="doors.id", primary_key=True, max_length=64)
    lock_state: str | None = Field(default=None, max_length=16)
    door_state: str | None = Field(default=None, max_length=16)
    battery_pct: int | None = None
    alarms: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    last_event: str | None = Field(default=None, max_length=64)
    last_event_at: datetime | None = timestamp_field(nullable=True, default=None)
