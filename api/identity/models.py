"""Users. The id is pseudonymous; no national id number is ever stored."""

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from api.common import timestamp_field, utcnow


class Role(StrEnum):
    ADMIN = "admin"
    MANAGER = "manager"
    CITIZEN = "citizen"


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: str = Field(primary_key=True, max_length=64)
    display_name: str = Field(max_length=200)
    roles: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    birth_date: date | None = Field(default=None, description="For age rules of public hours")
    phone: str | None = Field(default=None, max_length=32, unique=True)
    """E.164, set only once verified."""
    phone_verified_at: datetime | None = timestamp_field(nullable=True, default=None)
    created_at: datetime = timestamp_field(default_factory=utcnow)

    def has_role(self, role: Role) -> bool:
        return role.value in self.roles
