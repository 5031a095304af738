"""Broker credentials of gateways: a random password, shown once, stored only as a salted
scrypt hash ``scrypt$n$r$p$salt$hash`` (salt and hash in unpadded URL-safe base64).

scrypt because it is in the standard library and memory-hard; with n=2**14, r=8 one hash
takes about 16 MiB and some tens of milliseconds, cheap for an operator rotating a credential
and expensive for anyone guessing. Callers on the event loop run it in a thread.
"""

import base64
import binascii
import hashlib
import hmac
import secrets

SCHEME = "scrypt"
N, R, P = 2**14, 8, 1
SALT_BYTES = 16
KEY_BYTES = 32
MAX_MEMORY = 64 * 1024 * 1024
"""Largest scrypt working set accepted when verifying, so a stored hash with absurd
parameters cannot exhaust memory."""


def new_password() -> str:
    """A fresh password: 24 random bytes, URL-safe (usable inside an mqtt:// URL as is)."""
    return secrets.token_urlsafe(24)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _memory(n: int, r: int) -> int:
    return 128 * r * (n + 2)


def hash_password(password: str, *, n: int = N, r: int = R, p: int = P) -> str:
    """The encoded hash of ``password`` with a new random salt."""
    salt = secrets.token_bytes(SALT_BYTES)
    key = hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=MAX_MEMORY, dklen=KEY_BYTES
    )
    return f"{SCHEME}${n}${r}${p}${_b64(salt)}${_b64(key)}"


def verify(password: str, encoded: str) -> bool:
    """True when ``password`` matches ``encoded``; False for a mismatch or a malformed or
    out-of-bounds hash (never raises)."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        return False
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, expected = _unb64(parts[4]), _unb64(parts[5])
    except (ValueError, binascii.Error):
        return False
    if (
        n < 2
        or n & (n - 1)
        or not 1 <= r <= 64
        or not 1 <= p <= 16
        or _memory(n, r) > MAX_MEMORY
        or not salt
        or not expected
    ):
        return False
    try:
        key = hashlib.scrypt(
            password.encode(), salt=salt, n=n, r=r, p=p, maxmem=MAX_MEMORY, dklen=len(expected)
        )
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(key, expected)
