"""Booking client secrets: generated once, shown once, stored as an scrypt hash.

Format of a stored hash: ``scrypt$<n>$<r>$<p>$<salt>$<hash>`` (salt and hash base64url without
padding), so the cost parameters can be raised later without breaking existing secrets.
"""

import base64
import functools
import hashlib
import hmac
import secrets

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_DKLEN = 32
_MAX_N = 2**20
"""Refuse absurd parameters from a tampered row instead of burning memory on them."""
SECRET_PREFIX = "cks_"
"""Makes leaked secrets recognizable to secret scanners."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(secret: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        secret.encode(), salt=salt, n=n, r=r, p=p, dklen=_DKLEN, maxmem=256 * r * n + 2**20
    )


def new_client_secret() -> str:
    """A fresh secret with 256 bits of randomness."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """The storable scrypt hash of ``secret`` with a random salt."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(secret, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_secret(secret: str, stored: str) -> bool:
    """True when ``secret`` matches ``stored``; False for a wrong secret or a bad hash."""
    try:
        scheme, n_text, r_text, p_text, salt_text, digest_text = stored.split("$")
        n, r, p = int(n_text), int(r_text), int(p_text)
        salt, expected = _unb64(salt_text), _unb64(digest_text)
    except ValueError:
        return False
    if scheme != "scrypt" or not (2 <= n <= _MAX_N) or not (1 <= r <= 32) or not (1 <= p <= 16):
        return False
    return hmac.compare_digest(_scrypt(secret, salt, n, r, p), expected)


@functools.cache
def dummy_hash() -> str:
    """Checked against when the client id is unknown, so an unknown id costs the same time as
    a wrong secret and response times do not reveal which client ids exist."""
    return hash_secret(new_client_secret())
