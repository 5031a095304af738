"""Access tokens for booking systems (OAuth 2 client credentials).

An ES256 JWT signed with a key of its own (``machine-clients.pem`` in the key directory), never
the unlock-token key ring and never the identity provider's key:

- header ``typ`` = ``citykey-client+jwt`` and a ``kid`` derived from the public key;
- claims ``iss`` = the API's issuer, ``aud`` = ``citykey-bookings``, ``sub`` = the client id,
  ``scope`` = ``bookings``, ``iat``, ``exp`` (one hour).

Identity tokens fail here (other type, key, audience); these tokens fail at the identity
verifier (unknown kid, other issuer and audience). Only this API verifies them, so the key
never leaves the server.
"""

import hashlib
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from api.keys.keyring import generate_private_key, read_private_key, write_private_key
from api.settings import Settings
from api.state import AppState

CLIENT_TOKEN_TYPE = "citykey-client+jwt"
AUDIENCE = "citykey-bookings"
SCOPE = "bookings"
LIFETIME_S = 3600
KEY_FILE = "machine-clients.pem"
ALGORITHM = "ES256"
MAX_TOKEN_BYTES = 4096
LEEWAY_S = 30


class ClientTokenError(Exception):
    """The token is not a valid booking client token."""


class ClientKeyMissingError(Exception):
    """No machine-client key, and this deployment may not generate one."""


def _kid(key: ec.EllipticCurvePrivateKey) -> str:
    # Derived from the public key: replacing the key file changes the kid, so tokens signed by
    # an old key are refused as "unknown key" rather than failing obscurely.
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "mc-" + hashlib.sha256(spki).hexdigest()[:16]


class ClientTokens:
    """Issues and verifies booking client access tokens."""

    def __init__(
        self,
        private_key: ec.EllipticCurvePrivateKey,
        issuer: str,
        *,
        lifetime_s: int = LIFETIME_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = private_key
        self._public = private_key.public_key()
        self.kid = _kid(private_key)
        self.issuer = issuer
        self.lifetime_s = lifetime_s
        self._clock = clock

    @classmethod
    def load(cls, key_dir: Path, issuer: str, *, generate: bool) -> "ClientTokens":
        """Read the key from ``key_dir``; create it when missing and ``generate`` allows."""
        path = key_dir / KEY_FILE
        if path.exists():
            key = read_private_key(path)
        elif generate:
            key = generate_private_key()
            write_private_key(path, key)
        else:
            raise ClientKeyMissingError(f"no {KEY_FILE} in {key_dir}")
        return cls(key, issuer)

    def issue(self, client_id: str) -> str:
        """A signed access token for ``client_id``."""
        now = int(self._clock())
        claims = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": client_id,
            "scope": SCOPE,
            "iat": now,
            "exp": now + self.lifetime_s,
        }
        return jwt.encode(
            claims,
            self._key,
            algorithm=ALGORITHM,
            headers={"kid": self.kid, "typ": CLIENT_TOKEN_TYPE},
        )

    def verify(self, token: str) -> str:
        """The client id of a valid token; raise ClientTokenError otherwise."""
        if len(token) > MAX_TOKEN_BYTES:
            raise ClientTokenError("token too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise ClientTokenError("malformed token") from exc
        # Checked before the signature: an identity or unlock token is refused by type alone.
        if header.get("typ") != CLIENT_TOKEN_TYPE:
            raise ClientTokenError("not a booking client token")
        if header.get("alg") != ALGORITHM or header.get("kid") != self.kid:
            raise ClientTokenError("unknown signing key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._public,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise ClientTokenError(str(exc)) from exc
        scope = claims.get("scope")
        if not isinstance(scope, str) or SCOPE not in scope.split():
            raise ClientTokenError("token lacks the bookings scope")
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise ClientTokenError("bad subject")
        return subject


def tokens_for_settings(settings: Settings) -> ClientTokens:
    """The token service for these settings (its key read or created on disk)."""
    return ClientTokens.load(settings.key_dir, settings.issuer, generate=settings.generate_keys)


# One token service per running app, created on first use (api/state.py is not ours to widen;
# AppState has slots and no weakref support). Keyed by the app's Settings object, one per app;
# the entry goes away with it, so an id is never reused for a stale entry.
_services: dict[int, ClientTokens] = {}


def client_tokens(state: AppState) -> ClientTokens:
    """The app's booking client token service; raise ClientKeyMissingError without a key."""
    key = id(state.settings)
    service = _services.get(key)
    if service is None:
        service = tokens_for_settings(state.settings)
        _services[key] = service
        weakref.finalize(state.settings, _services.pop, key, None)
    return service
