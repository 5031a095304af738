"""Buildings (with an IANA timezone) and doors (one gateway channel each)."""

from datetime import datetime

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from api.common import timestamp_field, utcnow


class Building(SQLModel, table=True):
    __tablename__ = "buildings"

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    timezone: str = Field(default="Europe/Oslo", max_length=64)
    created_at: datetime = timestamp_field(default_factory=utcnow)


class Door(SQLModel, table=True):
    __tablename__ = "doors"
    __table_args__ = (UniqueConstraint("gateway_id", "channel", name="uq_doors_gateway_channel"),)

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    building_id: str = Field(foreign_key="buildings.id", index=True, max_length=64)
    gateway_id: str = Field(foreign_key="gateways.id", index=True, max_length=64)
    channel: int = Field(ge=0)
    default_unlock_seconds: int = Field(default=5, ge=1, le=3600)
    created_at: datetime = timestamp_field(default_factory=utcnow)
