"""Offline unlock at the gateway: check an offline token and the app's proof, then open.

When the building's internet or the API is down, the citizen's app presents, over the
gateway's local endpoint (lock_gateway/local_endpoint.py), an offline token the API issued
earlier and a fresh proof signed by the app's own key (citykey_protocol/offline.py). The
gateway decides alone, from what it holds: the API's public keys, its doors, its revocation
list, its mode (lockdown) and its clock.

The checks, in order (the first that fails decides; codes are OfflineRefusal):

1. lockdown: refused before anything is read (``lockdown``);
2. the token: at most 4 KiB of ASCII; header exactly ``{alg: ES256, kid, typ}`` with ``typ``
   ``citykey-offline+jwt``; ``kid`` trusted; signature; ``iss``; ``aud`` this gateway
   (``wrong_gateway``); typed claims; ``exp``/``nbf``/``iat`` against the gateway's clock
   with its leeway (``expired``, ``not_yet_valid``); ``exp - iat`` at most an hour; ``door``
   one of ours (``unknown_door``); anything else ``bad_token``;
3. the revocation list names the token's ``jti`` (``revoked``);
4. the proof: at most 4 KiB of ASCII; header exactly ``{alg: ES256, typ, jwk}`` with ``typ``
   ``citykey-offline-proof+jwt`` and ``jwk`` an EC P-256 public key (``bad_proof``); that
   key's RFC 7638 thumbprint equals the token's ``cnf.jkt`` (``key_mismatch``: a copied token
   with someone else's key); signature by that key and typed claims (``bad_proof``); ``iat``
   within 30 s of our clock (``stale_proof``); ``ath`` is the token's hash and ``door`` the
   token's door (``proof_mismatch``);
5. the proof's ``jti`` is recorded, once (``replayed_proof``; ``replay_store_error`` when the
   store cannot record it). Recorded only after every other check held, so a forger can
   neither fill the store nor burn someone's proof id; kept per app key, so one app cannot
   burn another's ids either.

An offline token may open its door any number of times until it expires: each opening needs a
new proof. Single use would not fit the situation (the app obtained the token while online and
may need the door twice, or again after a jam), would not add safety (the token is bound to the
app's key and lives minutes), and use-limited access never gets offline tokens (the API refuses
them).

Journal (Gateway.record_event, lock_gateway/journal.py): every refusal of an authentic token is
an ``offline_unlock`` event with the refusal code as ``result``. An accepted one is journaled
as ``result: authorized`` *before* the lock moves, with ``required=True``: when the journal
cannot keep it, the door stays shut (``journal_unavailable``), so no door opens offline without
a record, as no command leaves the API before its audit row is committed. The outcome follows
(``unlocked`` with ``unlocked_until``, or the failure). Events reach the audit log when the
link is back.

PyJWT and cryptography do the work: this is not the MQTT hot path, so clarity comes first.
"""

import logging
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any, Protocol

import jwt
import msgspec
from cryptography.hazmat.primitives.asymmetric import ec

from citykey_protocol.claims import ALGORITHM
from citykey_protocol.codes import AckResult, OfflineRefusal
from citykey_protocol.offline import (
    AUTHORIZED,
    MAX_JWS_BYTES,
    MAX_OFFLINE_TOKEN_LIFETIME_S,
    OFFLINE_TOKEN_TYPE,
    OFFLINE_UNLOCK_EVENT,
    PROOF_MAX_AGE_S,
    PROOF_TYPE,
    REVOCATIONS_REJECTED_EVENT,
    InvalidJwkError,
    OfflineClaims,
    OfflineUnlockResponse,
    ProofClaims,
    jwk_coordinates,
    jwk_thumbprint,
    offline_claims,
    proof_claims,
    request_decoder,
    token_hash,
)
from lock_gateway.config import GatewayConfig
from lock_gateway.journal import JournalError
from lock_gateway.keys import KeySet
from lock_gateway.local_endpoint import LocalEndpoint, OfflineAnswer, refusal
from lock_gateway.modes import ModeController
from lock_gateway.replay import ReplayGuard, ReplayStoreError
from lock_gateway.revocations import (
    REVOCATIONS_FILE,
    RevocationList,
    RevocationsRejectedError,
    RevocationsUnavailableError,
)

log = logging.getLogger(__name__)

OFFLINE_REPLAY_DB_FILE = "offline_proofs.sqlite3"
"""File name of the store of used proof ids inside the gateway's state directory."""

_TOKEN_HEADER = frozenset({"alg", "kid", "typ"})
_PROOF_HEADER = frozenset({"alg", "typ", "jwk"})
_TOKEN_CLAIMS = ["iss", "aud", "sub", "exp", "iat", "nbf", "jti"]


class OfflineRefusedError(Exception):
    """The request must not open the door. ``claims`` is set once the token was authentic."""

    def __init__(
        self, reason: OfflineRefusal, detail: str = "", claims: OfflineClaims | None = None
    ) -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail
        self.claims = claims


@dataclass(frozen=True, slots=True)
class OfflineGrant:
    """An offline token and a proof that both held: the door may open."""

    token: OfflineClaims
    proof: ProofClaims


Actuate = Callable[[str, int], Awaitable[tuple[AckResult, str | None, float | None]]]
"""The gateway's own actuation (Gateway.actuate): door, seconds -> (result, reason, until)."""


class RecordEvent(Protocol):
    """The gateway's event method (Gateway.record_event: journaled, then published)."""

    def __call__(
        self, kind: str, door: str | None, data: dict[str, Any], *, required: bool = False
    ) -> int | None: ...


def _short(exc: Exception) -> str:
    return str(exc)[:200]


def _ascii(value: str, what: OfflineRefusal) -> None:
    if len(value) > MAX_JWS_BYTES or not value.isascii():
        raise OfflineRefusedError(what, "too long or not ASCII")


class OfflineVerifier:
    """Checks offline tokens and proofs for one gateway (module docstring, steps 2 to 5)."""

    def __init__(
        self,
        *,
        keys: KeySet,
        issuer: str,
        gateway_id: str,
        doors: Collection[str],
        revocations: RevocationList,
        proof_guard: ReplayGuard,
        leeway: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._gateway_id = gateway_id
        self._doors = frozenset(doors)
        self._revocations = revocations
        self._guard = proof_guard
        self._leeway = leeway
        self._clock = clock

    def verify(self, token: str, proof: str) -> OfflineGrant:
        """Both checked and the proof's id recorded; raise OfflineRefusedError otherwise."""
        claims = self.verify_token(token)
        try:
            revoked = self._revocations.is_revoked(claims.jti)
        except RevocationsUnavailableError as exc:
            raise OfflineRefusedError(
                OfflineRefusal.REVOCATIONS_UNAVAILABLE, str(exc), claims
            ) from exc
        if revoked:
            raise OfflineRefusedError(OfflineRefusal.REVOKED, claims=claims)
        try:
            checked = self.verify_proof(proof, token, claims)
        except OfflineRefusedError as exc:
            exc.claims = claims
            raise
        self._claim_proof(claims, checked)
        return OfflineGrant(claims, checked)

    def verify_token(self, token: str) -> OfflineClaims:
        """The claims of an authentic, current offline token for one of our doors."""
        _ascii(token, OfflineRefusal.BAD_TOKEN)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise OfflineRefusedError(OfflineRefusal.BAD_TOKEN, _short(exc)) from exc
        if set(header) != _TOKEN_HEADER or header["alg"] != ALGORITHM:
            raise OfflineRefusedError(OfflineRefusal.BAD_TOKEN, "bad header")
        if header["typ"] != OFFLINE_TOKEN_TYPE:
            raise OfflineRefusedError(OfflineRefusal.BAD_TOKEN, "not an offline token")
        kid = header["kid"]
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise OfflineRefusedError(OfflineRefusal.BAD_TOKEN, "unknown key")
        try:
            decoded = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._gateway_id,
                issuer=self._issuer,
                # Times are judged below, against the gateway's clock (injectable in tests).
                options={
                    "require": _TOKEN_CLAIMS,
                    "strict_aud": True,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidAudienceError as exc:
            raise OfflineRefusedError(OfflineRefusal.WRONG_GATEWAY) from exc
        except jwt.InvalidTokenError as exc:
            raise OfflineRefusedError(OfflineRefusal.BAD_TOKEN, _short(exc)) from exc
        try:
            claims = offline_claims(decoded)
        except msgspec.ValidationError as exc:
            raise OfflineRefusedError(OfflineRefusal.BAD_TOKEN, _short(exc)) from exc
        now = self._clock()
        if claims.exp <= now - self._leeway:
            raise OfflineRefusedError(OfflineRefusal.EXPIRED)
        if claims.nbf > now + self._leeway or claims.iat > now + self._leeway:
            raise OfflineRefusedError(OfflineRefusal.NOT_YET_VALID)
        if not claims.iat <= claims.nbf <= claims.exp:
            raise OfflineRefusedError(OfflineRefusal.BAD_TOKEN, "iat <= nbf <= exp violated")
        if claims.exp - claims.iat > MAX_OFFLINE_TOKEN_LIFETIME_S:
            raise OfflineRefusedError(OfflineRefusal.BAD_TOKEN, "lifetime too long")
        if claims.door not in self._doors:
            raise OfflineRefusedError(OfflineRefusal.UNKNOWN_DOOR)
        return claims

    def verify_proof(self, proof: str, token: str, claims: OfflineClaims) -> ProofClaims:
        """The claims of a fresh proof for ``token``, signed by the key it is bound to (the
        proof's id is not recorded here)."""
        _ascii(proof, OfflineRefusal.BAD_PROOF)
        try:
            header = jwt.get_unverified_header(proof)
        except jwt.InvalidTokenError as exc:
            raise OfflineRefusedError(OfflineRefusal.BAD_PROOF, _short(exc)) from exc
        if set(header) != _PROOF_HEADER or header["alg"] != ALGORITHM:
            raise OfflineRefusedError(OfflineRefusal.BAD_PROOF, "bad header")
        if header["typ"] != PROOF_TYPE:
            raise OfflineRefusedError(OfflineRefusal.BAD_PROOF, "not a proof")
        try:
            thumbprint = jwk_thumbprint(header["jwk"])
        except InvalidJwkError as exc:
            raise OfflineRefusedError(OfflineRefusal.BAD_PROOF, str(exc)) from exc
        # Before the signature: the cheap check that catches a copied token.
        if thumbprint != claims.cnf.jkt:
            raise OfflineRefusedError(OfflineRefusal.KEY_MISMATCH)
        try:
            x, y = jwk_coordinates(header["jwk"])
            key = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
        except ValueError as exc:  # InvalidJwkError, or a point not on the curve
            raise OfflineRefusedError(OfflineRefusal.BAD_PROOF, _short(exc)) from exc
        try:
            decoded = jwt.decode(
                proof,
                key,
                algorithms=[ALGORITHM],
                # Freshness is judged below against the proof window, not by PyJWT.
                options={
                    "require": ["jti", "iat"],
                    "verify_aud": False,
                    "verify_iat": False,
                    "verify_exp": False,
                    "verify_nbf": False,
                },
            )
            checked = proof_claims(decoded)
        except (jwt.InvalidTokenError, msgspec.ValidationError) as exc:
            raise OfflineRefusedError(OfflineRefusal.BAD_PROOF, _short(exc)) from exc
        if abs(self._clock() - checked.iat) > PROOF_MAX_AGE_S:
            raise OfflineRefusedError(OfflineRefusal.STALE_PROOF)
        if checked.ath != token_hash(token) or checked.door != claims.door:
            raise OfflineRefusedError(OfflineRefusal.PROOF_MISMATCH)
        return checked

    def _claim_proof(self, claims: OfflineClaims, checked: ProofClaims) -> None:
        # Kept until the proof could no longer pass the freshness check (plus the guard's
        # leeway); namespaced by the app key, so one app cannot burn another's ids.
        key = f"{claims.cnf.jkt}:{checked.jti}"
        try:
            fresh = self._guard.claim(key, checked.iat + PROOF_MAX_AGE_S, self._clock())
        except ReplayStoreError as exc:
            raise OfflineRefusedError(
                OfflineRefusal.REPLAY_STORE_ERROR, _short(exc), claims
            ) from exc
        if not fresh:
            raise OfflineRefusedError(OfflineRefusal.REPLAYED_PROOF, claims=claims)


_ACK_REFUSALS = {
    AckResult.JAMMED: OfflineRefusal.LOCK_JAMMED,
    AckResult.ERROR: OfflineRefusal.DEVICE_ERROR,
    AckResult.DENIED: OfflineRefusal.LOCKDOWN,  # the one refusal left after validation
}


class OfflineUnlocker:
    """Handles one offline unlock request: verify, actuate, journal, answer."""

    def __init__(
        self,
        *,
        verifier: OfflineVerifier,
        modes: ModeController,
        actuate: Actuate,
        record_event: RecordEvent,
        gateway_id: str,
    ) -> None:
        self._verifier = verifier
        self._modes = modes
        self._actuate = actuate
        self._record = record_event
        self._gateway_id = gateway_id

    async def handle(self, body: bytes) -> OfflineAnswer:
        """The answer to one ``POST /v1/offline-unlock`` body (never raises for bad input)."""
        try:
            request = request_decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
            return refusal(OfflineRefusal.MALFORMED_REQUEST)
        if self._modes.lockdown:
            # Refused before the token is even read, as for online commands.
            return refusal(OfflineRefusal.LOCKDOWN)
        try:
            grant = self._verifier.verify(request.token, request.proof)
        except OfflineRefusedError as exc:
            log.info("%s: offline unlock refused: %s", self._gateway_id, exc)
            if exc.claims is not None:
                # An authentic token refused (a copied token, a revoked one, a replay): worth
                # a line in the audit log. Garbage is only logged, so it cannot flood the
                # journal.
                self._journal(exc.claims, exc.reason.value)
            return refusal(exc.reason)
        claims = grant.token
        try:
            # Journaled before the lock moves (required: refused when it cannot be kept), as
            # an online unlock is audited before its command leaves.
            self._journal(claims, AUTHORIZED, required=True, proof_jti=grant.proof.jti)
        except JournalError as exc:
            log.error("%s: offline unlock refused, journal failed: %s", self._gateway_id, exc)
            return refusal(OfflineRefusal.JOURNAL_UNAVAILABLE)
        result, _, until = await self._actuate(claims.door, claims.dur)
        if result is not AckResult.UNLOCKED or until is None:
            reason = _ACK_REFUSALS.get(result, OfflineRefusal.DEVICE_ERROR)
            self._journal(claims, reason.value)
            return refusal(reason)
        self._journal(claims, AckResult.UNLOCKED.value, unlocked_until=until)
        answer = OfflineUnlockResponse(door=claims.door, unlocked_until=until)
        return OfflineAnswer(200, msgspec.json.encode(answer))

    def _journal(
        self, claims: OfflineClaims, result: str, *, required: bool = False, **extra: Any
    ) -> None:
        data = {"sub": claims.sub, "jti": claims.jti, "door": claims.door, "result": result}
        self._record(OFFLINE_UNLOCK_EVENT, claims.door, {**data, **extra}, required=required)


class OfflineChannel:
    """Offline unlock at one gateway, wired: the revocation list, the store of used proof ids,
    the verifier, the unlocker and (when ``config.local_listen`` is set) the local endpoint.
    The daemon makes one, starts it before connecting to the broker (offline unlock must work
    without the broker), hands it the revocation list messages, and closes it on stop."""

    def __init__(
        self,
        config: GatewayConfig,
        keys: KeySet,
        modes: ModeController,
        actuate: Actuate,
        record_event: RecordEvent,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        state = config.state_dir
        self._gateway_id = config.gateway_id
        self._record = record_event
        self.revocations = RevocationList(
            keys=keys,
            issuer=config.issuer,
            gateway_id=config.gateway_id,
            path=None if state is None else state / REVOCATIONS_FILE,
        )
        self._proofs = ReplayGuard(
            leeway=config.leeway_s,
            path=None if state is None else state / OFFLINE_REPLAY_DB_FILE,
            now=clock(),
        )
        self.verifier = OfflineVerifier(
            keys=keys,
            issuer=config.issuer,
            gateway_id=config.gateway_id,
            doors=config.doors.keys(),
            revocations=self.revocations,
            proof_guard=self._proofs,
            leeway=config.leeway_s,
            clock=clock,
        )
        self.unlocker = OfflineUnlocker(
            verifier=self.verifier,
            modes=modes,
            actuate=actuate,
            record_event=record_event,
            gateway_id=config.gateway_id,
        )
        self.endpoint = (
            LocalEndpoint(config.local_listen, self.unlocker.handle)
            if config.local_listen
            else None
        )

    async def start(self) -> None:
        """Restore the stored revocation list, then open the local endpoint (if configured)."""
        self.revocations.restore()
        if self.endpoint is not None:
            await self.endpoint.start()

    async def close(self) -> None:
        """Close the local endpoint and the proof store."""
        if self.endpoint is not None:
            await self.endpoint.close()
        self._proofs.close()

    async def receive_revocations(self, payload: object) -> None:
        """Apply a revocation list from the broker; report a refused one as a
        ``revocations_rejected`` event. An empty (deleted) retained message changes nothing."""
        if not isinstance(payload, bytes | bytearray) or not payload:
            return
        try:
            await self.revocations.receive(bytes(payload))
        except RevocationsRejectedError as exc:
            log.warning("%s: revocation list refused: %s", self._gateway_id, exc)
            self._record(
                REVOCATIONS_REJECTED_EVENT,
                None,
                {
                    "reason": exc.reason.value,
                    "detail": exc.detail,
                    "current_version": self.revocations.version,
                },
            )
