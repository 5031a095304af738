"""Stable result and reason codes carried on the wire.

Codes are lower-case identifiers that never change meaning once released; clients switch on
them, and people read the accompanying message.
"""

from enum import StrEnum


class AckResult(StrEnum):
    """Outcome of a command, as reported by the gateway in its ack."""

    UNLOCKED = "unlocked"
    DENIED = "denied"
    JAMMED = "jammed"
    ERROR = "error"


class TokenRejection(StrEnum):
    """Why a gateway refused an unlock token. Carried in a ``denied`` ack as ``reason``."""

    MALFORMED = "malformed"
    OVERSIZED = "oversized"
    BAD_HEADER = "bad_header"
    BAD_ALGORITHM = "bad_algorithm"
    BAD_TYPE = "bad_type"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    BAD_CLAIMS = "bad_claims"
    BAD_ISSUER = "bad_issuer"
    WRONG_GATEWAY = "wrong_gateway"
    UNKNOWN_DOOR = "unknown_door"
    DOOR_MISMATCH = "door_mismatch"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    LIFETIME_TOO_LONG = "lifetime_too_long"
    REPLAYED = "replayed"
    REPLAY_STORE_FULL = "replay_store_full"
    """The gateway's replay store is at its bound; it refuses (fails closed) rather than forget."""
    REPLAY_STORE_ERROR = "replay_store_error"
    """The gateway could not record the token id (its replay file failed); refused, fail closed."""


class DeviceFault(StrEnum):
    """Why a gateway could not carry out a valid command. Carried in an ``error`` ack."""

    DRIVER_ERROR = "driver_error"
    BUSY = "busy"
    MALFORMED_COMMAND = "malformed_command"


class CommandRefusal(StrEnum):
    """Why a gateway refused a command whatever its token said. Carried in a ``denied`` ack as
    ``reason``, like a TokenRejection."""

    LOCKDOWN = "lockdown"
    """The building is in lockdown: the gateway refuses every unlock until it is lifted."""


class ModeRejection(StrEnum):
    """Why a gateway refused a mode message. Carried in a ``mode_rejected`` event as
    ``data.reason``; the gateway keeps the mode it had."""

    MALFORMED = "malformed"
    OVERSIZED = "oversized"
    BAD_HEADER = "bad_header"
    BAD_TYPE = "bad_type"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    BAD_ISSUER = "bad_issuer"
    WRONG_GATEWAY = "wrong_gateway"
    BAD_CLAIMS = "bad_claims"
    STALE_VERSION = "stale_version"
    """Not newer than the mode the gateway holds (a replayed or reordered message)."""


class OfflineRefusal(StrEnum):
    """Why a gateway's local endpoint refused an offline unlock (citykey_protocol/offline.py).
    Answered as ``{"error": {"code", "message"}}``; the HTTP status of each is in
    citykey_protocol.offline.OFFLINE_REFUSAL_STATUS."""

    MALFORMED_REQUEST = "malformed_request"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    BAD_TOKEN = "bad_token"
    """Not an authentic offline token: shape, header, type, key, signature, issuer, claims or
    lifetime."""
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    WRONG_GATEWAY = "wrong_gateway"
    UNKNOWN_DOOR = "unknown_door"
    REVOKED = "revoked"
    """The token's id is on the gateway's revocation list."""
    BAD_PROOF = "bad_proof"
    KEY_MISMATCH = "key_mismatch"
    """The proof is signed by a key other than the one the token is bound to (a copied token)."""
    PROOF_MISMATCH = "proof_mismatch"
    """The proof was made for another token (``ath``) or another door."""
    STALE_PROOF = "stale_proof"
    REPLAYED_PROOF = "replayed_proof"
    LOCKDOWN = "lockdown"
    LOCK_JAMMED = "lock_jammed"
    DEVICE_ERROR = "device_error"
    REPLAY_STORE_ERROR = "replay_store_error"
    REVOCATIONS_UNAVAILABLE = "revocations_unavailable"
    """The stored revocation list is unreadable: refuse every offline token until a fresh one
    arrives (fail closed)."""
    JOURNAL_UNAVAILABLE = "journal_unavailable"
    """The gateway's event journal cannot record the opening (full, or its file failed): no
    door opens offline without a record."""
    INTERNAL_ERROR = "internal_error"
    """Anything unexpected (logged with the traceback); the door did not open."""
