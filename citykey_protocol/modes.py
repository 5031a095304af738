"""The mode message: a gateway's standing orders (lockdown, doors held unlocked), signed.

The API keeps one mode message per gateway, retained on ``citykey/v1/gw/<id>/mode``. Its
payload is a compact ES256 JWS (ASCII bytes) whose header is exactly ``{alg, kid, typ}`` with
``typ`` = MODE_TOKEN_TYPE and whose claims are ModeClaims, signed by the same keys as unlock
tokens. A gateway applies a message only when it is signed by a trusted key, comes from the
configured issuer, is addressed to that gateway and carries a version higher than the one it
holds. So someone who controls the broker can delete or replay mode messages but cannot forge
one: cannot lift a lockdown, hold a door open, or roll a gateway back to an older mode. A
gateway persists the mode it applied, so deleting the retained message changes nothing.

Mode messages carry no expiry on purpose: a lockdown lasts until it is lifted. Each hold
carries its own end time instead.
"""

from typing import Annotated, Any

import msgspec

MODE_TOKEN_TYPE = "citykey-mode+jwt"
"""``typ`` of a mode message; no other token carries it, so an unlock token can never pass as a
mode message or the other way round."""

MAX_MODE_BYTES = 16384
"""Mode messages longer than this are refused before any parsing."""

MAX_HOLDS = 256
"""At most this many doors held in one message (a gateway drives a handful of doors)."""

MODE_REJECTED_EVENT = "mode_rejected"
"""GatewayEvent ``kind`` a gateway publishes when it refuses a mode message; ``data`` has
``reason`` (a citykey_protocol.codes.ModeRejection), ``detail`` and ``current_version``."""

DoorId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
UnixSeconds = Annotated[int, msgspec.Meta(ge=0)]


class DoorHold(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Hold ``door`` unlocked until ``until`` (Unix seconds), then relock it."""

    door: DoorId
    until: UnixSeconds


class ModeClaims(msgspec.Struct, frozen=True, kw_only=True):
    """Claims of a mode message. Claims other than these are allowed and ignored."""

    iss: str
    aud: str
    """The one gateway this message is for."""
    iat: UnixSeconds
    ver: Annotated[int, msgspec.Meta(ge=1)]
    """Grows with every message the API sends to this gateway; older ones are refused."""
    lockdown: bool
    """True: refuse every unlock, relock every door, hold none."""
    holds: Annotated[tuple[DoorHold, ...], msgspec.Meta(max_length=MAX_HOLDS)] = ()
    """Doors to hold unlocked (passage mode); empty in lockdown."""


def claims_to_dict(claims: ModeClaims) -> dict[str, Any]:
    """The claims as a JSON-ready dict, for signing."""
    value: dict[str, Any] = msgspec.to_builtins(claims)
    return value


def claims_from_dict(payload: Any) -> ModeClaims:
    """Typed claims from a decoded JSON payload; raise msgspec.ValidationError when the types
    or ranges are wrong (strict: a boolean is not a number, a number is not a boolean)."""
    return msgspec.convert(payload, ModeClaims, strict=True)
