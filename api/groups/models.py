"""Groups belong to an owner; their members are citizens."""

from datetime import datetime

from sqlmodel import Field, SQLModel

from api.common import timestamp_field, utcnow


class Group(SQLModel, table=True):
    __tablename__ = "groups"

    id: str = Field(primary_key=True, max_length=64)
    owner_id: str = Field(foreign_key="owners.id", index=True, max_length=64)
    name: str = Field(max_length=200)
    description: str = Field(default="", max_length=2000)
    created_at: datetime = timestamp_field(default_factory=utcnow)


class GroupMember(SQLModel, table=True):
    __tablename__ = "group_members"

    group_id: str = Field(foreign_key="groups.id", primary_key=True, max_length=64)
    user_id: str = Field(foreign_key="users.id", primary_key=True, index=True, max_length=64)
    added_by: str | None = Field(default=None, max_length=64)
    added_at: datetime = timestamp_field(default_factory=utcnow)
