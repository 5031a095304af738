"""Minting unlock tokens (the claims are defined in citykey_protocol.claims)."""

import secrets
import time
from collections.abc import Callable

from api.keys.keyring import KeyRing
from citykey_protocol.claims import UNLOCK_TOKEN_TYPE


class UnlockTokenMinter:
    """Signs short-lived, single-use unlock tokens bound to one gateway and one door."""

    def __init__(
        self,
        keyring: KeyRing,
        issuer: str,
        lifetime_s: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keyring = keyring
        self._issuer = issuer
        self._lifetime_s = lifetime_s
        self._clock = clock

    def mint(self, *, gateway_id: str, door_id: str, subject: str, seconds: int) -> tuple[str, str]:
        """Return ``(token, jti)``."""
        now = int(self._clock())
        jti = secrets.token_hex(16)
        claims = {
            "iss": self._issuer,
            "aud": gateway_id,
            "sub": subject,
            "door": door_id,
            "dur": seconds,
            "jti": jti,
            "iat": now,
            "nbf": now,
            "exp": now + self._lifetime_s,
        }
        return self._keyring.sign(claims, UNLOCK_TOKEN_TYPE), jti
