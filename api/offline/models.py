"""Offline door tokens: issued to a citizen's app, bound to a key the app holds."""

from datetime import datetime

from sqlmodel import Field, SQLModel

from api.common import timestamp_field, utcnow


class OfflineToken(SQLModel, table=True):
    __tablename__ = "offline_tokens"

    jti: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(foreign_key="users.id", index=True, max_length=64)
    door_id: str = Field(foreign_key="doors.id", index=True, max_length=64)
    gateway_id: str = Field(max_length=64, index=True)
    key_thumbprint: str = Field(max_length=64)
    """RFC 7638 thumbprint of the app's public key (the token's cnf.jkt)."""
    rule_id: str | None = Field(default=None, max_length=64)
    issued_at: datetime = timestamp_field(default_factory=utcnow)
    expires_at: datetime = timestamp_field(index=True)
    revoked_at: datetime | None = timestamp_field(nullable=True, default=None)
