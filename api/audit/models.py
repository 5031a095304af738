"""Audit events. Rows are only ever inserted."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Integer
from sqlmodel import Field, SQLModel

from api.common import timestamp_field, utcnow


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_events"

    # BIGINT on PostgreSQL, INTEGER (rowid alias, auto-increment) on SQLite.
    id: int | None = Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
    )
    ts: datetime = timestamp_field(default_factory=utcnow, index=True)
    actor: str | None = Field(default=None, max_length=64, index=True)
    action: str = Field(max_length=64)
    building_id: str | None = Field(default=None, max_length=64, index=True)
    door_id: str | None = Field(default=None, max_length=64, index=True)
    gateway_id: str | None = Field(default=None, max_length=64)
    decision: str | None = Field(default=None, max_length=16)
    reason: str | None = Field(default=None, max_length=64)
    command_id: str | None = Field(default=None, max_length=64, index=True)
    result: str | None = Field(default=None, max_length=32)
    latency_ms: float | None = Field(default=None)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    prev_hash: str | None = Field(default=None, max_length=64)
    """Hash of the record before this one in the chain (tamper evidence)."""
    hash: str | None = Field(default=None, max_length=64, index=True)
    """SHA-256 over prev_hash and this record's content; None until the record is sealed."""
