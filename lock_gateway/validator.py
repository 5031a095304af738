"""Unlock-token validation: the gateway's hot path and its last line of defence.

The token is parsed here rather than by a general JWT library so that every cheap check runs
before the one expensive step, the ECDSA P-256 signature verification, and so that exactly one
algorithm (ES256), one header shape and one token type are accepted.
"""

import base64
import binascii
import re
import time
from collections.abc import Callable, Collection

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from citykey_protocol.claims import (
    ALGORITHM,
    MAX_TOKEN_BYTES,
    UNLOCK_TOKEN_TYPE,
    UnlockClaims,
    claims_decoder,
    header_decoder,
)
from citykey_protocol.codes import TokenRejection
from lock_gateway.keys import KeySet
from lock_gateway.replay import ReplayGuard

_COMPACT_JWS = re.compile(rb"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{86}")
"""Three base64url segments; an ES256 signature (64 bytes) is always 86 characters."""

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


class TokenRejectedError(Exception):
    """The token must not open the door. ``reason`` is a stable code."""

    def __init__(self, reason: TokenRejection, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason


def _b64url_decode(segment: bytes) -> bytes:
    if len(segment) % 4 == 1:
        raise TokenRejectedError(TokenRejection.MALFORMED, "bad base64url length")
    try:
        return base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as exc:
        raise TokenRejectedError(TokenRejection.MALFORMED, "bad base64url") from exc


class TokenValidator:
    """Validates unlock tokens for one gateway.

    Policy: alg ES256 only; header exactly {alg, kid, typ} with typ = citykey-unlock+jwt; kid
    in the trusted key set; iss equal to the configured issuer; aud equal to this gateway's
    id; door one of this gateway's doors; nbf <= now + leeway; exp > now - leeway; lifetime
    (exp - iat) at most ``max_lifetime``; jti not seen before.
    """

    def __init__(
        self,
        *,
        keys: KeySet,
        issuer: str,
        gateway_id: str,
        doors: Collection[str],
        replay_guard: ReplayGuard,
        leeway: float = 5.0,
        max_lifetime: float = 120.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._gateway_id = gateway_id
        self._doors = frozenset(doors)
        self._replay = replay_guard
        self._leeway = leeway
        self._max_lifetime = max_lifetime
        self._clock = clock

    def validate(self, token: str | bytes) -> UnlockClaims:
        """Return the claims of a token that may open a door, and mark its jti used.

        Raises TokenRejectedError, and nothing else, for every token that may not.
        """
        raw = token.encode() if isinstance(token, str) else token
        if len(raw) > MAX_TOKEN_BYTES:
            raise TokenRejectedError(TokenRejection.OVERSIZED)
        if _COMPACT_JWS.fullmatch(raw) is None:
            raise TokenRejectedError(TokenRejection.MALFORMED, "not a compact ES256 JWS")
        header_b64, claims_b64, signature_b64 = raw.split(b".")

        try:
            header = header_decoder.decode(_b64url_decode(header_b64))
        except msgspec.MsgspecError as exc:
            raise TokenRejectedError(TokenRejection.BAD_HEADER, str(exc)) from exc
        if header.alg != ALGORITHM:
            raise TokenRejectedError(TokenRejection.BAD_ALGORITHM, header.alg[:32])
        if header.typ != UNLOCK_TOKEN_TYPE:
            raise TokenRejectedError(TokenRejection.BAD_TYPE)
        key = self._keys.get(header.kid)
        if key is None:
            raise TokenRejectedError(TokenRejection.UNKNOWN_KEY)

        try:
            claims = claims_decoder.decode(_b64url_decode(claims_b64))
        except msgspec.MsgspecError as exc:
            raise TokenRejectedError(TokenRejection.BAD_CLAIMS, str(exc)) from exc
        self._check_claims(claims)

        signature = _b64url_decode(signature_b64)
        der = encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
        try:
            key.verify(der, header_b64 + b"." + claims_b64, _ECDSA_SHA256)
        except InvalidSignature as exc:
            raise TokenRejectedError(TokenRejection.BAD_SIGNATURE) from exc

        # Claimed only after the signature holds: a forged token cannot burn a real jti.
        if not self._replay.claim(claims.jti, claims.exp, self._clock()):
            raise TokenRejectedError(TokenRejection.REPLAYED)
        return claims

    def _check_claims(self, claims: UnlockClaims) -> None:
        if claims.iss != self._issuer:
            raise TokenRejectedError(TokenRejection.BAD_ISSUER)
        if claims.aud != self._gateway_id:
            raise TokenRejectedError(TokenRejection.WRONG_GATEWAY)
        if claims.door not in self._doors:
            raise TokenRejectedError(TokenRejection.UNKNOWN_DOOR)
        now = self._clock()
        if claims.exp <= now - self._leeway:
            raise TokenRejectedError(TokenRejection.EXPIRED)
        if claims.nbf > now + self._leeway or claims.iat > now + self._leeway:
            raise TokenRejectedError(TokenRejection.NOT_YET_VALID)
        if claims.exp - claims.iat > self._max_lifetime or claims.nbf > claims.exp:
            raise TokenRejectedError(TokenRejection.LIFETIME_TOO_LONG)
        if claims.dur <= 0 or claims.dur > 3600 or not claims.jti:
            raise TokenRejectedError(TokenRejection.BAD_CLAIMS, "dur or jti out of range")
        if self._replay.seen(claims.jti):
            raise TokenRejectedError(TokenRejection.REPLAYED)
