"""The rate-limit table: one row per limited key, holding its sliding window
(api/limits/window.py)."""

from sqlalchemy import ARRAY, JSON, Column, Float, String
from sqlmodel import Field, SQLModel


class RateLimitBucket(SQLModel, table=True):
    __tablename__ = "rate_limits"

    key: str = Field(sa_column=Column(String(200), primary_key=True))
    """What is limited, e.g. ``unlock:<user>:<door>`` or ``auth:<client address>``."""
    events: list[float] = Field(
        sa_column=Column(ARRAY(Float).with_variant(JSON(), "sqlite"), nullable=False)
    )
    """Unix times of the admitted events still in the window (at most the limit's count)."""
    expires_at: float = Field(sa_column=Column(Float, nullable=False))
    """When the newest event leaves the window: from then on the row limits nothing."""
