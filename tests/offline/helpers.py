"""Helpers for the offline unlock tests: a key ring, token minting and a clock the test
controls. The gateway-side checks run with the real verifier; only the clock is fake."""

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api.keys.keyring import KeyRing
from citykey_protocol.offline import (
    OFFLINE_TOKEN_TYPE,
    REVOCATIONS_TYPE,
    Confirmation,
    OfflineClaims,
    RevocationClaims,
    claims_to_dict,
)

ISSUER = "http://citykey.test"
T0 = 1_767_225_600.0
"""2026-01-01T00:00:00Z: the fake clock's start."""


@dataclass
class FakeClock:
    now: float = T0

    def __call__(self) -> float:
        return self.now


def ring(tmp_path: Path) -> KeyRing:
    return KeyRing.load(tmp_path / "keys", generate=True)


def offline_token(
    keyring: KeyRing,
    *,
    gateway_id: str,
    door: str,
    jkt: str,
    iat: float,
    lifetime: int = 900,
    issuer: str = ISSUER,
    typ: str = OFFLINE_TOKEN_TYPE,
    jti: str | None = None,
    **overrides: Any,
) -> tuple[str, str]:
    """A signed offline token and its jti, like the API's (fields overridable)."""
    token_id = jti or secrets.token_hex(16)
    claims = claims_to_dict(
        OfflineClaims(
            iss=issuer,
            aud=gateway_id,
            sub="u-test",
            door=door,
            dur=5,
            jti=token_id,
            iat=int(iat),
            nbf=int(iat),
            exp=int(iat) + lifetime,
            cnf=Confirmation(jkt=jkt),
        )
    )
    claims.update(overrides)
    return keyring.sign(claims, typ), token_id


def revocation_list(
    keyring: KeyRing, *, gateway_id: str, version: int, jtis: list[str], issuer: str = ISSUER
) -> bytes:
    claims = RevocationClaims(
        iss=issuer, aud=gateway_id, iat=int(T0), ver=version, jtis=tuple(jtis)
    )
    return keyring.sign(claims_to_dict(claims), REVOCATIONS_TYPE).encode("ascii")
