"""The gateway's set of trusted public keys, cached on disk so the gateway starts and keeps
opening doors while the API is unreachable.

Where the keys come from: on the very first boot (no cache yet) from the API's JWKS over HTTPS
(trust on first use); from then on only from signed key sets that a key already trusted vouches
for (lock_gateway/keyset.py), each of which replaces the cache. A restart trusts the cache.
"""

import base64
import contextlib
import json
import logging
import os
import tempfile
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

log = logging.getLogger(__name__)


class KeySetError(Exception):
    """A key set could not be loaded or parsed."""


def _b64url_int(value: Any) -> int:
    if not isinstance(value, str):
        raise KeySetError("EC coordinate is not a string")
    raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    if len(raw) != 32:
        raise KeySetError("EC coordinate is not 32 bytes")
    return int.from_bytes(raw, "big")


def parse_jwks(document: Mapping[str, Any]) -> dict[str, ec.EllipticCurvePublicKey]:
    """Keep the P-256 signing keys of a JWKS document, by kid; ignore other key types."""
    keys: dict[str, ec.EllipticCurvePublicKey] = {}
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise KeySetError("JWKS has no 'keys' list")
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        if entry.get("kty") != "EC" or entry.get("crv") != "P-256":
            continue
        if entry.get("use", "sig") != "sig" or entry.get("alg", "ES256") != "ES256":
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid:
            continue
        try:
            numbers = ec.EllipticCurvePublicNumbers(
                _b64url_int(entry.get("x")), _b64url_int(entry.get("y")), ec.SECP256R1()
            )
            keys[kid] = numbers.public_key()
        except (ValueError, KeySetError) as exc:
            log.warning("skipping key %s: %s", kid, exc)
    return keys


class KeySet:
    """Trusted verification keys by kid, and the signed key set they came from.

    Replaced whole, never edited in place. One KeySet is shared by the token validator, the
    mode verifier and the key-set controller (and by every gateway of a simulated fleet).
    ``replace`` rebinds the dict in one assignment and the validator looks a key up once per
    token (``get``) and keeps what it got, so a validation in progress uses the old set or the
    new one, never a mix; nothing awaits between the look-up and the signature check.
    """

    def __init__(
        self,
        keys: Mapping[str, ec.EllipticCurvePublicKey] | None = None,
        *,
        version: int = 0,
        token: str | None = None,
    ) -> None:
        self._keys: dict[str, ec.EllipticCurvePublicKey] = dict(keys or {})
        self.version = version
        """``ver`` of the signed key set these keys came from; 0: a plain JWKS (first boot)."""
        self.token = token
        """That signed key set (compact JWS), or None."""

    def get(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        return self._keys.get(kid)

    def kids(self) -> list[str]:
        return sorted(self._keys)

    def replace(
        self,
        keys: Mapping[str, ec.EllipticCurvePublicKey],
        *,
        version: int | None = None,
        token: str | None = None,
    ) -> None:
        self._keys = dict(keys)
        if version is not None:
            self.version = version
            self.token = token

    @classmethod
    def from_jwks(cls, document: Mapping[str, Any]) -> "KeySet":
        return cls(parse_jwks(document))


def load_cached_jwks(path: Path) -> dict[str, Any] | None:
    """The cached JWKS document, or None when there is none (or it is unreadable).

    A cache written after a signed key set was accepted also carries ``keyset_version`` and
    ``keyset`` (the JWS) beside ``keys``; see load_cached_keys."""
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.error("key cache %s unreadable: %s", path, exc)
        return None
    return document if isinstance(document, dict) else None


def load_cached_keys(path: Path) -> KeySet | None:
    """The cached keys with the version of the signed set they came from (0 when the cache is
    a plain JWKS); None when there is no usable cache."""
    document = load_cached_jwks(path)
    if document is None:
        return None
    try:
        keys = parse_jwks(document)
    except KeySetError as exc:
        log.error("key cache %s unusable: %s", path, exc)
        return None
    if not keys:
        return None
    version = document.get("keyset_version", 0)
    token = document.get("keyset")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        version = 0
    return KeySet(keys, version=version, token=token if isinstance(token, str) else None)


def save_cached_jwks(path: Path, document: Mapping[str, Any]) -> None:
    """Write the JWKS atomically and durably (unique temporary file, fsync, rename), so a
    crash never leaves half a file and two writers never share a temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(document, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


def fetch_jwks(url: str, timeout: float = 5.0) -> dict[str, Any]:
    """GET the JWKS document from the API; raise KeySetError on any failure."""
    if not url.startswith(("http://", "https://")):
        raise KeySetError(f"JWKS URL must be http(s): {url!r}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (scheme checked)
            document = json.loads(response.read(1_000_000))
    except (OSError, ValueError) as exc:
        raise KeySetError(f"could not fetch {url}: {exc}") from exc
    if not isinstance(document, dict):
        raise KeySetError("JWKS is not a JSON object")
    return document


def load_trusted_keys(jwks_url: str | None, key_cache: Path | None) -> KeySet:
    """The keys a starting gateway trusts: its cache when it has one (what it accepted
    before, however the API answers now); on the first boot the API's JWKS, fetched and then
    cached (trust on first use: use an https URL); else an empty set."""
    if key_cache is not None:
        cached = load_cached_keys(key_cache)
        if cached is not None:
            log.info("trusting cached keys %s (key set v%d)", cached.kids(), cached.version)
            return cached
    if jwks_url:
        if not jwks_url.startswith("https://"):
            log.warning("first boot trusts keys fetched over plain http: %s", jwks_url)
        try:
            document = fetch_jwks(jwks_url)
        except KeySetError as exc:
            log.warning("no key cache and the JWKS fetch failed: %s", exc)
            return KeySet()
        keys = KeySet.from_jwks(document)
        if key_cache is not None and keys.kids():
            save_cached_jwks(key_cache, {"keys": document.get("keys", [])})
        return keys
    return KeySet()
