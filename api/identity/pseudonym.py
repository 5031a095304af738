"""Pseudonymous user ids: a keyed hash of the provider's national identity claim.

The national identity number (ID-porten's ``pid``) identifies a person across every service in
the country; citykey needs only to recognise the same person again. So the user id is

    "u_" + base32(HMAC-SHA256(pseudonym key, issuer + "\\n" + pid)[:20]), lower case, no padding

and the pid itself is never stored, logged or put in a token or session. Without the key the id
cannot be linked back to a person (unlike a plain hash, which anyone could compute for all
~10^10 possible 11-digit numbers). Including the issuer keeps two providers' namespaces apart.

Length: 20 bytes = 160 bits -> 32 base32 characters; the id is 34 characters (the column holds
64). Collisions: for n users the chance of any collision is about n^2 / 2^161; for 10^7 users
that is ~3e-35, i.e. never.

Changing the pseudonym key gives every person a new id: every existing user is orphaned
(docs/operations.md). Back the key up with the database.
"""

import base64
import hashlib
import hmac
import secrets
from pathlib import Path

from api.settings import Settings

PREFIX = "u_"
DIGEST_BYTES = 20
KEY_FILE = "pseudonym.key"
MIN_KEY_CHARS = 32


def pseudonymous_user_id(key: bytes, issuer: str, pid: str) -> str:
    """The citykey user id of the person ``pid`` at ``issuer``."""
    digest = hmac.new(key, f"{issuer}\n{pid}".encode(), hashlib.sha256).digest()
    return PREFIX + base64.b32encode(digest[:DIGEST_BYTES]).decode().rstrip("=").lower()


def pseudonym_key(settings: Settings) -> bytes:
    """The configured key, or (dev) a random one kept in the key directory."""
    configured = settings.pseudonym_key.get_secret_value()
    if configured:
        return configured.encode()
    if settings.mode == "production":  # the settings validator refuses this already
        raise RuntimeError("CITYKEY_PSEUDONYM_KEY is required in production")
    path: Path = settings.key_dir / KEY_FILE
    if path.exists():
        return path.read_text().strip().encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    path.write_text(key)
    path.chmod(0o600)
    return key.encode()
