"""Request and response models of the citizen self-service endpoints (/v1/me/...)."""

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

E164_PATTERN = r"^\+[1-9][0-9]{6,14}$"
"""E.164: a plus, a country code that does not start with 0, at most 15 digits in all."""

Via = Literal["grant", "share", "booking", "public"]
ShareStatus = Literal["upcoming", "active", "ended"]


class MyDoor(BaseModel):
    """One door the citizen may open now or later."""

    door_id: str = Field(examples=["door_3f9c2a7be01d4c55"])
    name: str = Field(examples=["Main entrance"])
    can_open_now: bool
    reason: str | None = Field(
        default=None,
        description="Why the door cannot be opened now (a policy deny reason code)",
        examples=["outside_schedule"],
    )
    next_window: datetime | None = Field(
        default=None, description="When the door can next be opened, when known"
    )
    via: Via | None = Field(
        default=None,
        description="The kind of rule that lets the citizen in now (grant, share, booking, "
        "public); null when the door cannot be opened now",
    )


class MyBuilding(BaseModel):
    """A building with the citizen's doors in it."""

    building_id: str = Field(examples=["bld_grunerlokka_library"])
    building_name: str = Field(examples=["Grünerløkka library"])
    timezone: str = Field(examples=["Europe/Oslo"])
    doors: list[MyDoor]


class ActivityItem(BaseModel):
    """One row of the citizen's own unlock history."""

    id: int
    ts: datetime
    action: str = Field(examples=["unlock.completed"])
    door_id: str | None
    door_name: str | None = Field(examples=["Main entrance"])
    building_id: str | None
    decision: str | None = Field(examples=["allow"])
    reason: str | None = Field(examples=["outside_schedule"])
    result: str | None = Field(examples=["unlocked"])
    command_id: str | None


class ActivityPage(BaseModel):
    items: list[ActivityItem]
    next_cursor: str | None = Field(
        default=None, description="Pass as ?cursor= for the next (older) page; null at the end"
    )


class ShareCreate(BaseModel):
    """Share one of my shareable grants on a door with another citizen, for a window."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "door_id": "door_3f9c2a7be01d4c55",
                    "recipient_user_id": "u_citizen_ola",
                    "valid_from": "2025-05-02T16:00:00+02:00",
                    "valid_until": "2025-05-02T20:00:00+02:00",
                }
            ]
        },
    )

    door_id: str = Field(min_length=1, max_length=64)
    recipient_user_id: str = Field(min_length=1, max_length=64)
    valid_from: AwareDatetime
    valid_until: AwareDatetime


class ShareView(BaseModel):
    """A share: a grant derived from another grant, living only while that one does."""

    grant_id: str = Field(examples=["grt_0c1d2e3f4a5b6c7d"])
    door_id: str
    door_name: str
    building_id: str
    sharer_user_id: str
    recipient_user_id: str
    parent_grant_id: str
    valid_from: datetime
    valid_until: datetime
    status: ShareStatus = Field(
        description="upcoming: not started; active: usable within its window; ended: the "
        "grant it was shared from has ended or been revoked"
    )
    created_at: datetime


class SharesView(BaseModel):
    given: list[ShareView] = Field(description="Shares I gave that have not ended or been revoked")
    received: list[ShareView] = Field(description="Shares I received (newest 200)")


class PhoneStart(BaseModel):
    """Ask for a verification code for a phone number."""

    model_config = ConfigDict(extra="forbid")

    phone: str = Field(
        pattern=E164_PATTERN,
        description="E.164, no spaces",
        examples=["+4791234567"],
    )


class PhoneChallenge(BaseModel):
    phone: str = Field(examples=["+4791234567"])
    expires_at: datetime
    attempts_allowed: int = Field(examples=[5])


class PhoneVerify(BaseModel):
    """The code received by text message."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(pattern=r"^[0-9]{6}$", examples=["042917"])


class PhoneVerified(BaseModel):
    phone: str = Field(examples=["+4791234567"])
    phone_verified_at: datetime
    claimed_grants: int = Field(
        description="Grants that waited for this number (e.g. from bookings) and are now yours"
    )
