"""A public-hours rule on a door: schedule plus eligibility (minimum age, group)."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from api.common import timestamp_field, utcnow


class PublicAccess(SQLModel, table=True):
    __tablename__ = "public_access"

    id: str = Field(primary_key=True, max_length=64)
    door_id: str = Field(foreign_key="doors.id", index=True, max_length=64)
    schedule: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    min_age: int | None = Field(default=None, ge=0, le=150)
    group_id: str | None = Field(default=None, foreign_key="groups.id", max_length=64)
    respect_holidays: bool = True
    enabled: bool = True
    created_by: str | None = Field(default=None, max_length=64)
    created_at: datetime = timestamp_field(default_factory=utcnow)
