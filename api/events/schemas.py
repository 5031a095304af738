"""Response models of the gateway event and gap listings."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class GatewayEventOut(BaseModel):
    """One event as the gateway journaled it."""

    seq: int = Field(examples=[1767225600000])
    kind: str = Field(examples=["door_forced_open"])
    door_id: str | None = Field(examples=["grunerlokka-main"])
    ts: datetime = Field(description="When it happened, by the gateway's clock")
    received_at: datetime = Field(description="When the API stored it")
    data: dict[str, Any] = Field(examples=[{}])


class EventGapOut(BaseModel):
    """Sequence numbers the API found missing. Closed once every one of them arrived."""

    id: int = Field(examples=[17])
    from_seq: int = Field(examples=[1767225600012])
    to_seq: int = Field(examples=[1767225600014])
    missing: int = Field(description="How many of from_seq..to_seq are still missing")
    detected_at: datetime
    closed_at: datetime | None = Field(examples=[None])


class EventGapsPage(BaseModel):
    """The gaps of one gateway's event journal, newest first, and how far it is complete."""

    gateway_id: str = Field(examples=["gw-grunerlokka-1"])
    last_seq: int = Field(
        description="Every event up to this sequence number is stored (no gap below it)"
    )
    items: list[EventGapOut]
    next_cursor: str | None = Field(default=None, examples=[None])
