"""Events as gateways journal them: each (gateway, seq) stored exactly once; gaps flagged."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Integer, UniqueConstraint
from sqlmodel import Field, SQLModel

from api.common import timestamp_field, utcnow


class GatewayEventRecord(SQLModel, table=True):
    __tablename__ = "gateway_events"
    __table_args__ = (UniqueConstraint("gateway_id", "seq", name="uq_gateway_events_seq"),)

    id: int | None = Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
    )
    gateway_id: str = Field(max_length=64, index=True)
    seq: int = Field(sa_type=BigInteger)
    kind: str = Field(max_length=64)
    door_id: str | None = Field(default=None, max_length=64, index=True)
    ts: datetime = timestamp_field()
    """When it happened, by the gateway's clock."""
    received_at: datetime = timestamp_field(default_factory=utcnow)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class GatewayEventGap(SQLModel, table=True):
    """Sequence numbers a gateway skipped: flagged when seen, closed if they arrive late."""

    __tablename__ = "gateway_event_gaps"

    id: int | None = Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
    )
    gateway_id: str = Field(max_length=64, index=True)
    from_seq: int = Field(sa_type=BigInteger)
    to_seq: int = Field(sa_type=BigInteger)
    detected_at: datetime = timestamp_field(default_factory=utcnow)
    closed_at: datetime | None = timestamp_field(nullable=True, default=None)
