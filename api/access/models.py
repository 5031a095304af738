"""Grants: a subject (citizen, group, or a phone number not yet claimed) may open a door or
every door of a building, within an optional window and weekly schedule, optionally a
limited number of times. Shares and bookings are grants too."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Column
from sqlmodel import Field, SQLModel

from api.common import timestamp_field, utcnow


class Grant(SQLModel, table=True):
    __tablename__ = "grants"
    __table_args__ = (
        CheckConstraint("(door_id IS NULL) <> (building_id IS NULL)", name="one_target"),
        CheckConstraint(
            "(CASE WHEN user_id IS NULL THEN 0 ELSE 1 END)"
            " + (CASE WHEN group_id IS NULL THEN 0 ELSE 1 END)"
            " + (CASE WHEN subject_phone IS NULL THEN 0 ELSE 1 END) = 1",
            name="one_subject",
        ),
    )

    id: str = Field(primary_key=True, max_length=64)
    user_id: str | None = Field(default=None, foreign_key="users.id", index=True, max_length=64)
    group_id: str | None = Field(default=None, foreign_key="groups.id", index=True, max_length=64)
    subject_phone: str | None = Field(default=None, index=True, max_length=32)
    door_id: str | None = Field(default=None, foreign_key="doors.id", index=True, max_length=64)
    building_id: str | None = Field(
        default=None, foreign_key="buildings.id", index=True, max_length=64
    )
    valid_from: datetime | None = timestamp_field(nullable=True, default=None)
    valid_until: datetime | None = timestamp_field(nullable=True, default=None)
    schedule: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    respect_holidays: bool = True
    max_uses: int | None = Field(default=None, ge=1)
    use_count: int = 0
    shareable: bool = False
    parent_grant_id: str | None = Field(
        default=None, foreign_key="grants.id", index=True, max_length=64
    )
    booking_id: str | None = Field(
        default=None, foreign_key="bookings.id", index=True, max_length=64
    )
    note: str = Field(default="", max_length=500)
    created_by: str | None = Field(default=None, max_length=64)
    created_at: datetime = timestamp_field(default_factory=utcnow)
    revoked_at: datetime | None = timestamp_field(nullable=True, default=None)
    revoked_by: str | None = Field(default=None, max_length=64)
