"""Offline unlock: key-bound door tokens, the app's proof of possession, the revocation list.

Three compact ES256 JWS travel here, each with its own ``typ`` so none can pass as another (or
as an unlock token, a mode message or an identity token):

- the **offline token** (OFFLINE_TOKEN_TYPE), signed by the API's key ring and issued to a
  citizen's app while it is online: "this user may open this door of this gateway until
  ``exp``, when the holder of the key with thumbprint ``cnf.jkt`` asks" (OfflineClaims);
- the **proof** (PROOF_TYPE), signed by the app's own P-256 key, whose public half travels in
  the proof's header (``jwk``); fresh for every attempt, bound to the token by ``ath`` (the
  token's SHA-256) and single-use by its ``jti`` (ProofClaims). A copied token without the
  app's private key is worthless;
- the **revocation list** (REVOCATIONS_TYPE), signed by the API's key ring, retained per
  gateway on ``citykey/v1/gw/<id>/revocations``: the ids of revoked offline tokens that have
  not expired yet, with a version that only grows (RevocationClaims).

The app presents token and proof to the gateway over a local channel (HTTP on the building's
LAN, OFFLINE_UNLOCK_PATH), so a door opens while the building's internet or the API is down.
Everything here is plain data and hashing: no cryptography library, so the package keeps its
small dependency set; the API and the gateway do the signing and verifying.
"""

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, Final

import msgspec

from citykey_protocol.codes import OfflineRefusal

OFFLINE_TOKEN_TYPE: Final = "citykey-offline+jwt"
"""``typ`` of an offline token."""
PROOF_TYPE: Final = "citykey-offline-proof+jwt"
"""``typ`` of the app's proof of possession."""
REVOCATIONS_TYPE: Final = "citykey-revocations+jwt"
"""``typ`` of a gateway's revocation list."""

MAX_OFFLINE_TOKEN_LIFETIME_S: Final = 3600
"""A gateway refuses an offline token whose ``exp - iat`` is longer than this (the API issues
them for CITYKEY_OFFLINE_TOKEN_LIFETIME_S, 15 minutes by default)."""
PROOF_MAX_AGE_S: Final = 30
"""A proof's ``iat`` must be within this many seconds of the gateway's clock, either way."""
MAX_JWS_BYTES: Final = 4096
"""Longest token or proof the gateway reads."""
MAX_REQUEST_BYTES: Final = 16384
"""Longest request body the local endpoint reads."""
MAX_REVOKED: Final = 10000
"""Most token ids one revocation list may carry (the API lists only unexpired ones)."""
MAX_REVOCATIONS_BYTES: Final = 524288
"""Longest revocation list message a gateway reads."""

OFFLINE_UNLOCK_PATH: Final = "/v1/offline-unlock"
"""The one route of a gateway's local endpoint (POST, JSON OfflineUnlockRequest)."""
OFFLINE_UNLOCK_EVENT: Final = "offline_unlock"
"""GatewayEvent ``kind`` of an offline unlock attempt whose token was authentic; ``data`` has
``sub``, ``jti`` (the token's), ``door`` and ``result``: AUTHORIZED when every check held
(journaled before the lock moves, with ``proof_jti``), then ``unlocked`` (with
``unlocked_until``) or the refusal code; a refused attempt has just the refusal code."""
AUTHORIZED: Final = "authorized"
"""``result`` of the offline_unlock event written before the lock is driven."""
REVOCATIONS_REJECTED_EVENT: Final = "revocations_rejected"
"""GatewayEvent ``kind`` a gateway publishes when it refuses a revocation list; ``data`` has
``reason`` (a citykey_protocol.codes.ModeRejection code: the checks are the same as for mode
messages), ``detail`` and ``current_version``."""

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
Thumbprint = Annotated[str, msgspec.Meta(min_length=43, max_length=43, pattern=r"^[A-Za-z0-9_-]+$")]
"""An RFC 7638 SHA-256 JWK thumbprint: 32 bytes, base64url without padding."""
TokenId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
DoorId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
UnixSeconds = Annotated[int, msgspec.Meta(ge=0)]


class Confirmation(msgspec.Struct, frozen=True):
    """The ``cnf`` claim (RFC 7800): which key the token is bound to."""

    jkt: Thumbprint
    """RFC 7638 SHA-256 thumbprint of the app's public key."""


class OfflineClaims(msgspec.Struct, frozen=True, kw_only=True):
    """Claims of an offline token. Times are integer Unix seconds. Other claims are ignored."""

    iss: str
    aud: str
    """The gateway id that may act on this token."""
    sub: str
    """Pseudonymous citykey user id."""
    door: DoorId
    dur: Annotated[int, msgspec.Meta(ge=1, le=3600)]
    """Seconds the door stays unlocked at each use."""
    jti: TokenId
    """The token's id: what the revocation list names."""
    iat: UnixSeconds
    nbf: UnixSeconds
    exp: UnixSeconds
    cnf: Confirmation


class ProofClaims(msgspec.Struct, frozen=True, kw_only=True):
    """Claims of the app's proof. Other claims are ignored."""

    jti: TokenId
    """Unique per proof; the gateway accepts each once."""
    iat: UnixSeconds
    """When the app made it; within PROOF_MAX_AGE_S of the gateway's clock."""
    ath: Thumbprint
    """base64url SHA-256 of the offline token's ASCII bytes (``token_hash``)."""
    door: DoorId
    """The door the app wants open; must equal the token's."""


class RevocationClaims(msgspec.Struct, frozen=True, kw_only=True):
    """Claims of a revocation list. Other claims are ignored."""

    iss: str
    aud: str
    """The one gateway this list is for."""
    iat: UnixSeconds
    """When the API signed it. Informational only, like a mode message's."""
    ver: Annotated[int, msgspec.Meta(ge=1)]
    """Grows with every change of this gateway's list; a gateway applies only a higher one."""
    jtis: Annotated[tuple[TokenId, ...], msgspec.Meta(max_length=MAX_REVOKED)] = ()
    """Ids of revoked offline tokens for this gateway that have not expired yet."""


class OfflineUnlockRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Body of ``POST /v1/offline-unlock`` on a gateway's local endpoint."""

    token: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_JWS_BYTES)]
    """The offline token, as the API issued it."""
    proof: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_JWS_BYTES)]
    """A fresh proof for this request."""


class OfflineUnlockResponse(msgspec.Struct, frozen=True, kw_only=True):
    """The local endpoint's answer when the door opened (200)."""

    status: str = "unlocked"
    door: str
    unlocked_until: float
    """Unix time (seconds) when the lock relocks by itself."""


OFFLINE_REFUSAL_STATUS: Final[Mapping[OfflineRefusal, int]] = {
    OfflineRefusal.MALFORMED_REQUEST: 422,
    OfflineRefusal.PAYLOAD_TOO_LARGE: 413,
    OfflineRefusal.NOT_FOUND: 404,
    OfflineRefusal.METHOD_NOT_ALLOWED: 405,
    OfflineRefusal.BAD_TOKEN: 401,
    OfflineRefusal.EXPIRED: 401,
    OfflineRefusal.NOT_YET_VALID: 401,
    OfflineRefusal.WRONG_GATEWAY: 403,
    OfflineRefusal.UNKNOWN_DOOR: 403,
    OfflineRefusal.REVOKED: 403,
    OfflineRefusal.BAD_PROOF: 401,
    OfflineRefusal.KEY_MISMATCH: 401,
    OfflineRefusal.PROOF_MISMATCH: 401,
    OfflineRefusal.STALE_PROOF: 401,
    OfflineRefusal.REPLAYED_PROOF: 409,
    OfflineRefusal.LOCKDOWN: 403,
    OfflineRefusal.LOCK_JAMMED: 409,
    OfflineRefusal.DEVICE_ERROR: 503,
    OfflineRefusal.REPLAY_STORE_ERROR: 503,
    OfflineRefusal.REVOCATIONS_UNAVAILABLE: 503,
    OfflineRefusal.JOURNAL_UNAVAILABLE: 503,
    OfflineRefusal.INTERNAL_ERROR: 500,
}
"""HTTP status of each refusal on the local endpoint."""


class InvalidJwkError(ValueError):
    """A public key is not an EC P-256 public JWK."""


def b64url_encode(raw: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64url_decode(value: str) -> bytes:
    """Strict base64url without padding: only the 64 characters, and the one canonical spelling
    (unused low bits zero). Raise ValueError otherwise."""
    if len(value) % 4 == 1 or _B64URL.fullmatch(value) is None:
        raise ValueError("not base64url")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc
    if b64url_encode(raw) != value:
        raise ValueError("not canonical base64url")
    return raw


def check_public_jwk(jwk: Any) -> dict[str, str]:
    """The RFC 7638 members (``crv``, ``kty``, ``x``, ``y``) of an EC P-256 public JWK.

    Refuses (InvalidJwkError) anything that is not a JSON object with ``kty`` EC, ``crv``
    P-256 and 32-byte canonical base64url coordinates, and any JWK carrying a private part
    (``d``): the app must never send its private key. Whether the point lies on the curve is
    for the caller's cryptography library to check when it builds the key.
    """
    if not isinstance(jwk, Mapping):
        raise InvalidJwkError("the public key must be a JWK (a JSON object)")
    if "d" in jwk:
        raise InvalidJwkError("this JWK holds a private key; send only the public key")
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise InvalidJwkError("the public key must be an EC key on P-256 (kty EC, crv P-256)")
    for name in ("x", "y"):
        value = jwk.get(name)
        try:
            if not isinstance(value, str) or len(b64url_decode(value)) != 32:
                raise ValueError("not 32 bytes")
        except ValueError as exc:
            raise InvalidJwkError(f"'{name}' must be 32 bytes in base64url") from exc
    return {"crv": "P-256", "kty": "EC", "x": jwk["x"], "y": jwk["y"]}


def jwk_thumbprint(jwk: Any) -> str:
    """RFC 7638 SHA-256 thumbprint of an EC P-256 public JWK (raises InvalidJwkError)."""
    members = check_public_jwk(jwk)
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode("ascii")
    return b64url_encode(hashlib.sha256(canonical).digest())


def jwk_coordinates(jwk: Any) -> tuple[int, int]:
    """The public point (x, y) of an EC P-256 public JWK (raises InvalidJwkError)."""
    members = check_public_jwk(jwk)
    return (
        int.from_bytes(b64url_decode(members["x"]), "big"),
        int.from_bytes(b64url_decode(members["y"]), "big"),
    )


def token_hash(token: str) -> str:
    """The ``ath`` of a proof for ``token``: base64url SHA-256 of its ASCII bytes."""
    return b64url_encode(hashlib.sha256(token.encode("ascii")).digest())


def claims_to_dict(claims: msgspec.Struct) -> dict[str, Any]:
    """Claims as a JSON-ready dict, for signing."""
    value: dict[str, Any] = msgspec.to_builtins(claims)
    return value


def offline_claims(payload: Any) -> OfflineClaims:
    """Typed offline-token claims from decoded JSON (strict: a boolean is not a number);
    raise msgspec.ValidationError when types or ranges are wrong."""
    return msgspec.convert(payload, OfflineClaims, strict=True)


def proof_claims(payload: Any) -> ProofClaims:
    """Typed proof claims from decoded JSON; raise msgspec.ValidationError otherwise."""
    return msgspec.convert(payload, ProofClaims, strict=True)


def revocation_claims(payload: Any) -> RevocationClaims:
    """Typed revocation-list claims from decoded JSON; raise msgspec.ValidationError."""
    return msgspec.convert(payload, RevocationClaims, strict=True)


request_decoder: msgspec.json.Decoder[OfflineUnlockRequest] = msgspec.json.Decoder(
    OfflineUnlockRequest
)
