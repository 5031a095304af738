"""Request and response models for groups and their members."""

from datetime import datetime
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from api.common import as_utc
from api.groups.models import Group, GroupMember
from api.identity.models import User

GroupName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Description = Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)]


class GroupCreate(BaseModel):
    """A new group of citizens, belonging to one owner."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "owner_id": "own_1a2b3c4d5e6f7a8b",
                    "name": "Grünerløkka choir",
                    "description": "Rehearses Tuesdays in the community hall",
                }
            ]
        },
    )

    owner_id: str = Field(min_length=1, max_length=64)
    name: GroupName
    description: Description = ""


class GroupUpdate(BaseModel):
    """Fields to change; absent fields stay as they are. The owner cannot change: grants to
    the group rely on it."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "Grünerløkka choir (adults)"}]},
    )

    name: GroupName | None = None
    description: Description | None = None

    @model_validator(mode="after")
    def _not_null(self) -> Self:
        for name in ("name", "description"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class GroupOut(BaseModel):
    """A group as a manager sees it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "grp_8b1e0c9d2a4f6e71",
                    "owner_id": "own_1a2b3c4d5e6f7a8b",
                    "name": "Grünerløkka choir",
                    "description": "Rehearses Tuesdays in the community hall",
                    "member_count": 23,
                    "writable": True,
                    "created_at": "2025-08-20T09:12:00Z",
                }
            ]
        }
    )

    id: str
    owner_id: str
    name: str
    description: str
    member_count: int
    writable: bool = Field(
        description="Whether the caller may rename, delete and change members (managers of "
        "one building may only read their owner's groups and use them in grants)"
    )
    created_at: datetime

    @classmethod
    def of(cls, group: Group, *, member_count: int, writable: bool) -> "GroupOut":
        return cls(
            id=group.id,
            owner_id=group.owner_id,
            name=group.name,
            description=group.description,
            member_count=member_count,
            writable=writable,
            created_at=as_utc(group.created_at),
        )


class MemberOut(BaseModel):
    """One member of a group."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": "u_3f9c2a7be01d4c55",
                    "display_name": "Kari",
                    "added_by": "u_manager",
                    "added_at": "2025-08-20T09:15:00Z",
                }
            ]
        }
    )

    user_id: str
    display_name: str
    added_by: str | None
    added_at: datetime

    @classmethod
    def of(cls, member: GroupMember, user: User) -> "MemberOut":
        return cls(
            user_id=member.user_id,
            display_name=user.display_name,
            added_by=member.added_by,
            added_at=as_utc(member.added_at),
        )
