"""Gateways. The broker credential is stored only as a hash."""

from datetime import datetime

from sqlalchemy import BigInteger
from sqlmodel import Field, SQLModel

from api.common import timestamp_field, utcnow


class Gateway(SQLModel, table=True):
    __tablename__ = "gateways"

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    building_id: str | None = Field(default=None, foreign_key="buildings.id", max_length=64)
    credential_hash: str | None = Field(default=None, max_length=255)
    online: bool = Field(default=False)
    last_seen: datetime | None = timestamp_field(nullable=True, default=None)
    mode_version: int = Field(default=0)
    """The building mode version (lockdown) this gateway last acknowledged."""
    mode_acked_at: datetime | None = timestamp_field(nullable=True, default=None)
    last_seq: int = Field(default=0, sa_type=BigInteger)
    """Highest event sequence number stored with no gap below it."""
    clock_offset_s: float | None = Field(default=None)
    """Gateway clock minus API clock, from its last heartbeat."""
    revocations_version: int = Field(default=0, sa_type=BigInteger)
    """The offline revocation list version this gateway last acknowledged."""
    created_at: datetime = timestamp_field(default_factory=utcnow)
