"""ES256 signing keys on disk, with lifecycle states, and the key sets they publish.

Layout of the key directory: ``keyring.json`` lists the keys, their states and the ring's
``generation``; each private key is ``<kid>.pem`` (mode 0600). States:

- ``next``: published (gateways learn it), never signs anything;
- ``active``: signs unlock tokens and mode messages; exactly one;
- ``retiring``: no longer signs tokens, still published until the last token it signed has
  expired; the oldest retiring key signs the key set (citykey_protocol/keyset.py says why);
- ``retired``: not published, its private key deleted; kept in the file as history.

Every change of the ring (``add_next``, ``activate``, ``retire``) bumps ``generation``, which is
the ``ver`` of the signed key set, and is written atomically (temporary file, fsync, rename)
under an exclusive lock, so a running API that re-reads the file (api/keys/watcher.py) sees the
old ring or the new one, never half of either. Only the operator's ``citykey keys`` commands
write the ring; API processes only read it.
"""

import base64
import contextlib
import fcntl
import json
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from citykey_protocol.claims import ALGORITHM
from citykey_protocol.keyset import KEYSET_TOKEN_TYPE, KeySetClaims, claims_to_dict

RING_FILE = "keyring.json"
LOCK_FILE = ".keyring.lock"
RING_FORMAT = 2

RETIRE_MARGIN_S = 10.0
"""Added to the token lifetime before a retiring key may retire: the gateways' clock leeway
(5 s) plus the time a running API takes to notice a ring change (api/keys/watcher.py checks
every second), with room to spare. Until it notices, an instance still signs with the old key."""


class KeyState(StrEnum):
    NEXT = "next"
    ACTIVE = "active"
    RETIRING = "retiring"
    RETIRED = "retired"


PUBLISHED_STATES = frozenset({KeyState.NEXT, KeyState.ACTIVE, KeyState.RETIRING})


class KeyRingError(Exception):
    """The key ring is missing, unreadable, has no active key, or refuses a lifecycle step."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    state: KeyState
    private_key: ec.EllipticCurvePrivateKey
    retiring_since: float | None = None
    """For a retiring key: when it stopped signing tokens (Unix seconds)."""

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
    """Write a PEM private key readable by the owner only (durably: it must exist on disk
    before any ring file names it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())


def read_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise KeyRingError(f"{path} is not a P-256 private key")
    return key


# ---------------------------------------------------------------------------------------------
# keyring.json


def _iso(value: float | None) -> str | None:
    return None if value is None else datetime.fromtimestamp(value, UTC).isoformat()


def _unix(value: Any) -> float | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"timestamp must be an ISO 8601 string, got {value!r}")
    return datetime.fromisoformat(value).timestamp()


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """One key of ``keyring.json``: its state and when it entered each state."""

    kid: str
    state: KeyState
    created_at: float | None = None
    published_generation: int | None = None
    """Generation of the ring when the key was first published (as next)."""
    activated_at: float | None = None
    retiring_since: float | None = None
    retiring_generation: int | None = None
    """Generation of the ring when the key became retiring (its successor became active)."""
    retired_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"kid": self.kid, "state": self.state.value}
        for name in ("created_at", "activated_at", "retiring_since", "retired_at"):
            value = getattr(self, name)
            if value is not None:
                document[name] = _iso(value)
        for name in ("published_generation", "retiring_generation"):
            value = getattr(self, name)
            if value is not None:
                document[name] = value
        return document

    @classmethod
    def from_json(cls, document: Any) -> "KeyEntry":
        if not isinstance(document, dict):
            raise ValueError("a key entry is not an object")
        kid = document["kid"]
        if not isinstance(kid, str) or not kid or "/" in kid or kid.startswith("."):
            raise ValueError(f"bad kid {kid!r}")
        return cls(
            kid=kid,
            state=KeyState(document["state"]),
            created_at=_unix(document.get("created_at")),
            published_generation=_optional_int(document.get("published_generation")),
            activated_at=_unix(document.get("activated_at")),
            retiring_since=_unix(document.get("retiring_since")),
            retiring_generation=_optional_int(document.get("retiring_generation")),
            retired_at=_unix(document.get("retired_at")),
        )

    def retire_after(self, max_token_lifetime_s: float, margin_s: float = RETIRE_MARGIN_S) -> float:
        """The earliest Unix time this retiring key may retire: when the last token it can
        have signed has expired at every gateway."""
        since = self.retiring_since if self.retiring_since is not None else 0.0
        return since + max_token_lifetime_s + margin_s


def _optional_int(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class RingFile:
    """The contents of ``keyring.json``."""

    generation: int
    entries: tuple[KeyEntry, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": RING_FORMAT,
            "generation": self.generation,
            "keys": [entry.to_json() for entry in self.entries],
        }

    @classmethod
    def from_json(cls, document: Any) -> "RingFile":
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError("keyring.json has no 'keys' list")
        # Rings written before rotation existed have no generation: they are generation 1.
        generation = _optional_int(document.get("generation", 1))
        if generation is None:
            raise ValueError("generation must be an integer")
        if generation < 1:
            raise ValueError("generation must be at least 1")
        entries = tuple(KeyEntry.from_json(entry) for entry in document["keys"])
        if len({entry.kid for entry in entries}) != len(entries):
            raise ValueError("a kid appears twice")
        return cls(generation, entries)

    def in_state(self, state: KeyState) -> list[KeyEntry]:
        return [entry for entry in self.entries if entry.state is state]

    def changed(self, entries: list[KeyEntry]) -> "RingFile":
        """The next generation of the ring, with ``entries``."""
        return RingFile(self.generation + 1, tuple(entries))


def read_ring_file(key_dir: Path) -> RingFile:
    """Parse ``keyring.json``; raise KeyRingError when it is missing or unreadable."""
    path = key_dir / RING_FILE
    try:
        return RingFile.from_json(json.loads(path.read_text()))
    except FileNotFoundError as exc:
        raise KeyRingError(
            f"no key ring in {key_dir}; create one with 'citykey keys init'"
        ) from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KeyRingError(f"key ring in {key_dir} is unreadable: {exc}") from exc


def write_ring_file(key_dir: Path, ring: RingFile) -> None:
    """Replace ``keyring.json`` atomically and durably: a reader sees the old file or the new
    one, and after a crash the file is one of the two."""
    key_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".keyring-", suffix=".tmp", dir=key_dir)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(ring.to_json(), handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, key_dir / RING_FILE)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    directory = os.open(key_dir, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself must survive a crash too
    finally:
        os.close(directory)


@contextlib.contextmanager
def ring_lock(key_dir: Path) -> Iterator[None]:
    """Exclusive lock for changing the ring: two operators' commands never interleave."""
    key_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _new_kid() -> str:
    return f"k-{secrets.token_hex(6)}"


# ---------------------------------------------------------------------------------------------
# Lifecycle: the only writers of the ring


def add_next(key_dir: Path, *, now: float | None = None) -> KeyEntry:
    """Create a new key in state ``next``: published from now on, signing nothing yet.

    Refused while a next key exists (activate it first) so that a rotation has one clear
    successor."""
    now = time.time() if now is None else now
    with ring_lock(key_dir):
        ring = read_ring_file(key_dir)
        pending = ring.in_state(KeyState.NEXT)
        if pending:
            raise KeyRingError(f"key {pending[0].kid} is already next; activate it first")
        kid = _new_kid()
        write_private_key(key_dir / f"{kid}.pem", generate_private_key())
        entry = KeyEntry(
            kid=kid,
            state=KeyState.NEXT,
            created_at=now,
            published_generation=ring.generation + 1,
        )
        write_ring_file(key_dir, ring.changed([*ring.entries, entry]))
        return entry


def activate(key_dir: Path, *, now: float | None = None) -> tuple[KeyEntry, KeyEntry]:
    """Make the next key active and the active key retiring; return ``(active, retiring)``.

    Call it only once the gateways trust the next key (``citykey keys activate`` checks the
    fleet's acknowledgements): from the moment a running API notices, it signs with it."""
    now = time.time() if now is None else now
    with ring_lock(key_dir):
        ring = read_ring_file(key_dir)
        pending = ring.in_state(KeyState.NEXT)
        if not pending:
            raise KeyRingError("no next key to activate; add one with 'citykey keys add-next'")
        current = ring.in_state(KeyState.ACTIVE)
        if len(current) != 1:
            raise KeyRingError(f"key ring needs exactly one active key, has {len(current)}")
        generation = ring.generation + 1
        promoted = replace(pending[0], state=KeyState.ACTIVE, activated_at=now)
        demoted = replace(
            current[0],
            state=KeyState.RETIRING,
            retiring_since=now,
            retiring_generation=generation,
        )
        changes = {promoted.kid: promoted, demoted.kid: demoted}
        write_ring_file(key_dir, ring.changed([changes.get(e.kid, e) for e in ring.entries]))
        return promoted, demoted


def retire(
    key_dir: Path,
    *,
    max_token_lifetime_s: float,
    now: float | None = None,
    margin_s: float = RETIRE_MARGIN_S,
    only: set[str] | None = None,
) -> list[KeyEntry]:
    """Retire every retiring key (or those in ``only``) whose last token must have expired:
    ``retiring_since + max_token_lifetime_s + margin_s < now``. They stop being published and
    their private keys are deleted. Returns the keys retired (none: the ring is unchanged)."""
    now = time.time() if now is None else now
    with ring_lock(key_dir):
        ring = read_ring_file(key_dir)
        due = {
            entry.kid: replace(entry, state=KeyState.RETIRED, retired_at=now)
            for entry in ring.in_state(KeyState.RETIRING)
            if entry.retire_after(max_token_lifetime_s, margin_s) < now
            and (only is None or entry.kid in only)
        }
        if not due:
            return []
        write_ring_file(key_dir, ring.changed([due.get(e.kid, e) for e in ring.entries]))
        for kid in due:
            # A retired key never signs again; a private key that no longer exists cannot leak.
            with contextlib.suppress(FileNotFoundError):
                (key_dir / f"{kid}.pem").unlink()
        return list(due.values())


# ---------------------------------------------------------------------------------------------
# The ring a running API signs with


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """One generation of the ring, immutable: signing reads it once, so a reload can never
    pair one key's kid with another key's signature."""

    generation: int
    keys: tuple[SigningKey, ...]
    active: SigningKey
    keyset_signer: SigningKey
    jwks: dict[str, Any]
    headers: dict[str, str]
    signed_keysets: dict[str, str] = field(default_factory=dict)
    """Issuer -> the signed key set of this generation, made on first use and then reused, so
    every publication of one generation is the same bytes."""


def _snapshot(keys: list[SigningKey], generation: int) -> _Snapshot:
    active = [k for k in keys if k.state is KeyState.ACTIVE]
    if len(active) != 1:
        raise KeyRingError(f"key ring needs exactly one active key, has {len(active)}")
    retiring = sorted(
        (k for k in keys if k.state is KeyState.RETIRING),
        key=lambda k: k.retiring_since if k.retiring_since is not None else 0.0,
    )
    published = [k for k in keys if k.state in PUBLISHED_STATES]
    return _Snapshot(
        generation=generation,
        keys=tuple(keys),
        active=active[0],
        keyset_signer=retiring[0] if retiring else active[0],
        jwks={"keys": [k.public_jwk() for k in published]},
        # Built once: the JWT header never changes while this key is active.
        headers={"kid": active[0].kid},
    )


class KeyRing:
    """The API's signing keys. One key is active; published keys form the JWKS.

    Every holder (the token minter, the mode publisher, the routers) keeps this one object;
    ``update`` swaps the generation inside it in one assignment, so a running API picks up a
    rotation without restarting and without anyone holding a stale ring.
    """

    def __init__(self, keys: list[SigningKey], generation: int = 1) -> None:
        self._snap = _snapshot(keys, generation)

    @property
    def active(self) -> SigningKey:
        return self._snap.active

    @property
    def generation(self) -> int:
        """The ring's generation: the ``ver`` of its signed key set."""
        return self._snap.generation

    @property
    def keys(self) -> tuple[SigningKey, ...]:
        """Every key this process holds a private key for (not the retired ones)."""
        return self._snap.keys

    @property
    def keyset_signer(self) -> SigningKey:
        return self._snap.keyset_signer

    def jwks(self) -> dict[str, Any]:
        """The public keys gateways must trust now (next, active, retiring)."""
        return self._snap.jwks

    def sign(self, claims: dict[str, Any], token_type: str) -> str:
        """A compact ES256 JWS of ``claims`` with ``kid`` and ``typ`` in the header."""
        snap = self._snap  # read once: key and kid from the same generation
        return jwt.encode(
            claims,
            snap.active.private_key,
            algorithm=ALGORITHM,
            headers={**snap.headers, "typ": token_type},
        )

    def signed_keyset(self, issuer: str, now: float | None = None) -> str:
        """The signed key set of this generation (citykey_protocol/keyset.py): the JWKS keys,
        ``ver`` = generation, signed by the oldest retiring key, else the active key."""
        snap = self._snap
        token = snap.signed_keysets.get(issuer)
        if token is None:
            claims = KeySetClaims(
                iss=issuer,
                iat=int(time.time() if now is None else now),
                ver=snap.generation,
                keys=snap.jwks["keys"],
            )
            token = jwt.encode(
                claims_to_dict(claims),
                snap.keyset_signer.private_key,
                algorithm=ALGORITHM,
                headers={"kid": snap.keyset_signer.kid, "typ": KEYSET_TOKEN_TYPE},
            )
            snap.signed_keysets[issuer] = token
        return token

    def update(self, other: "KeyRing") -> None:
        """Take ``other``'s keys and generation (one assignment: atomic for every reader)."""
        self._snap = other._snap

    @classmethod
    def load(cls, key_dir: Path, *, generate: bool) -> "KeyRing":
        """Read the ring from ``key_dir``; create a first key there when allowed."""
        if not (key_dir / RING_FILE).exists():
            if not generate:
                raise KeyRingError(f"no key ring in {key_dir}; create one with 'citykey keys init'")
            with contextlib.suppress(KeyRingError):  # created meanwhile by another process
                return cls.initialize(key_dir)
        ring = read_ring_file(key_dir)
        try:
            keys = [
                SigningKey(
                    kid=entry.kid,
                    state=entry.state,
                    private_key=read_private_key(key_dir / f"{entry.kid}.pem"),
                    retiring_since=entry.retiring_since,
                )
                for entry in ring.entries
                if entry.state is not KeyState.RETIRED
            ]
        except (OSError, ValueError) as exc:
            raise KeyRingError(f"key ring in {key_dir} is unreadable: {exc}") from exc
        return cls(keys, ring.generation)

    @classmethod
    def initialize(cls, key_dir: Path) -> "KeyRing":
        """Create a ring with one new active key (generation 1)."""
        with ring_lock(key_dir):
            if (key_dir / RING_FILE).exists():
                raise KeyRingError(f"{key_dir} already holds a key ring")
            kid = _new_kid()
            key = generate_private_key()
            write_private_key(key_dir / f"{kid}.pem", key)
            now = time.time()
            entry = KeyEntry(
                kid, KeyState.ACTIVE, created_at=now, published_generation=1, activated_at=now
            )
            write_ring_file(key_dir, RingFile(1, (entry,)))
        return cls([SigningKey(kid, KeyState.ACTIVE, key)])
