"""Request and response models for owners and manager scopes, and the pieces every management
listing shares: the page shape, opaque cursors, PATCH bodies that refuse explicit nulls."""

import base64
import binascii
import json
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from api.errors import ApiError

T = TypeVar("T")

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
"""A display name: trimmed, never blank."""

Limit = Annotated[int, Query(ge=1, le=200, description="Page size")]
Cursor = Annotated[
    str | None,
    Query(max_length=512, description="The `next_cursor` of the previous page"),
]
DEFAULT_LIMIT = 50


class Page(BaseModel, Generic[T]):
    """One page of a listing. Pass ``next_cursor`` back as ``?cursor=`` for the next one;
    ``null`` means this was the last page."""

    items: list[T]
    next_cursor: str | None = Field(default=None, examples=[None])


def encode_cursor(*parts: str) -> str:
    """An opaque cursor for keyset pagination (the sort key of the last row returned)."""
    raw = json.dumps(list(parts), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, size: int) -> list[str]:
    """The parts of a cursor made by :func:`encode_cursor`; 422 invalid_cursor otherwise."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        parts = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        parts = None
    if (
        not isinstance(parts, list)
        or len(parts) != size
        or not all(isinstance(p, str) for p in parts)
    ):
        raise ApiError(422, "invalid_cursor", "the cursor is not one this listing gave out")
    return parts


def page_of(items: list[T], limit: int, key: Any) -> Page[T]:
    """Cut ``items`` (fetched with ``limit + 1`` rows) into a page; ``key(item)`` gives the
    cursor parts of the last item kept."""
    if len(items) <= limit:
        return Page(items=items)
    kept = items[:limit]
    return Page(items=kept, next_cursor=encode_cursor(*key(kept[-1])))


class RequestModel(BaseModel):
    """Request bodies refuse unknown fields, so a typo is an error and not a silent no-op."""

    model_config = ConfigDict(extra="forbid")


class PatchModel(RequestModel):
    """A partial update: absent fields stay as they are; ``null`` is refused for every field
    (none of the patchable fields here may be emptied)."""

    @model_validator(mode="after")
    def _no_nulls(self) -> "PatchModel":
        nulls = sorted(f for f in self.model_fields_set if getattr(self, f) is None)
        if nulls:
            raise ValueError(f"may not be null: {', '.join(nulls)}")
        return self

    def changes(self) -> dict[str, Any]:
        """The fields the caller sent."""
        return {f: getattr(self, f) for f in sorted(self.model_fields_set)}


class OwnerCreate(RequestModel):
    name: Name = Field(examples=["Bydel Grünerløkka"])


class OwnerUpdate(PatchModel):
    name: Name | None = Field(default=None, examples=["Bydel Grünerløkka"])


class OwnerOut(BaseModel):
    id: str = Field(examples=["own_5d1c0e2f9a3b4c7d"])
    name: str = Field(examples=["Bydel Grünerløkka"])
    created_at: datetime


class ManagerAdd(RequestModel):
    user_id: str = Field(min_length=1, max_length=64, examples=["u_manager_demo"])


class ManagerOut(BaseModel):
    """One manager scope: a user managing a whole owner or one building."""

    user_id: str = Field(examples=["u_manager_demo"])
    display_name: str = Field(examples=["Kari Nordmann"])
    owner_id: str | None = Field(default=None, examples=["own_5d1c0e2f9a3b4c7d"])
    building_id: str | None = Field(default=None, examples=[None])
    created_at: datetime
