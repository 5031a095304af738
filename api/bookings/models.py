"""Booking clients (machine credentials) and the bookings they push."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from api.common import timestamp_field, utcnow


class BookingClient(SQLModel, table=True):
    """A booking system. Its secret is stored hashed; its scope is one owner's buildings."""

    __tablename__ = "booking_clients"

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    owner_id: str = Field(foreign_key="owners.id", index=True, max_length=64)
    secret_hash: str = Field(max_length=255)
    enabled: bool = True
    created_at: datetime = timestamp_field(default_factory=utcnow)


class Booking(SQLModel, table=True):
    """The latest version of one booking; the grants it created carry its id."""

    __tablename__ = "bookings"
    __table_args__ = (UniqueConstraint("client_id", "external_id", name="uq_booking_external"),)

    id: str = Field(primary_key=True, max_length=64)
    client_id: str = Field(foreign_key="booking_clients.id", index=True, max_length=64)
    external_id: str = Field(max_length=128)
    version: int = Field(ge=0)
    deleted: bool = False
    valid_from: datetime = timestamp_field()
    valid_until: datetime = timestamp_field()
    document: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    updated_at: datetime = timestamp_field(default_factory=utcnow)


class PhoneVerification(SQLModel, table=True):
    """A one-time code sent to a phone number; stored hashed, a few attempts allowed."""

    __tablename__ = "phone_verifications"

    id: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(foreign_key="users.id", index=True, max_length=64)
    phone: str = Field(max_length=32)
    code_hash: str = Field(max_length=128)
    attempts: int = 0
    expires_at: datetime = timestamp_field()
    created_at: datetime = timestamp_field(default_factory=utcnow)
