"""Gateway configuration: from the command line or CITYKEY_GATEWAY_* environment variables."""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from citykey_protocol.topics import require_segment
from citykey_protocol.transport import BrokerAddress


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Everything a gateway needs to run."""

    gateway_id: str
    broker: BrokerAddress
    issuer: str
    doors: Mapping[str, int]
    """Door id -> lock channel on this gateway. Local, not taken from the broker."""
    jwks_url: str | None = None
    key_cache: Path = field(default_factory=lambda: Path("var/gateway/jwks.json"))
    leeway_s: float = 5.0
    max_token_lifetime_s: float = 120.0
    heartbeat_s: float = 30.0
    keepalive_s: int = 30
    state_dir: Path | None = None
    """Where the gateway keeps state that must survive a restart, such as the replay store
    (lock_gateway/replay.py). None: in memory only, so a token accepted just before a restart
    could be accepted once more until it expires."""

    def __post_init__(self) -> None:
        require_segment(self.gateway_id, "gateway id")
        for door in self.doors:
            require_segment(door, "door id")


def parse_door_map(items: list[str]) -> dict[str, int]:
    """Parse ``DOOR_ID=CHANNEL`` items."""
    doors: dict[str, int] = {}
    for item in items:
        door, sep, channel = item.partition("=")
        if not sep or not channel.isdigit():
            raise ValueError(f"door must be DOOR_ID=CHANNEL, got {item!r}")
        doors[door] = int(channel)
    return doors


def env_default(name: str, default: str | None = None) -> str | None:
    """Value of CITYKEY_GATEWAY_<NAME>, or ``default``."""
    return os.environ.get(f"CITYKEY_GATEWAY_{name}", default)
