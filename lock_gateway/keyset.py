"""Signed key sets at the gateway: learn new keys only from a key already trusted.

A key set (citykey_protocol/keyset.py) arrives retained on ``citykey/v1/keys`` and, when a URL
is configured, by polling the API's ``/.well-known/citykey-keyset.jws``. Both go through the
same KeySetController.receive:

- verified with the CURRENT key set (PyJWT, ES256 only, header exactly ``{alg, kid, typ}``,
  ``typ`` citykey-keyset+jwt, our issuer). A key set arrives a few times a year, so clarity
  wins over the hand-tuned path unlock tokens take;
- ordered by ``ver`` only: a higher ``ver`` replaces the trusted keys (atomically: see
  KeySet) and the key cache; the same ``ver`` again (the retained copy at every reconnect, the
  poll, another API instance's signature of the same generation) is ignored quietly; a lower
  one is refused as stale;
- anything else is refused with a KeySetRejection and the keys stay as they were. The daemon
  reports a refusal as a ``keyset_rejected`` event, at most once per distinct payload and at
  most a few per minute: a stolen broker password must not be able to flood the event stream.
"""

import asyncio
import hashlib
import logging
import random
import time
import urllib.request
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jwt
import msgspec
from cryptography.hazmat.primitives.asymmetric import ec

from citykey_protocol.claims import ALGORITHM
from citykey_protocol.keyset import (
    KEYSET_TOKEN_TYPE,
    MAX_KEYSET_BYTES,
    KeySetClaims,
    KeySetRejection,
    claims_from_dict,
)
from lock_gateway.keys import KeySet, KeySetError, parse_jwks, save_cached_jwks

log = logging.getLogger(__name__)

_HEADER_MEMBERS = frozenset({"alg", "kid", "typ"})
_REPORT_BURST = 5
_REPORT_EVERY_S = 60.0
_REMEMBERED_PAYLOADS = 64
FIRST_POLL_SPREAD_S = 30.0


class KeySetRejectedError(Exception):
    """A key set was refused; the gateway keeps its keys. ``reason`` is a stable code."""

    def __init__(self, reason: KeySetRejection, detail: str = "", kid: str | None = None) -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail
        self.kid = kid
        self.report = True
        """False when this refusal repeats one already reported, or reports are rate-limited."""


@dataclass(frozen=True, slots=True)
class VerifiedKeySet:
    claims: KeySetClaims
    keys: dict[str, ec.EllipticCurvePublicKey]
    token: str
    kid: str
    """The signer."""


def verify_keyset(payload: bytes, keys: KeySet, issuer: str) -> VerifiedKeySet:
    """The claims and keys of an authentic key set signed by a key in ``keys``; raise
    KeySetRejectedError otherwise."""
    if len(payload) > MAX_KEYSET_BYTES:
        raise KeySetRejectedError(KeySetRejection.OVERSIZED, f"{len(payload)} bytes")
    try:
        token = payload.decode("ascii").strip()
        header = jwt.get_unverified_header(token)
    except (UnicodeDecodeError, jwt.InvalidTokenError) as exc:
        raise KeySetRejectedError(KeySetRejection.MALFORMED, _short(exc)) from exc
    kid = header.get("kid")
    kid = kid[:64] if isinstance(kid, str) else None
    # Exactly the members the API writes: no jku, x5u, jwk, crit or b64 to steer verification.
    if set(header) != _HEADER_MEMBERS or header["alg"] != ALGORITHM or kid is None:
        raise KeySetRejectedError(KeySetRejection.BAD_HEADER, kid=kid)
    if header["typ"] != KEYSET_TOKEN_TYPE:
        raise KeySetRejectedError(KeySetRejection.BAD_TYPE, str(header["typ"])[:64], kid)
    key = keys.get(kid)
    if key is None:
        raise KeySetRejectedError(KeySetRejection.UNKNOWN_KEY, "signer not trusted", kid)
    try:
        decoded = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            issuer=issuer,
            # iat is informational: a gateway whose clock is wrong must still learn new keys.
            options={"require": ["iss", "iat", "ver"], "verify_iat": False},
        )
    except jwt.InvalidSignatureError as exc:
        raise KeySetRejectedError(KeySetRejection.BAD_SIGNATURE, kid=kid) from exc
    except jwt.InvalidIssuerError as exc:
        raise KeySetRejectedError(KeySetRejection.BAD_ISSUER, kid=kid) from exc
    except jwt.DecodeError as exc:
        raise KeySetRejectedError(KeySetRejection.MALFORMED, _short(exc), kid) from exc
    except jwt.InvalidTokenError as exc:
        raise KeySetRejectedError(KeySetRejection.BAD_CLAIMS, _short(exc), kid) from exc
    try:
        claims = claims_from_dict(decoded)
    except msgspec.ValidationError as exc:
        raise KeySetRejectedError(KeySetRejection.BAD_CLAIMS, _short(exc), kid) from exc
    try:
        parsed = parse_jwks({"keys": claims.keys})
    except KeySetError as exc:  # cannot happen for a list, but never trust that
        raise KeySetRejectedError(KeySetRejection.BAD_CLAIMS, _short(exc), kid) from exc
    if not parsed:
        raise KeySetRejectedError(KeySetRejection.NO_KEYS, f"ver {claims.ver}", kid)
    return VerifiedKeySet(claims, parsed, token, kid)


class KeySetController:
    """The gateway's trusted keys over time: verifies, orders, applies and caches key sets."""

    def __init__(
        self,
        *,
        keys: KeySet,
        issuer: str,
        cache_path: Path | None,
        url: str | None = None,
        poll_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keys = keys
        self._issuer = issuer
        self._cache_path = cache_path
        self.url = url
        self.poll_s = poll_s
        self._clock = clock
        self._reported: OrderedDict[bytes, None] = OrderedDict()
        self._allowance = float(_REPORT_BURST)
        self._allowance_at = clock()
        self._announced = keys.version
        """The version this controller last reported as applied. Gateways of a simulated fleet
        share one KeySet: the first to receive a set applies it, the others announce it too."""

    @property
    def version(self) -> int:
        """``ver`` of the key set trusted now (0: the JWKS of the first boot)."""
        return self.keys.version

    def receive(self, payload: bytes) -> bool:
        """Verify and apply one key set. True when applied (the status should say so); False
        when it is the generation already held (or an emptied retained message). Raises
        KeySetRejectedError."""
        if not payload:
            return False  # retained key set cleared: keep what we trust
        try:
            verified = verify_keyset(payload, self.keys, self._issuer)
            ver = verified.claims.ver
            if ver < self.keys.version:
                raise KeySetRejectedError(
                    KeySetRejection.STALE_VERSION, f"{ver} < {self.keys.version}", verified.kid
                )
        except KeySetRejectedError as exc:
            exc.report = self._may_report(payload)
            raise
        if ver > self.keys.version:
            # Nothing awaits between the check above and this swap: no other set interleaves.
            self.keys.replace(verified.keys, version=ver, token=verified.token)
            log.info("trusting key set v%d: %s", ver, self.keys.kids())
            self._save(verified)
        if ver > self._announced:
            self._announced = ver
            return True
        return False

    async def fetch(self) -> bool:
        """Fetch the signed key set over HTTP and receive it; False when the API cannot be
        reached (logged; the MQTT copy still works). Raises KeySetRejectedError."""
        if not self.url:
            return False
        try:
            payload = await asyncio.to_thread(_http_get, self.url)
        except (OSError, ValueError) as exc:
            log.warning("key set not fetched from %s: %s", self.url, exc)
            return False
        return self.receive(payload)

    async def poll(
        self,
        on_applied: Callable[[], None],
        on_rejected: Callable[[KeySetRejectedError, str], None],
    ) -> None:
        """Fetch soon and then every ``poll_s`` seconds, until cancelled. The first fetch waits
        a random moment (at most FIRST_POLL_SPREAD_S): a fleet started together, or a city's
        gateways back after a power cut, must not all ask the API at once; the retained copy on
        the broker arrives at connect anyway."""
        await asyncio.sleep(random.uniform(0.0, min(FIRST_POLL_SPREAD_S, self.poll_s)))
        while True:
            try:
                if await self.fetch():
                    on_applied()
            except KeySetRejectedError as exc:
                on_rejected(exc, "http")
            await asyncio.sleep(self.poll_s)

    def start_polling(
        self,
        on_applied: Callable[[], None],
        on_rejected: Callable[[KeySetRejectedError, str], None],
    ) -> "asyncio.Task[None] | None":
        """The poll as a task, when a URL and an interval are configured."""
        if not self.url or self.poll_s <= 0:
            return None
        return asyncio.create_task(self.poll(on_applied, on_rejected), name="keyset-poll")

    def _save(self, verified: VerifiedKeySet) -> None:
        if self._cache_path is None:
            return
        document = {
            "keys": verified.claims.keys,
            "keyset_version": verified.claims.ver,
            "keyset": verified.token,
        }
        try:
            save_cached_jwks(self._cache_path, document)
        except OSError as exc:
            # The new keys are in force now; only a restart would fall back to the old cache.
            log.error("could not cache key set v%d: %s", verified.claims.ver, exc)

    def _may_report(self, payload: bytes) -> bool:
        digest = hashlib.sha256(payload).digest()
        if digest in self._reported:
            return False
        self._reported[digest] = None
        if len(self._reported) > _REMEMBERED_PAYLOADS:
            self._reported.popitem(last=False)
        now = self._clock()
        self._allowance = min(
            float(_REPORT_BURST), self._allowance + (now - self._allowance_at) / _REPORT_EVERY_S
        )
        self._allowance_at = now
        if self._allowance < 1.0:
            return False
        self._allowance -= 1.0
        return True


def _http_get(url: str, timeout: float = 5.0) -> bytes:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"key set URL must be http(s): {url!r}")
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (scheme checked)
        body: bytes = response.read(MAX_KEYSET_BYTES + 1)
    return body


def _short(exc: BaseException) -> str:
    return str(exc)[:200]
