"""Users. The id is pseudonymous; no national id number is ever stored."""

from datetime import datetime
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
    created_at: datetime = timestamp_field(default_factory=utcnow)
