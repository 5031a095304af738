"""Request and response models of the offline token endpoints."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from api.offline.models import OfflineToken


class OfflineTokenRequest(BaseModel):
    """The app's public key, to which the token is bound."""

    public_key: Any = Field(
        description="The app's public key as a JWK: kty EC, crv P-256, x, y (no private part)",
        examples=[
            {
                "kty": "EC",
                "crv": "P-256",
                "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
            }
        ],
    )


class OfflineTokenIssued(BaseModel):
    """A new offline token. Keep it with the key pair; present it with a fresh proof."""

    token: str = Field(description="Compact JWS, typ citykey-offline+jwt")
    jti: str
    door_id: str
    gateway_id: str
    key_thumbprint: str = Field(description="RFC 7638 thumbprint of the bound key (cnf.jkt)")
    unlock_seconds: int = Field(description="How long the door opens at each use (dur)")
    issued_at: datetime
    expires_at: datetime


class OfflineTokenView(BaseModel):
    """One of my offline tokens (the token itself is never shown again)."""

    jti: str
    door_id: str
    gateway_id: str
    key_thumbprint: str
    issued_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    active: bool = Field(description="Neither revoked nor expired")

    @classmethod
    def of(cls, row: OfflineToken, now: datetime) -> "OfflineTokenView":
        return cls(
            jti=row.jti,
            door_id=row.door_id,
            gateway_id=row.gateway_id,
            key_thumbprint=row.key_thumbprint,
            issued_at=row.issued_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
            active=row.revoked_at is None and row.expires_at > now,
        )
