"""MQTT payloads: JSON objects with a version field ``v``.

Decoders are built once at import; decoding validates types and required fields, so a
malformed payload raises ``msgspec.ValidationError``/``msgspec.DecodeError`` and nothing else.
"""

from typing import Any

import msgspec

from citykey_protocol import PROTOCOL_VERSION
from citykey_protocol.codes import AckResult


class UnlockCommand(msgspec.Struct, frozen=True, kw_only=True, tag="unlock", tag_field="type"):
    """Unlock one door for ``token.dur`` seconds. The token is what authorizes; the rest routes."""

    v: int = PROTOCOL_VERSION
    command_id: str
    door: str
    token: str
    reply_to: str
    """Instance id of the API process waiting for the ack (one topic segment)."""


Command = UnlockCommand
"""Union of all commands; grows as new command types appear (tagged by ``type``)."""


class Ack(msgspec.Struct, frozen=True, kw_only=True):
    """A gateway's answer to one command."""

    v: int = PROTOCOL_VERSION
    command_id: str
    gateway_id: str
    door: str
    result: AckResult
    reason: str | None = None
    unlocked_until: float | None = None
    """Unix time (seconds) when the lock relocks, for ``unlocked``."""
    ts: float


class GatewayStatus(msgspec.Struct, frozen=True, kw_only=True):
    """Retained on the status topic: set on connect, on every heartbeat, and by the last will."""

    v: int = PROTOCOL_VERSION
    gateway_id: str
    online: bool
    ts: float
    doors: list[str] = []
    software: str | None = None
    heartbeat_s: float | None = None
    mode_version: int | None = None
    """Version of the last mode message the gateway applied (its acknowledgement); None from a
    gateway that predates modes."""


class GatewayEvent(msgspec.Struct, frozen=True, kw_only=True):
    """Something that happened at a gateway: lock and door state changes, alarms."""

    v: int = PROTOCOL_VERSION
    gateway_id: str
    kind: str
    ts: float
    door: str | None = None
    data: dict[str, Any] = {}


command_decoder: msgspec.json.Decoder[Command] = msgspec.json.Decoder(Command)
ack_decoder: msgspec.json.Decoder[Ack] = msgspec.json.Decoder(Ack)
status_decoder: msgspec.json.Decoder[GatewayStatus] = msgspec.json.Decoder(GatewayStatus)
event_decoder: msgspec.json.Decoder[GatewayEvent] = msgspec.json.Decoder(GatewayEvent)

_encoder = msgspec.json.Encoder()


def encode(message: msgspec.Struct) -> bytes:
    """Serialize any payload of this module to compact JSON."""
    return _encoder.encode(message)


DecodeError = (msgspec.DecodeError, msgspec.ValidationError)
"""Exceptions a decoder raises for a bad payload (catch these, nothing broader)."""
