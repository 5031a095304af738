"""Request and response models for gateways and their broker credentials."""

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field

from api.buildings.schemas import TopicId
from api.owners.schemas import Name, PatchModel, RequestModel

RESERVED_IDS = frozenset({"citykey-api", "healthcheck"})
"""Broker user names of other clients. The gateway id is its broker user name, and the ACL's
per-user patterns apply to every user, so a gateway must never take one of these."""


def _not_reserved(value: str) -> str:
    if value.lower() in RESERVED_IDS:
        raise ValueError(f"{value!r} is reserved for another broker user")
    return value


GatewayIdIn = Annotated[TopicId, AfterValidator(_not_reserved)]


class GatewayCreate(RequestModel):
    id: GatewayIdIn | None = Field(
        default=None,
        description="Optional id (also its broker user name); generated when absent",
        examples=["gw-grunerlokka-1"],
    )
    name: Name = Field(examples=["Grünerløkka library, ground floor"])


class GatewayUpdate(PatchModel):
    name: Name | None = Field(default=None, examples=["Grünerløkka library, ground floor"])


class GatewayOut(BaseModel):
    """A gateway; never its credential."""

    id: str = Field(examples=["gw-grunerlokka-1"])
    name: str = Field(examples=["Grünerløkka library, ground floor"])
    building_id: str | None = Field(examples=["bld_9a8b7c6d5e4f3a2b"])
    online: bool = Field(
        description="Connected to the broker now (live, from this API instance's relay)",
        examples=[True],
    )
    recorded_online: bool = Field(
        description="The online flag last written to the database", examples=[True]
    )
    last_seen: datetime | None = Field(description="Last status message recorded")
    software: str | None = Field(
        description="Software version the gateway reported (live)", examples=["0.1.0"]
    )
    mode_version: int = Field(
        description="Building mode (lockdown) version the gateway last acknowledged",
        examples=[0],
    )
    has_credential: bool = Field(examples=[True])
    created_at: datetime
    keyset_version: int | None = Field(
        default=None,
        description="Signed key set version the gateway trusts (live; 0: first-boot JWKS only)",
        examples=[4],
    )
    clock_offset_s: float | None = Field(
        default=None,
        description="Gateway clock minus API clock, seconds: the worse of the gateway's own "
        "estimate and the API's, from its recent heartbeats",
        examples=[0.2],
    )
    clock_ok: bool | None = Field(
        default=None,
        description="False when the clock is off by more than half the gateways' 5 s leeway; "
        "null when unknown",
        examples=[True],
    )


class GatewayCredential(BaseModel):
    """The broker login of a gateway. Shown once: only a hash is kept."""

    username: str = Field(examples=["gw-grunerlokka-1"])
    password: str = Field(examples=["q3v1Nw0m1oXr5b2mFQy7dD8c3kz2gH1T"])


class GatewayCreated(BaseModel):
    gateway: GatewayOut
    credential: GatewayCredential
