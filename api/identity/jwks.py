"""The provider's signing keys: fetched from its JWKS URL with httpx (never blocking the event
loop), cached, and refetched when a token names a key we do not know (key rotation).

An unknown kid refetches at most once per ``min_refetch_s``: a flood of tokens with made-up
kids costs the provider one request per interval, not one per token. The cache also expires
after ``cache_s`` (a key the provider withdrew stops being accepted). When a refetch fails, the
keys already known stay in use.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt

from api.identity.verifier import IdentityTokenError

log = logging.getLogger(__name__)


class AsyncJwksSource:
    """A KeySource (api/identity/verifier.py) backed by a JWKS URL."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        jwks_uri: str,
        *,
        cache_s: float = 86_400,
        min_refetch_s: float = 60,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self.jwks_uri = jwks_uri
        self._cache_s = cache_s
        self._min_refetch_s = min_refetch_s
        self._clock = clock
        self._keys: dict[str, Any] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0
        """How many times the JWKS was requested (for tests and metrics)."""

    async def key_for(self, kid: str) -> Any:
        """The public key ``kid``; refetches on expiry or an unknown kid (rate-limited)."""
        if self._stale() or kid not in self._keys:
            async with self._lock:  # concurrent requests share one fetch
                if self._stale() or (kid not in self._keys and self._may_refetch()):
                    await self.refresh()
        try:
            return self._keys[kid]
        except KeyError:
            raise IdentityTokenError("unknown signing key") from None

    def _stale(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at >= self._cache_s

    def _may_refetch(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at >= self._min_refetch_s

    async def refresh(self) -> None:
        """Fetch the key set now. A failure keeps the known keys (and is retried no sooner
        than ``min_refetch_s`` for unknown kids)."""
        self.fetches += 1
        try:
            response = await self._http.get(self.jwks_uri)
            response.raise_for_status()
            keys = _parse(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("fetching the provider's keys from %s failed: %s", self.jwks_uri, exc)
            if self._fetched_at is None:
                self._fetched_at = self._clock() - self._cache_s + self._min_refetch_s
            else:
                # Keep serving the known keys; try again after the minimum interval.
                self._fetched_at = max(
                    self._fetched_at, self._clock() - self._cache_s + self._min_refetch_s
                )
            return
        self._keys = keys
        self._fetched_at = self._clock()


def _parse(document: Any) -> dict[str, Any]:
    """kid -> public key for every usable signing key of a JWKS document."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document")
    keys: dict[str, Any] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str):
            continue
        try:
            keys[kid] = jwt.PyJWK(entry).key
        except jwt.PyJWTError:
            continue  # an algorithm we do not use (e.g. an encryption key)
    return keys
