"""A simulated phone for offline unlock: the citizen's app, as far as the protocol goes.

It holds its own P-256 key pair (the private half never leaves it), asks the API for an offline
token while online (``POST /v1/doors/{id}/tokens`` with its public key), and later presents the
token with a fresh proof straight to the gateway's local endpoint
(citykey_protocol/offline.py), with no API involved.
"""

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from citykey_protocol.claims import ALGORITHM
from citykey_protocol.offline import (
    OFFLINE_UNLOCK_PATH,
    PROOF_TYPE,
    b64url_encode,
    jwk_thumbprint,
    token_hash,
)


@dataclass(frozen=True, slots=True)
class HeldToken:
    """An offline token as the API issued it."""

    token: str
    jti: str
    door_id: str
    gateway_id: str
    expires_at: str


@dataclass(frozen=True, slots=True)
class GatewayAnswer:
    """What the gateway's local endpoint said."""

    status: int
    body: dict[str, Any]

    @property
    def code(self) -> str | None:
        """The refusal code, if refused."""
        error = self.body.get("error")
        return error.get("code") if isinstance(error, dict) else None


class SimulatedPhone:
    """The app side of offline unlock."""

    def __init__(
        self,
        *,
        key: ec.EllipticCurvePrivateKey | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = key or ec.generate_private_key(ec.SECP256R1())
        self._clock = clock
        self.tokens: dict[str, HeldToken] = {}
        """Door id -> the latest token held for it."""

    @property
    def public_jwk(self) -> dict[str, str]:
        """The public key as a JWK (what the API and the proof header get)."""
        numbers = self._key.public_key().public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": b64url_encode(numbers.x.to_bytes(32, "big")),
            "y": b64url_encode(numbers.y.to_bytes(32, "big")),
        }

    @property
    def thumbprint(self) -> str:
        return jwk_thumbprint(self.public_jwk)

    async def fetch_token(
        self, client: httpx.AsyncClient, door_id: str, headers: dict[str, str]
    ) -> HeldToken:
        """Ask the API (``client``, signed in with ``headers``) for an offline token; raise
        httpx.HTTPStatusError when refused."""
        response = await client.post(
            f"/v1/doors/{door_id}/tokens", json={"public_key": self.public_jwk}, headers=headers
        )
        response.raise_for_status()
        body = response.json()
        held = HeldToken(
            token=body["token"],
            jti=body["jti"],
            door_id=body["door_id"],
            gateway_id=body["gateway_id"],
            expires_at=body["expires_at"],
        )
        self.tokens[door_id] = held
        return held

    def proof(
        self, token: str, door_id: str, *, jti: str | None = None, iat: float | None = None
    ) -> str:
        """A proof for one attempt: signed by this phone's key, bound to ``token``."""
        claims = {
            "jti": jti or secrets.token_hex(16),
            "iat": int(self._clock() if iat is None else iat),
            "ath": token_hash(token),
            "door": door_id,
        }
        headers = {"typ": PROOF_TYPE, "jwk": self.public_jwk}
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers=headers)

    async def present(
        self,
        client: httpx.AsyncClient,
        gateway_url: str,
        token: str,
        door_id: str,
        *,
        proof: str | None = None,
    ) -> GatewayAnswer:
        """Send ``token`` and a proof (a fresh one unless given) to the gateway's local
        endpoint at ``gateway_url``."""
        body = {"token": token, "proof": proof or self.proof(token, door_id)}
        response = await client.post(f"{gateway_url}{OFFLINE_UNLOCK_PATH}", json=body)
        return GatewayAnswer(response.status_code, response.json())

    async def open_offline(
        self, client: httpx.AsyncClient, gateway_url: str, door_id: str
    ) -> GatewayAnswer:
        """Open ``door_id`` with the token held for it, through the gateway directly."""
        held = self.tokens[door_id]
        return await self.present(client, gateway_url, held.token, door_id)
