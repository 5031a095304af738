"""Small helpers shared by every domain package."""

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlmodel import Field, SQLModel

# Named constraints, so that later migrations (SQLite batch mode above all) can address them.
# Set here because every models module imports this one before defining its tables.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes; everything stored is UTC, so say so."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def new_id(prefix: str) -> str:
    """A random, URL- and topic-safe id such as ``door_3f9c2a7be01d4c55``."""
    return f"{prefix}_{secrets.token_hex(8)}"


def timestamp_field(*, nullable: bool = False, index: bool = False, **kwargs: Any) -> Any:
    """A timezone-aware timestamp column."""
    return Field(
        sa_type=DateTime(timezone=True),
        nullable=nullable,
        index=index,
        **kwargs,
    )
