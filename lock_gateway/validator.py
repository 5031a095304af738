"""Unlock-token validation: the gateway's hot path and its last line of defence.

The token is parsed here rather than by a general JWT library so that every cheap check runs
before the one expensive step, the ECDSA P-256 signature verification, and so that exactly one
algorithm (ES256), one header shape and one token type are accepted.

Order of the checks, cheapest and most likely to refuse first: size; shape (three strict
base64url segments, a signature of exactly 64 bytes); header (cached per distinct header
segment, so a valid token normally costs one dict lookup here); key id; claims (decoded once
into a typed struct); issuer, gateway, door, times, lifetime, replay pre-check; and only then
the signature. A refused token never reaches the signature check unless every other check
passed, and a forger can never make the gateway record a jti.
"""

import binascii
import json
import time
from collections.abc import Callable, Collection
from typing import Any

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from citykey_protocol.claims import (
    ALGORITHM,
    MAX_TOKEN_BYTES,
    UNLOCK_TOKEN_TYPE,
    TokenHeader,
    UnlockClaims,
    claims_decoder,
    header_decoder,
)
from citykey_protocol.codes import TokenRejection
from lock_gateway.keys import KeySet
from lock_gateway.replay import ReplayGuard, ReplayStoreError, ReplayStoreFullError

MAX_UNLOCK_SECONDS = 3600
"""Longest ``dur`` a token may ask for."""

_SIGNATURE_CHARS = 86
"""An ES256 signature (64 bytes) is always 86 base64url characters."""
_SIGNING_INPUT_END = -(_SIGNATURE_CHARS + 1)
_SIGNATURE_LAST = b"AQgw"
"""Its last character carries 4 unused bits that must be zero: otherwise 16 spellings of one
signature would verify."""
_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_+/=", b"+/***")
"""base64url to the standard alphabet for binascii; '+', '/' and '=' become '*', which strict
decoding refuses, so only the 64 base64url characters get through."""
_PADDING = (b"", b"", b"==", b"=")
"""Indexed by ``len(segment) % 4``; a remainder of 1 is refused before it is used."""
_CANONICAL_LAST = (b"", b"", b"AQgw", b"AEIMQUYcgkosw048")
"""Allowed last characters by ``len(segment) % 4``: those whose unused low bits are zero."""

_JSON_BLANKS = b" \t\n\r"
_HEADER_MEMBERS = len(TokenHeader.__struct_fields__)
_CLAIM_MEMBERS = len(UnlockClaims.__struct_fields__)
_HEADER_CACHE_SIZE = 64

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_DECODE_ERRORS = (msgspec.MsgspecError, ValueError, RecursionError)
"""msgspec raises ValidationError/DecodeError, but UnicodeDecodeError for bad UTF-8 and
RecursionError for deep nesting; all of them mean "refuse"."""


class TokenRejectedError(Exception):
    """The token must not open the door. ``reason`` is a stable code."""

    def __init__(self, reason: TokenRejection, detail: str = "") -> None:
        # The message is built only when someone asks for it: refusals are a hot path too.
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}" if self.detail else self.reason.value


class _DuplicateMemberError(ValueError):
    pass


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) != len(pairs):
        raise _DuplicateMemberError
    return members


def _has_duplicate_members(doc: bytes) -> bool:
    """True when a JSON object in ``doc`` names a member twice (RFC 7493, I-JSON, §2.3).

    The exact check, and the slow one. Callers first try a cheap count: ``doc`` has just been
    decoded into a struct with N required fields, so it is valid JSON with at least N distinct
    member names. Every member name ends with a quote, optional blanks and a colon, so once
    the blanks are deleted every name ends in '":'. Counting those can over-count (a string
    may hold the same characters) but never under-count, so a count of exactly N proves there
    are exactly those N members, each once, and this function is not needed. Anything else
    (extra claims, odd strings) comes here; no token from our issuer does.
    """
    try:
        json.loads(doc.decode(), object_pairs_hook=_unique_members)
    except (ValueError, RecursionError):
        # Duplicates, or JSON that msgspec took and json does not: refuse either way.
        return True
    return False


def _decode_segment(segment: bytes) -> bytes:
    """The bytes of one base64url segment of a compact JWS (RFC 7515 §2: no padding).

    Only the 64 base64url characters are allowed (no '+', '/', '=', blanks or anything else,
    which lenient decoders skip), and only the canonical spelling (RFC 4648 §3.5): no length
    that no byte string has, no unused bits set in the last character. One token, one spelling.
    """
    remainder = len(segment) & 3
    if remainder == 1 or (remainder and segment[-1] not in _CANONICAL_LAST[remainder]):
        raise TokenRejectedError(TokenRejection.MALFORMED, "non-canonical base64url")
    try:
        return binascii.a2b_base64(
            segment.translate(_URLSAFE_TO_STANDARD) + _PADDING[remainder], strict_mode=True
        )
    except binascii.Error as exc:
        raise TokenRejectedError(TokenRejection.MALFORMED, "not base64url") from exc


def _der_signature(signature: bytes) -> bytes:
    """DER (what OpenSSL verifies) of a 64-byte JWS ECDSA signature, r || s (RFC 7518 §3.4).

    Built from the bytes directly: two DER INTEGERs, minimal (leading zero bytes dropped) and
    positive (a zero byte put back when the top bit is set), in a SEQUENCE. Values out of
    range (r or s zero, or not below the curve order) are left for OpenSSL to refuse. This is
    the same encoding as ``encode_dss_signature`` without the detour through Python ints,
    which is measurably slower on the hot path.
    """
    r = signature[:32].lstrip(b"\0")
    s = signature[32:].lstrip(b"\0")
    if not r or r[0] & 0x80:
        r = b"\0" + r
    if not s or s[0] & 0x80:
        s = b"\0" + s
    # Each INTEGER is at most 33 bytes, so every length fits in one byte (short form).
    return bytes((0x30, len(r) + len(s) + 4, 0x02, len(r))) + r + bytes((0x02, len(s))) + s


def _short(exc: BaseException) -> str:
    return str(exc)[:200]


class TokenValidator:
    """Validates unlock tokens for one gateway.

    Policy: alg ES256 only; header exactly {alg, kid, typ} with typ = citykey-unlock+jwt; kid
    in the trusted key set; strict base64url (RFC 7515: no padding, URL-safe alphabet only,
    canonical); JSON that is I-JSON (UTF-8, no duplicate member names); claims of the right
    JSON types (times and ``dur`` integers, never booleans or floats); iss equal to the
    configured issuer; aud equal to this gateway's id; door one of this gateway's doors;
    exp > now - leeway; nbf <= now + leeway; iat <= now + leeway; iat <= nbf <= exp; lifetime
    (exp - iat) at most ``max_lifetime``; 0 < dur <= MAX_UNLOCK_SECONDS; a non-empty jti not
    seen before. Claims other than the nine of UnlockClaims are allowed and ignored.
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
        # Header segment -> kid, for headers that passed every header check. The issuer writes
        # the same header bytes for every token of one key, so this skips base64 and JSON work
        # on the hot path. The key itself is looked up on every call, so replacing the key set
        # takes effect at once. Bounded; cleared when full, so junk cannot pin it.
        self._kid_by_header: dict[bytes, str] = {}

    def validate(self, token: str | bytes) -> UnlockClaims:
        """Return the claims of a token that may open a door, and mark its jti used.

        Raises TokenRejectedError, and nothing else, for every token that may not.
        """
        # One straight function on purpose: this is the hot path, and in CPython every extra
        # call and attribute look-up shows next to the ~60 us of the signature check. The
        # steps follow the order documented in docs/protocol.md.

        # Size and shape.
        if isinstance(token, str):
            if len(token) > MAX_TOKEN_BYTES:
                raise TokenRejectedError(TokenRejection.OVERSIZED)
            try:
                raw = token.encode("ascii")
            except UnicodeEncodeError as exc:
                raise TokenRejectedError(TokenRejection.MALFORMED, "not ASCII") from exc
        elif isinstance(token, bytes):
            if len(token) > MAX_TOKEN_BYTES:
                raise TokenRejectedError(TokenRejection.OVERSIZED)
            raw = token
        else:
            raise TokenRejectedError(TokenRejection.MALFORMED, "token is not text")
        segments = raw.split(b".")
        if len(segments) != 3:
            raise TokenRejectedError(TokenRejection.MALFORMED, "not three segments")
        header_b64, claims_b64, signature_b64 = segments
        if (
            not header_b64
            or not claims_b64
            or len(signature_b64) != _SIGNATURE_CHARS
            or signature_b64[-1] not in _SIGNATURE_LAST
        ):
            raise TokenRejectedError(TokenRejection.MALFORMED, "not a compact ES256 JWS")

        # Header and key. A cached header segment is byte-identical to one that passed every
        # header check.
        kid = self._kid_by_header.get(header_b64)
        if kid is None:
            kid = self._read_header(header_b64)
        key = self._keys.get(kid)
        if key is None:
            raise TokenRejectedError(TokenRejection.UNKNOWN_KEY)

        # Claims: decoded once, into a typed struct (integers stay integers, bools are not).
        claims_json = _decode_segment(claims_b64)
        try:
            claims = claims_decoder.decode(claims_json)
        except _DECODE_ERRORS as exc:
            raise TokenRejectedError(TokenRejection.BAD_CLAIMS, _short(exc)) from exc
        # The cheap test for duplicate names first; _has_duplicate_members says why it is sound.
        names = claims_json.translate(None, _JSON_BLANKS).count(b'":')
        if names != _CLAIM_MEMBERS and _has_duplicate_members(claims_json):
            raise TokenRejectedError(TokenRejection.BAD_CLAIMS, "duplicate member name")
        if claims.iss != self._issuer:
            raise TokenRejectedError(TokenRejection.BAD_ISSUER)
        if claims.aud != self._gateway_id:
            raise TokenRejectedError(TokenRejection.WRONG_GATEWAY)
        if claims.door not in self._doors:
            raise TokenRejectedError(TokenRejection.UNKNOWN_DOOR)
        now = self._clock()
        leeway = self._leeway
        iat, nbf, exp, jti = claims.iat, claims.nbf, claims.exp, claims.jti
        if exp <= now - leeway:
            raise TokenRejectedError(TokenRejection.EXPIRED)
        if nbf > now + leeway or iat > now + leeway:
            raise TokenRejectedError(TokenRejection.NOT_YET_VALID)
        if exp - iat > self._max_lifetime:
            raise TokenRejectedError(TokenRejection.LIFETIME_TOO_LONG)
        # With the two checks above this also bounds nbf from below, so no claim can carry an
        # absurd integer past this point.
        if not iat <= nbf <= exp:
            raise TokenRejectedError(TokenRejection.BAD_CLAIMS, "nbf outside [iat, exp]")
        if not 0 < claims.dur <= MAX_UNLOCK_SECONDS or not jti:
            raise TokenRejectedError(TokenRejection.BAD_CLAIMS, "dur or jti out of range")
        replay = self._replay
        if replay.seen(jti):
            raise TokenRejectedError(TokenRejection.REPLAYED)

        # The one expensive step. The shape check already vetted the signature's length and
        # last character; the signing input is the token up to its last dot, a slice.
        try:
            signature = binascii.a2b_base64(
                signature_b64.translate(_URLSAFE_TO_STANDARD) + b"==", strict_mode=True
            )
        except binascii.Error as exc:
            raise TokenRejectedError(TokenRejection.MALFORMED, "not base64url") from exc
        try:
            key.verify(_der_signature(signature), raw[:_SIGNING_INPUT_END], _ECDSA_SHA256)
        except InvalidSignature as exc:
            raise TokenRejectedError(TokenRejection.BAD_SIGNATURE) from exc

        # Claimed only after the signature holds: a forged token cannot burn a real jti.
        try:
            fresh = replay.claim(jti, exp, now)
        except ReplayStoreFullError as exc:
            raise TokenRejectedError(TokenRejection.REPLAY_STORE_FULL, _short(exc)) from exc
        except ReplayStoreError as exc:
            raise TokenRejectedError(TokenRejection.REPLAY_STORE_ERROR, _short(exc)) from exc
        if not fresh:
            raise TokenRejectedError(TokenRejection.REPLAYED)
        return claims

    def _read_header(self, segment: bytes) -> str:
        """Check a header segment not seen before; return its kid, caching it if trusted."""
        header_json = _decode_segment(segment)
        try:
            header = header_decoder.decode(header_json)
        except _DECODE_ERRORS as exc:
            raise TokenRejectedError(TokenRejection.BAD_HEADER, _short(exc)) from exc
        if header.alg != ALGORITHM:
            raise TokenRejectedError(TokenRejection.BAD_ALGORITHM, header.alg[:32])
        if header.typ != UNLOCK_TOKEN_TYPE:
            raise TokenRejectedError(TokenRejection.BAD_TYPE)
        names = header_json.translate(None, _JSON_BLANKS).count(b'":')
        if names != _HEADER_MEMBERS and _has_duplicate_members(header_json):
            raise TokenRejectedError(TokenRejection.BAD_HEADER, "duplicate member name")
        if self._keys.get(header.kid) is not None:
            if len(self._kid_by_header) >= _HEADER_CACHE_SIZE:
                self._kid_by_header.clear()
            self._kid_by_header[segment] = header.kid
        return header.kid
