"""MQTT topic names.

Every topic lives under ``citykey/v1/``. A gateway owns the subtree ``citykey/v1/gw/<id>/``:
it reads ``cmd`` and ``mode`` and writes ``ack/<instance>``, ``event`` and ``status``. Broker
ACLs are written against exactly these patterns (see docs/protocol.md and deploy/mosquitto/).
"""

import re
from dataclasses import dataclass
from typing import Literal

ROOT = "citykey/v1"

_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def is_valid_segment(value: str) -> bool:
    """True when ``value`` is safe as one topic segment: no wildcards, separators or blanks."""
    return _SEGMENT.fullmatch(value) is not None


def require_segment(value: str, what: str) -> str:
    """Return ``value`` or raise ValueError when it cannot be one topic segment."""
    if not is_valid_segment(value):
        raise ValueError(f"{what} {value!r} is not a valid topic segment ([A-Za-z0-9_.-], 1-64)")
    return value


@dataclass(frozen=True, slots=True)
class GatewayTopics:
    """The topics of one gateway."""

    gateway_id: str

    def __post_init__(self) -> None:
        require_segment(self.gateway_id, "gateway id")

    @property
    def base(self) -> str:
        return f"{ROOT}/gw/{self.gateway_id}"

    @property
    def commands(self) -> str:
        """API -> gateway, QoS 1, never retained."""
        return f"{self.base}/cmd"

    def ack(self, instance_id: str) -> str:
        """Gateway -> the API instance that sent the command, QoS 1."""
        return f"{self.base}/ack/{require_segment(instance_id, 'instance id')}"

    @property
    def events(self) -> str:
        """Gateway -> API: door and lock state, alarms. QoS 1."""
        return f"{self.base}/event"

    @property
    def status(self) -> str:
        """Gateway -> everyone: retained online/offline status, also the last will."""
        return f"{self.base}/status"

    @property
    def mode(self) -> str:
        """API -> gateway: the retained, signed mode message (lockdown, doors held unlocked)."""
        return f"{self.base}/mode"

    @property
    def event_acks(self) -> str:
        """API -> gateway: which journaled events the API has stored (EventAck). QoS 1, never
        retained."""
        return f"{self.base}/evack"

    @property
    def revocations(self) -> str:
        """API -> gateway: the retained, signed list of revoked offline tokens."""
        return f"{self.base}/revocations"


KEYSET_TOPIC = f"{ROOT}/keys"
"""API -> gateways: the retained public key set (JWKS)."""

STATUS_FILTER = f"{ROOT}/gw/+/status"
EVENTS_FILTER = f"{ROOT}/gw/+/event"
MODE_FILTER = f"{ROOT}/gw/+/mode"


API_SHARE_GROUP = "citykey-api"
"""Shared-subscription group of the API instances (docs/operations.md, "Scale-out")."""


def shared_filter(topic_filter: str, group: str = API_SHARE_GROUP) -> str:
    """``$share/<group>/<filter>``: the broker hands each matching message to one member of
    ``group`` instead of to every subscriber (MQTT 5, and Mosquitto under 3.1.1 too)."""
    return f"$share/{require_segment(group, 'share group')}/{topic_filter}"


def acks_filter(instance_id: str) -> str:
    """Subscription an API instance uses to receive the acks addressed to it."""
    return f"{ROOT}/gw/+/ack/{require_segment(instance_id, 'instance id')}"


TopicKind = Literal["cmd", "ack", "event", "status", "mode", "revocations"]


@dataclass(frozen=True, slots=True)
class ParsedTopic:
    """A gateway topic taken apart."""

    gateway_id: str
    kind: TopicKind


def parse_gateway_topic(topic: str) -> ParsedTopic | None:
    """Split ``citykey/v1/gw/<id>/<kind>[/...]``; None for anything else."""
    parts = topic.split("/")
    if len(parts) < 5 or parts[0] != "citykey" or parts[1] != "v1" or parts[2] != "gw":
        return None
    gateway_id, kind = parts[3], parts[4]
    if not is_valid_segment(gateway_id):
        return None
    if kind == "ack" and len(parts) == 6:
        return ParsedTopic(gateway_id, "ack")
    if len(parts) == 5 and kind in ("cmd", "event", "status", "mode", "revocations"):
        return ParsedTopic(gateway_id, kind)  # type: ignore[arg-type]
    return None
