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


class DeviceFault(StrEnum):
    """Why a gateway could not carry out a valid command. Carried in an ``error`` ack."""

    DRIVER_ERROR = "driver_error"
    BUSY = "busy"
    MALFORMED_COMMAND = "malformed_command"
