"""Request and response models of the booking systems' API and of booking client management."""

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from api.me.schemas import E164_PATTERN

MAX_VERSION = 2**31 - 1
"""The version column is a 32-bit integer."""
EXTERNAL_ID_PATTERN = r"^[A-Za-z0-9._:~-]{1,128}$"

ObjectId = Annotated[str, StringConstraints(min_length=1, max_length=64)]

# -- booking clients (managed by building managers) -------------------------------------------


class BookingClientCreate(BaseModel):
    """A booking system allowed to push bookings for one owner's buildings."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"owner_id": "own_oslo_kommune", "name": "Aktiv Kommune"}]},
    )

    owner_id: ObjectId
    name: str = Field(min_length=1, max_length=200)


class BookingClientView(BaseModel):
    client_id: str = Field(examples=["bc_5b2f0e9d1c3a4b7e"])
    owner_id: str
    name: str
    enabled: bool
    created_at: datetime


class BookingClientCreated(BookingClientView):
    client_secret: str = Field(
        description="Shown once, never again: store it in the booking system now",
        examples=["cks_q3J0c2VjcmV0LWV4YW1wbGUtb25seS1ub3QtcmVhbA"],
    )


class BookingClientPage(BaseModel):
    items: list[BookingClientView]
    next_cursor: str | None = None


# -- OAuth token -----------------------------------------------------------------------------


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int = Field(examples=[3600])
    scope: str = Field(examples=["bookings"])


# -- bookings (pushed by booking systems) -----------------------------------------------------


class Recipient(BaseModel):
    """Who the booking is for: a citykey user id, or a phone number (E.164). A number that
    no citizen has verified yet waits: the grant becomes the citizen's when they verify it."""

    model_config = ConfigDict(extra="forbid")

    user_id: ObjectId | None = None
    phone: str | None = Field(default=None, pattern=E164_PATTERN, examples=["+4791234567"])

    @model_validator(mode="after")
    def _exactly_one(self) -> "Recipient":
        if (self.user_id is None) == (self.phone is None):
            raise ValueError("a recipient has exactly one of user_id or phone")
        return self


class BookingPut(BaseModel):
    """The full, versioned state of one booking. Sending it again with the same version
    changes nothing; a higher version replaces it; a lower one is refused."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "version": 1,
                    "valid_from": "2025-05-02T17:00:00+02:00",
                    "valid_until": "2025-05-02T19:00:00+02:00",
                    "doors": ["door_3f9c2a7be01d4c55"],
                    "recipients": [{"user_id": "u_citizen_kari"}, {"phone": "+4791234567"}],
                }
            ]
        },
    )

    version: int = Field(ge=0, le=MAX_VERSION)
    valid_from: AwareDatetime
    valid_until: AwareDatetime
    doors: list[ObjectId] = Field(default_factory=list, max_length=100)
    buildings: list[ObjectId] = Field(default_factory=list, max_length=20)
    recipients: list[Recipient] = Field(min_length=1, max_length=200)


class BookingView(BaseModel):
    booking_id: str = Field(examples=["bkg_9e8d7c6b5a4f3e2d"])
    external_id: str = Field(examples=["ak-2025-000123"])
    version: int
    deleted: bool
    valid_from: datetime
    valid_until: datetime
    grants: int = Field(description="Grants in force for this booking (not revoked)")
    pending_phone_recipients: int = Field(
        description="Phone numbers no citizen has verified yet; their grants wait"
    )


class BookingDetail(BookingView):
    doors: list[str]
    buildings: list[str]
    recipients: list[Recipient]
    updated_at: datetime
