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
    keyset_version: int | None = None
    """``ver`` of the signed key set the gateway trusts (0: only the JWKS of its first boot);
    its acknowledgement of a key rotation step. None from a gateway that predates key sets."""
    clock_offset_s: float | None = None
    """The gateway's estimate of its clock minus the API's (seconds, from the ``iat`` of the
    unlock tokens it accepted recently); None when it has no recent estimate."""
    journal_fill: float | None = None
    """Share of the gateway's event journal bound taken by events the API has not yet
    acknowledged (0..1; 0.8 and above is "near full"). None from a gateway without a journal."""


class GatewayEvent(msgspec.Struct, frozen=True, kw_only=True):
    """Something that happened at a gateway: lock and door state changes, alarms."""

    v: int = PROTOCOL_VERSION
    gateway_id: str
    kind: str
    ts: float
    door: str | None = None
    data: dict[str, Any] = {}
    seq: int | None = None
    """Position in the gateway's event journal (lock_gateway/journal.py): grows by one per
    event, never reused. The API stores each (gateway, seq) once and acknowledges with an
    EventAck. None from a gateway without a journal."""


class EventAck(msgspec.Struct, frozen=True, kw_only=True):
    """API -> gateway on ``evack``: the journaled events the API has stored."""

    v: int = PROTOCOL_VERSION
    gateway_id: str
    up_to_seq: int
    """Every event with ``seq`` <= this is stored: the gateway may forget them."""
    resend: bool = False
    """The API holds events above ``up_to_seq`` but misses some in between: the gateway sends
    everything after ``up_to_seq`` again."""


# GatewayEvent kinds made by the gateway itself (the lock driver reports the others: unlocked,
# locked, jammed, door_opened, door_forced_open, door_closed, held_open, tamper, battery).
UNLOCK_EVENT = "unlock"
"""An unlock command the gateway carried out or tried; data: command_id, sub, result, reason,
until."""
UNLOCK_DENIED_EVENT = "unlock_denied"
"""An unlock command the gateway refused; data: command_id, sub (when the token held), reason."""
JOURNAL_STARTED_EVENT = "journal_started"
"""First event of a new journal; data: first_seq, persistent."""
JOURNAL_NEAR_FULL_EVENT = "journal_near_full"
"""Unacknowledged events reached 80 % of the journal bound; data: unacked, max_events."""
JOURNAL_OVERFLOW_EVENT = "journal_overflow"
"""Events the full journal could not keep; data: dropped, first_ts, last_ts, kinds."""


command_decoder: msgspec.json.Decoder[Command] = msgspec.json.Decoder(Command)
ack_decoder: msgspec.json.Decoder[Ack] = msgspec.json.Decoder(Ack)
status_decoder: msgspec.json.Decoder[GatewayStatus] = msgspec.json.Decoder(GatewayStatus)
event_decoder: msgspec.json.Decoder[GatewayEvent] = msgspec.json.Decoder(GatewayEvent)
event_ack_decoder: msgspec.json.Decoder[EventAck] = msgspec.json.Decoder(EventAck)

_encoder = msgspec.json.Encoder()


def encode(message: msgspec.Struct) -> bytes:
    """Serialize any payload of this module to compact JSON."""
    return _encoder.encode(message)


DecodeError = (msgspec.DecodeError, msgspec.ValidationError)
"""Exceptions a decoder raises for a bad payload (catch these, nothing broader)."""
