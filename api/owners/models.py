"""Owners own buildings; manager scopes say which owners or buildings a manager manages."""

from datetime import datetime

from sqlalchemy import CheckConstraint, Index, text
from sqlmodel import Field, SQLModel

from api.common import timestamp_field, utcnow


class Owner(SQLModel, table=True):
    __tablename__ = "owners"

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    created_at: datetime = timestamp_field(default_factory=utcnow)


class ManagerScope(SQLModel, table=True):
    """One line of a manager's remit: a whole owner, or one building."""

    __tablename__ = "manager_scopes"
    __table_args__ = (
        CheckConstraint("(owner_id IS NULL) <> (building_id IS NULL)", name="one_target"),
        # One row per (user, owner) and per (user, building). A plain UNIQUE over all three
        # columns never fires, because one of them is always NULL.
        Index(
            "uq_manager_scopes_user_owner",
            "user_id",
            "owner_id",
            unique=True,
            postgresql_where=text("owner_id IS NOT NULL"),
            sqlite_where=text("owner_id IS NOT NULL"),
        ),
        Index(
            "uq_manager_scopes_user_building",
            "user_id",
            "building_id",
            unique=True,
            postgresql_where=text("building_id IS NOT NULL"),
            sqlite_where=text("building_id IS NOT NULL"),
        ),
    )

    id: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(foreign_key="users.id", index=True, max_length=64)
    owner_id: str | None = Field(default=None, foreign_key="owners.id", max_length=64)
    building_id: str | None = Field(default=None, foreign_key="buildings.id", max_length=64)
    created_at: datetime = timestamp_field(default_factory=utcnow)
