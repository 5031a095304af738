"""Request and response models for lockdown and passage mode."""

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api.schedules import Schedule

Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class LockdownRequest(BaseModel):
    """Why the building is locked down (shown to other managers and kept in the audit log)."""

    model_config = ConfigDict(extra="forbid")

    reason: Reason = Field(examples=["Police operation in the area"])


class GatewayModeAck(BaseModel):
    """Whether one gateway has applied the building's current mode."""

    gateway_id: str
    name: str
    online: bool
    acknowledged: bool = Field(
        description="The gateway reported the building's current mode version as applied"
    )
    acknowledged_version: int = Field(description="Latest building mode version it applied")
    acknowledged_at: datetime | None


class LockdownView(BaseModel):
    """A building's lockdown state and which of its gateways have applied it."""

    building_id: str
    lockdown: bool
    since: datetime | None
    by: str | None = Field(description="User id of the manager who started the lockdown")
    by_name: str | None
    reason: str | None
    mode_version: int = Field(description="Grows with every mode change sent to the gateways")
    all_acknowledged: bool = Field(description="Every gateway has applied mode_version")
    gateways: list[GatewayModeAck]


class PassageScheduleRequest(BaseModel):
    """A door's passage schedule: weekly ranges in the building's local time during which the
    gateway holds the door unlocked; holidays and closed dates suppress the weekly ranges.
    ``null`` removes passage mode from the door."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"schedule": {"weekly": [{"weekday": 0, "start": "08:00", "end": "16:00"}]}},
                {"schedule": None},
            ]
        },
    )

    schedule: Schedule | None


class PassageScheduleView(BaseModel):
    door_id: str
    building_id: str
    gateway_id: str
    schedule: Schedule | None
    held_now: bool = Field(
        description="The schedule holds the door unlocked now (never during a lockdown); the "
        "gateway is told at the scheduler's next tick, within 15 seconds"
    )
    held_until: datetime | None = Field(description="When the current passage window ends")
