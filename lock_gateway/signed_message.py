"""Verification of the API's signed standing messages (mode, revocation list).

Both are compact ES256 JWS with header exactly {alg, kid, typ}, signed by a key the gateway
trusts, addressed to this gateway by ``aud``, without expiry. Not the hot path: PyJWT does the
cryptography; this module fixes the policy once and maps every failure to a stable code.
"""

from typing import Any

import jwt

from citykey_protocol.claims import ALGORITHM
from citykey_protocol.codes import ModeRejection
from lock_gateway.keys import KeySet

_HEADER_MEMBERS = frozenset({"alg", "kid", "typ"})


class SignedMessageError(Exception):
    """The message is not authentic or not for this gateway. ``reason`` is a stable code."""

    def __init__(self, reason: ModeRejection, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


def short(exc: Exception) -> str:
    """An exception's text, bounded for logs and events."""
    return str(exc)[:200]


def decode_signed_message(
    payload: bytes,
    *,
    keys: KeySet,
    token_type: str,
    max_bytes: int,
    issuer: str,
    audience: str,
) -> dict[str, Any]:
    """The verified claims of ``payload``; raise SignedMessageError otherwise."""
    if len(payload) > max_bytes:
        raise SignedMessageError(ModeRejection.OVERSIZED)
    try:
        token = payload.decode("ascii")
        header = jwt.get_unverified_header(token)
    except (UnicodeDecodeError, jwt.InvalidTokenError) as exc:
        raise SignedMessageError(ModeRejection.MALFORMED, short(exc)) from exc
    # Exactly the members the API writes: nothing (jku, x5u, jwk, crit) to steer verification.
    if set(header) != _HEADER_MEMBERS or header["alg"] != ALGORITHM:
        raise SignedMessageError(ModeRejection.BAD_HEADER)
    if header["typ"] != token_type:
        raise SignedMessageError(ModeRejection.BAD_TYPE)
    kid = header["kid"]
    key = keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise SignedMessageError(ModeRejection.UNKNOWN_KEY)
    try:
        decoded: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=issuer,
            # No exp: a standing order holds until the next one. iat is informational: a
            # gateway whose clock runs slow must never refuse a lockdown or revocation for it.
            options={"require": ["iss", "aud", "iat"], "verify_iat": False, "strict_aud": True},
        )
    except jwt.InvalidSignatureError as exc:
        raise SignedMessageError(ModeRejection.BAD_SIGNATURE) from exc
    except jwt.InvalidIssuerError as exc:
        raise SignedMessageError(ModeRejection.BAD_ISSUER) from exc
    except jwt.InvalidAudienceError as exc:
        raise SignedMessageError(ModeRejection.WRONG_GATEWAY) from exc
    except jwt.DecodeError as exc:
        raise SignedMessageError(ModeRejection.MALFORMED, short(exc)) from exc
    except jwt.InvalidTokenError as exc:
        raise SignedMessageError(ModeRejection.BAD_CLAIMS, short(exc)) from exc
    return decoded
