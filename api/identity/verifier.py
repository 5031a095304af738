"""Bearer-token verification: one verifier, configured by issuer, audience and key source.

The development identity provider and a real OpenID Connect provider (ID-porten, Keycloak,
Entra ID) differ only in where the keys come from: a local key, or the provider's JWKS URL.
"""

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import jwt

from citykey_protocol.claims import UNLOCK_TOKEN_TYPE

ALLOWED_ALGORITHMS = ("ES256", "RS256", "PS256")


class IdentityTokenError(Exception):
    """The bearer token is not acceptable. ``code`` is the stable error code of the 401."""

    def __init__(self, message: str, code: str = "invalid_token") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified caller. ``subject`` is the citykey user id."""

    subject: str
    issuer: str
    claims: Mapping[str, Any]
    provisioned_name: str | None = None
    """Set for a person the provider vouches for: the API creates the user on first use with
    this display name (api/deps.py). None: the user must already exist."""


class TokenVerifier(Protocol):
    async def verify(self, token: str) -> Principal:
        """The verified caller; raise IdentityTokenError otherwise."""
        ...


class KeySource(Protocol):
    async def key_for(self, kid: str) -> Any:
        """The verification key for ``kid``; raise IdentityTokenError when unknown."""
        ...


class StaticKeySource:
    """Keys known in-process (the development identity provider)."""

    def __init__(self, keys: Mapping[str, Any]) -> None:
        self._keys = dict(keys)

    async def key_for(self, kid: str) -> Any:
        try:
            return self._keys[kid]
        except KeyError:
            raise IdentityTokenError("unknown signing key") from None


class BearerVerifier:
    """Checks signature, issuer, audience, expiry and token type of identity tokens."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        keys: KeySource,
        leeway: float = 30,
        subject: Callable[[Mapping[str, Any]], Principal] | None = None,
    ) -> None:
        self.issuer = issuer
        self._audience = audience
        self._keys = keys
        self._leeway = leeway
        # How verified claims become a Principal (default: "sub" is the citykey user id).
        self._subject = subject

    async def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise IdentityTokenError("malformed token") from exc
        if header.get("typ") == UNLOCK_TOKEN_TYPE:
            raise IdentityTokenError("an unlock token is not an identity token")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise IdentityTokenError("token has no kid")
        key = await self._keys.key_for(kid)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=list(ALLOWED_ALGORITHMS),
                audience=self._audience,
                issuer=self.issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise IdentityTokenError(str(exc), "token_expired") from exc
        except jwt.PyJWTError as exc:
            raise IdentityTokenError(str(exc)) from exc
        if self._subject is not None:
            return self._subject(claims)
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise IdentityTokenError("bad subject")
        return Principal(subject=subject, issuer=self.issuer, claims=claims)


CACHE_SIZE = 10_000
"""Verified tokens remembered per process (a phone reuses its token for many requests)."""
CACHE_TTL_S = 60.0
"""At most this long, and never past the token's ``exp``: a signing key withdrawn from the
provider's key set stops being honoured for cached tokens within a minute."""


class IssuerVerifiers:
    """Several verifiers, chosen by the token's (unverified) issuer; the chosen one then checks
    everything, the issuer included. Dev tokens and the provider's access tokens side by side.

    Verified tokens are cached (token -> Principal, bounded, until ``exp`` or ``CACHE_TTL_S``):
    a token is immutable, so the same bytes verify the same way until they expire, and an
    ES256 verification costs about 100 µs of CPU per request. Failures are not cached."""

    def __init__(
        self, verifiers: Mapping[str, TokenVerifier], clock: Callable[[], float] = time.time
    ) -> None:
        self._verifiers = dict(verifiers)
        self._clock = clock
        self._cache: dict[str, tuple[Principal, float]] = {}

    async def verify(self, token: str) -> Principal:
        """Verify ``token`` with the verifier of its issuer (or remember that it was)."""
        now = self._clock()
        cached = self._cache.get(token)
        if cached is not None:
            if now < cached[1]:
                return cached[0]
            del self._cache[token]
        principal = await self._verify(token)
        exp = principal.claims.get("exp")
        if isinstance(exp, int | float) and not isinstance(exp, bool) and exp > now:
            if len(self._cache) >= CACHE_SIZE:
                self._forget_expired(now)
            self._cache[token] = (principal, min(float(exp), now + CACHE_TTL_S))
        return principal

    def _forget_expired(self, now: float) -> None:
        for token in [t for t, (_, until) in self._cache.items() if until <= now]:
            del self._cache[token]
        while len(self._cache) >= CACHE_SIZE:
            del self._cache[next(iter(self._cache))]  # oldest first

    async def _verify(self, token: str) -> Principal:
        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
        except jwt.PyJWTError as exc:
            raise IdentityTokenError("malformed token") from exc
        verifier = self._verifiers.get(issuer) if isinstance(issuer, str) else None
        if verifier is None:
            raise IdentityTokenError("unknown issuer")
        return await verifier.verify(token)
