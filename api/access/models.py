"""Grants: a user may open a door, or every door of a building, within a validity window."""

from datetime import datetime

from sqlalchemy import CheckConstraint
from sqlmodel import Field, SQLModel

from api.common import timestamp_field, utcnow


class Grant(SQLModel, table=True):
    __tablename__ = "grants"
    __table_args__ = (
        CheckConstraint("(door_id IS NULL) <> (building_id IS NULL)", name="ck_grants_one_target"),
    )

    id: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(foreign_key="users.id", index=True, max_length=64)
    door_id: str | None = Field(default=None, foreign_key="doors.id", index=True, max_length=64)
    building_id: str | None = Field(
        default=None, foreign_key="buildings.id", index=True, max_length=64
    )
    valid_from: datetime | None = timestamp_field(nullable=True, default=None)
    valid_until: datetime | None = timestamp_field(nullable=True, default=None)
    created_by: str | None = Field(default=None, max_length=64)
    created_at: datetime = timestamp_field(default_factory=utcnow)
    revoked_at: datetime | None = timestamp_field(nullable=True, default=None)
