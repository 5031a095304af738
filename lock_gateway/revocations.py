"""The gateway's list of revoked offline tokens, from signed, versioned messages.

The API keeps one revocation list per gateway, retained on
``citykey/v1/gw/<id>/revocations``: a compact ES256 JWS (citykey_protocol/offline.py,
RevocationClaims) naming the ids of revoked offline tokens that have not expired yet. Like a
mode message it is verified with PyJWT against the gateway's key set (a list changes a few
times a day at most: clarity over speed), applied only when its version is higher than the one
held, and kept on disk (write, fsync, rename) so that a restart, or a retained message deleted
by someone holding a broker password, forgets no revocation. Someone who controls the broker
can withhold or replay a list but cannot forge one, shorten one, or roll a gateway back.

Each list replaces the previous one whole: the API lists every revoked token still alive, and
a token that has expired needs no listing, so the list stays small without any pruning here.
"""

import asyncio
import json
import logging
import os
from pathlib import Path

import msgspec

from citykey_protocol.codes import ModeRejection
from citykey_protocol.offline import (
    MAX_REVOCATIONS_BYTES,
    REVOCATIONS_TYPE,
    RevocationClaims,
    revocation_claims,
)
from lock_gateway.keys import KeySet
from lock_gateway.signed_message import SignedMessageError, decode_signed_message

log = logging.getLogger(__name__)

REVOCATIONS_FILE = "revocations.json"
"""Name of the applied list's file in the gateway's state directory."""
_STORE_FORMAT = 1


class RevocationsRejectedError(Exception):
    """A revocation list was refused; the gateway keeps the list it had. ``reason`` is one of
    the mode-message codes (ModeRejection): the checks are the same."""

    def __init__(self, reason: ModeRejection, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


class RevocationsUnavailableError(Exception):
    """The stored list could not be read: no offline token can be trusted until a fresh list
    arrives (fail closed)."""


def _short(exc: Exception) -> str:
    return str(exc)[:200]


def verify_revocations(
    payload: bytes, keys: KeySet, issuer: str, gateway_id: str
) -> RevocationClaims:
    """The claims of an authentic revocation list for ``gateway_id``; raise
    RevocationsRejectedError otherwise."""
    try:
        decoded = decode_signed_message(
            payload,
            keys=keys,
            token_type=REVOCATIONS_TYPE,
            max_bytes=MAX_REVOCATIONS_BYTES,
            issuer=issuer,
            audience=gateway_id,
        )
    except SignedMessageError as exc:
        raise RevocationsRejectedError(exc.reason, exc.detail) from exc
    try:
        return revocation_claims(decoded)
    except msgspec.ValidationError as exc:
        raise RevocationsRejectedError(ModeRejection.BAD_CLAIMS, _short(exc)) from exc


class RevocationList:
    """The revocation list a gateway applies: verifies, orders by version, persists.

    ``path`` None keeps it in memory only (a restart then starts from an empty list, version 0,
    until the retained message arrives again).
    """

    def __init__(self, *, keys: KeySet, issuer: str, gateway_id: str, path: Path | None) -> None:
        self._keys = keys
        self._issuer = issuer
        self._gateway_id = gateway_id
        self._path = path
        self._version = 0
        self._jtis: frozenset[str] = frozenset()
        self._usable = True
        # One list at a time, in arrival order.
        self._lock = asyncio.Lock()

    @property
    def version(self) -> int:
        """Version of the list applied (0: none yet)."""
        return self._version

    def __len__(self) -> int:
        return len(self._jtis)

    def is_revoked(self, jti: str) -> bool:
        """True when ``jti`` is listed. Raises RevocationsUnavailableError when the stored list
        was unreadable and no fresh one has arrived since."""
        if not self._usable:
            raise RevocationsUnavailableError(f"{self._path}: stored revocation list unreadable")
        return jti in self._jtis

    def restore(self) -> None:
        """Load the stored list (call once, at start). An unreadable file fails closed: every
        offline token is refused until an authentic list arrives."""
        if self._path is None:
            return
        try:
            document = json.loads(self._path.read_text())
            if document["format"] != _STORE_FORMAT:
                raise ValueError(f"unknown format {document['format']!r}")
            version = int(document["version"])
            jtis = frozenset(str(j) for j in document["jtis"])
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("%s: revocation list unreadable, refusing offline tokens: %s", self._gid, exc)
            self._usable = False
            return
        self._version, self._jtis = version, jtis
        log.info("%s: restored revocation list %d (%d ids)", self._gid, version, len(jtis))

    async def receive(self, payload: bytes) -> bool:
        """Verify and apply one list. True when applied; False when its version is the one held
        (the retained copy again, or the API re-signing the same version). Raises
        RevocationsRejectedError when refused (the list held stays)."""
        claims = verify_revocations(payload, self._keys, self._issuer, self._gateway_id)
        async with self._lock:
            if claims.ver == self._version and self._usable:
                return False
            if claims.ver < self._version:
                raise RevocationsRejectedError(
                    ModeRejection.STALE_VERSION, f"{claims.ver} < {self._version}"
                )
            jtis = frozenset(claims.jtis)
            try:
                self._save(claims.ver, jtis)
            except OSError as exc:
                # The list still takes effect now; only a restart could lose it.
                log.error("%s: could not store revocation list %d: %s", self._gid, claims.ver, exc)
            self._version, self._jtis, self._usable = claims.ver, jtis, True
            log.info("%s: revocation list %d applied (%d ids)", self._gid, claims.ver, len(jtis))
            return True

    def _save(self, version: int, jtis: frozenset[str]) -> None:
        """Write atomically and durably (temporary file, fsync, rename)."""
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        document = {"format": _STORE_FORMAT, "version": version, "jtis": sorted(jtis)}
        tmp = self._path.with_name(self._path.name + ".tmp")
        with tmp.open("w") as handle:
            json.dump(document, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self._path)

    @property
    def _gid(self) -> str:
        return self._gateway_id
