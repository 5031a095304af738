"""Bearer-token verification: one verifier, configured by issuer, audience and key source.

The development identity provider and a real OpenID Connect provider (ID-porten, Keycloak,
Entra ID) differ only in where the keys come from: a local key, or the provider's JWKS URL.
"""

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import jwt

from citykey_protocol.claims import UNLOCK_TOKEN_TYPE

ALLOWED_ALGORITHMS = ("ES256", "RS256", "PS256")


class IdentityTokenError(Exception):
    """The bearer token is not acceptable."""


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified caller. ``subject`` is the citykey user id."""

    subject: str
    issuer: str
    claims: Mapping[str, Any]


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


class RemoteJwksSource:
    """A provider's JWKS URL, cached (PyJWKClient refetches on an unknown kid)."""

    def __init__(self, jwks_url: str, cache_seconds: int = 86_400) -> None:
        self._client = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=cache_seconds)

    async def key_for(self, kid: str) -> Any:
        try:
            jwk = await asyncio.to_thread(self._client.get_signing_key, kid)
        except jwt.PyJWKClientError as exc:
            raise IdentityTokenError(str(exc)) from exc
        return jwk.key


class BearerVerifier:
    """Checks signature, issuer, audience, expiry and token type of identity tokens."""

    def __init__(self, *, issuer: str, audience: str, keys: KeySource, leeway: float = 30) -> None:
        self.issuer = issuer
        self._audience = audience
        self._keys = keys
        self._leeway = leeway

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
        except jwt.PyJWTError as exc:
            raise IdentityTokenError(str(exc)) from exc
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise IdentityTokenError("bad subject")
        return Principal(subject=subject, issuer=self.issuer, claims=claims)
