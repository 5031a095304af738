"""The gateway's set of trusted public keys (from the API's JWKS), cached on disk so the
gateway starts and keeps opening doors while the API is unreachable."""

import base64
import json
import logging
import os
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
    """Trusted verification keys by kid. Replaced whole, never edited in place."""

    def __init__(self, keys: Mapping[str, ec.EllipticCurvePublicKey] | None = None) -> None:
        self._keys: dict[str, ec.EllipticCurvePublicKey] = dict(keys or {})

    def get(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        return self._keys.get(kid)

    def kids(self) -> list[str]:
        return sorted(self._keys)

    def replace(self, keys: Mapping[str, ec.EllipticCurvePublicKey]) -> None:
        self._keys = dict(keys)

    @classmethod
    def from_jwks(cls, document: Mapping[str, Any]) -> "KeySet":
        return cls(parse_jwks(document))


def load_cached_jwks(path: Path) -> dict[str, Any] | None:
    """The cached JWKS document, or None when there is none (or it is unreadable)."""
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.error("key cache %s unreadable: %s", path, exc)
        return None
    return document if isinstance(document, dict) else None


def save_cached_jwks(path: Path, document: Mapping[str, Any]) -> None:
    """Write the JWKS atomically (write + rename), so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(document))
    os.replace(tmp, path)


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
