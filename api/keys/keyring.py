"""ES256 signing keys on disk, with lifecycle states, and the JWKS they publish.

Layout of the key directory: ``keyring.json`` lists the keys and their states; each private
key is ``<kid>.pem`` (mode 0600). States: ``next`` (published, not yet signing), ``active``
(signs), ``retiring`` (published until the last token it signed has expired), ``retired``.
"""

import base64
import json
import os
import secrets
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from citykey_protocol.claims import ALGORITHM

RING_FILE = "keyring.json"


class KeyState(StrEnum):
    NEXT = "next"
    ACTIVE = "active"
    RETIRING = "retiring"
    RETIRED = "retired"


PUBLISHED_STATES = frozenset({KeyState.NEXT, KeyState.ACTIVE, KeyState.RETIRING})


class KeyRingError(Exception):
    """The key ring is missing, unreadable or has no active key."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    state: KeyState
    private_key: ec.EllipticCurvePrivateKey

    def public_jwk(self) -> dict[str, str]:
        numbers = self.private_key.public_key().public_numbers()

        def b64(value: int) -> str:
            return base64.urlsafe_b64encode(value.to_bytes(32, "big")).rstrip(b"=").decode()

        return {
            "kty": "EC",
            "crv": "P-256",
            "x": b64(numbers.x),
            "y": b64(numbers.y),
            "kid": self.kid,
            "alg": ALGORITHM,
            "use": "sig",
        }


def generate_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Write a PEM private key readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)


def read_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise KeyRingError(f"{path} is not a P-256 private key")
    return key


class KeyRing:
    """The API's unlock-token keys. One key is active; published keys form the JWKS."""

    def __init__(self, keys: list[SigningKey]) -> None:
        active = [k for k in keys if k.state is KeyState.ACTIVE]
        if len(active) != 1:
            raise KeyRingError(f"key ring needs exactly one active key, has {len(active)}")
        self._keys = keys
        self._active = active[0]
        self._jwks = {"keys": [k.public_jwk() for k in keys if k.state in PUBLISHED_STATES]}
        # Built once: the JWT header never changes while this key is active.
        self._headers = {"kid": self._active.kid}

    @property
    def active(self) -> SigningKey:
        return self._active

    def jwks(self) -> dict[str, Any]:
        """The public keys gateways must trust now (next, active, retiring)."""
        return self._jwks

    def sign(self, claims: dict[str, Any], token_type: str) -> str:
        """A compact ES256 JWS of ``claims`` with ``kid`` and ``typ`` in the header."""
        return jwt.encode(
            claims,
            self._active.private_key,
            algorithm=ALGORITHM,
            headers={**self._headers, "typ": token_type},
        )

    @classmethod
    def load(cls, key_dir: Path, *, generate: bool) -> "KeyRing":
        """Read the ring from ``key_dir``; create a first key there when allowed."""
        ring_path = key_dir / RING_FILE
        if not ring_path.exists():
            if not generate:
                raise KeyRingError(f"no key ring in {key_dir}; create one with 'citykey keys init'")
            return cls.initialize(key_dir)
        try:
            entries = json.loads(ring_path.read_text())["keys"]
            keys = [
                SigningKey(
                    kid=entry["kid"],
                    state=KeyState(entry["state"]),
                    private_key=read_private_key(key_dir / f"{entry['kid']}.pem"),
                )
                for entry in entries
            ]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KeyRingError(f"key ring in {key_dir} is unreadable: {exc}") from exc
        return cls(keys)

    @classmethod
    def initialize(cls, key_dir: Path) -> "KeyRing":
        """Create a ring with one new active key."""
        if (key_dir / RING_FILE).exists():
            raise KeyRingError(f"{key_dir} already holds a key ring")
        kid = f"k-{secrets.token_hex(6)}"
        key = generate_private_key()
        write_private_key(key_dir / f"{kid}.pem", key)
        (key_dir / RING_FILE).write_text(
            json.dumps({"keys": [{"kid": kid, "state": KeyState.ACTIVE.value}]}, indent=2)
        )
        return cls([SigningKey(kid, KeyState.ACTIVE, key)])
