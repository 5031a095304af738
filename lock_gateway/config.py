"""Gateway configuration: from the command line or CITYKEY_GATEWAY_* environment variables."""

import os
from collections.abc import Mapping
from dataclasses import dataclass
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
    """The API's JWKS, trusted on the first boot only (no key cache yet)."""
    key_cache: Path | None = None
    """The trusted keys on disk, with the signed key set they came from (lock_gateway/keys.py).
    None: nothing cached (tests, the in-process demo); the command line always sets one."""
    keyset_url: str | None = None
    """The API's signed key set (``/.well-known/citykey-keyset.jws``), polled besides the
    retained copy on the broker; None: next to ``jwks_url`` when that ends in the well-known
    JWKS path."""
    keyset_poll_s: float = 900.0
    """How often to poll ``keyset_url``, seconds; 0: never (the broker's copy only)."""
    leeway_s: float = 5.0
    max_token_lifetime_s: float = 120.0
    heartbeat_s: float = 30.0
    keepalive_s: int = 30
    state_dir: Path | None = None
    """Where the gateway keeps state that must survive a restart, such as the replay store
    (lock_gateway/replay.py). None: in memory only, so a token accepted just before a restart
    could be accepted once more until it expires."""
    journal_max_events: int = 50_000
    """Bound of the event journal (lock_gateway/journal.py): events not yet acknowledged by
    the API it holds at most. At 80 % it reports ``journal_near_full``."""
    journal_resend_s: float = 15.0
    """Send unacknowledged journal events again after this long without an acknowledgement
    (doubling up to 20 times this while the API stays silent)."""
    local_listen: str | None = None
    """``HOST:PORT`` of the local endpoint for offline unlock (lock_gateway/local_endpoint.py),
    e.g. ``0.0.0.0:8443`` on the building's LAN or ``127.0.0.1:0`` in tests. None: no local
    endpoint, no offline unlock."""

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
