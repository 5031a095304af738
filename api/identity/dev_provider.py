"""The development identity provider: bearer tokens for seeded users, in dev mode only."""

import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from api.identity.verifier import BearerVerifier, StaticKeySource
from api.keys.keyring import generate_private_key, read_private_key, write_private_key

DEV_KEY_FILE = "dev-idp.pem"
DEV_KID = "dev-idp"
TOKEN_LIFETIME_S = 12 * 3600


class DevIdentityProvider:
    """Signs identity tokens with a local key; its verifier uses the same key's public half."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey, issuer: str, audience: str):
        self._key = private_key
        self.issuer = issuer
        self.audience = audience

    @classmethod
    def load(cls, key_dir: Path, api_issuer: str, audience: str) -> "DevIdentityProvider":
        path = key_dir / DEV_KEY_FILE
        if path.exists():
            key = read_private_key(path)
        else:
            key = generate_private_key()
            write_private_key(path, key)
        return cls(key, f"{api_issuer.rstrip('/')}/dev-idp", audience)

    def issue(self, user_id: str, *, lifetime_s: int = TOKEN_LIFETIME_S) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": user_id,
            "iat": now,
            "exp": now + lifetime_s,
        }
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": DEV_KID})

    def verifier(self) -> BearerVerifier:
        return BearerVerifier(
            issuer=self.issuer,
            audience=self.audience,
            keys=StaticKeySource({DEV_KID: self._key.public_key()}),
        )
