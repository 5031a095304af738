"""The key ring's lifecycle on disk: states, publish before sign, retire timing (fake clock)."""

import json
import stat
from pathlib import Path

import jwt
import pytest

from api.keys.keyring import (
    RETIRE_MARGIN_S,
    RING_FILE,
    KeyRing,
    KeyRingError,
    KeyState,
    activate,
    add_next,
    read_ring_file,
    retire,
)
from api.unlock.tokens import UnlockTokenMinter
from citykey_protocol.keyset import KEYSET_TOKEN_TYPE

ISSUER = "http://citykey.test"
LIFETIME_S = 30.0
T0 = 1_767_225_600.0


def _kids(ring: KeyRing) -> list[str]:
    return [key["kid"] for key in ring.jwks()["keys"]]


def _keyset(ring: KeyRing) -> tuple[dict[str, str], dict[str, object]]:
    token = ring.signed_keyset(ISSUER, now=T0)
    header = jwt.get_unverified_header(token)
    signer = next(k for k in ring.keys if k.kid == header["kid"])
    claims = jwt.decode(
        token,
        signer.private_key.public_key(),
        algorithms=["ES256"],
        issuer=ISSUER,
        options={"require": ["iss", "iat", "ver"]},
    )
    return header, claims


def test_a_new_ring_has_one_active_key_in_generation_1(tmp_path: Path) -> None:
    ring = KeyRing.initialize(tmp_path)
    assert ring.generation == 1
    assert _kids(ring) == [ring.active.kid]
    header, claims = _keyset(ring)
    assert header == {"alg": "ES256", "kid": ring.active.kid, "typ": KEYSET_TOKEN_TYPE}
    assert claims["ver"] == 1
    assert claims["keys"] == ring.jwks()["keys"]
    assert stat.S_IMODE((tmp_path / f"{ring.active.kid}.pem").stat().st_mode) == 0o600
    with pytest.raises(KeyRingError, match="already holds"):
        KeyRing.initialize(tmp_path)


def test_a_next_key_is_published_before_it_signs(tmp_path: Path) -> None:
    first = KeyRing.initialize(tmp_path).active.kid
    entry = add_next(tmp_path, now=T0)
    assert entry.state is KeyState.NEXT
    assert entry.published_generation == 2

    ring = KeyRing.load(tmp_path, generate=False)
    assert ring.generation == 2
    assert _kids(ring) == [first, entry.kid]  # published ...
    token = ring.sign({"x": 1}, "t")
    assert jwt.get_unverified_header(token)["kid"] == first  # ... but not signing
    header, claims = _keyset(ring)
    assert header["kid"] == first
    assert claims["ver"] == 2

    with pytest.raises(KeyRingError, match="already next"):
        add_next(tmp_path)


def test_activate_swaps_the_signer_and_keeps_the_old_key_published(tmp_path: Path) -> None:
    first = KeyRing.initialize(tmp_path).active.kid
    with pytest.raises(KeyRingError, match="no next key"):
        activate(tmp_path)
    second = add_next(tmp_path, now=T0).kid
    active, retiring = activate(tmp_path, now=T0 + 60)
    assert (active.kid, active.state) == (second, KeyState.ACTIVE)
    assert (retiring.kid, retiring.state) == (first, KeyState.RETIRING)
    assert retiring.retiring_since == T0 + 60
    assert retiring.retiring_generation == 3

    ring = KeyRing.load(tmp_path, generate=False)
    assert ring.generation == 3
    assert ring.active.kid == second
    assert sorted(_kids(ring)) == sorted([first, second])
    assert jwt.get_unverified_header(ring.sign({}, "t"))["kid"] == second
    # The retiring key vouches for the set: gateways that missed the set announcing the new
    # key still trust the old one, so they can catch up.
    header, claims = _keyset(ring)
    assert header["kid"] == first
    assert claims["ver"] == 3


def test_retire_waits_for_the_last_token_of_the_old_key(tmp_path: Path) -> None:
    first = KeyRing.initialize(tmp_path).active.kid
    add_next(tmp_path, now=T0)
    second, _ = activate(tmp_path, now=T0 + 10)
    due = T0 + 10 + LIFETIME_S + RETIRE_MARGIN_S

    assert retire(tmp_path, max_token_lifetime_s=LIFETIME_S, now=due - 0.5) == []
    assert read_ring_file(tmp_path).generation == 3  # unchanged: nothing was due

    retired = retire(tmp_path, max_token_lifetime_s=LIFETIME_S, now=due + 0.5)
    assert [(e.kid, e.state, e.retired_at) for e in retired] == [
        (first, KeyState.RETIRED, due + 0.5)
    ]
    assert not (tmp_path / f"{first}.pem").exists()  # a retired key can never sign again

    ring = KeyRing.load(tmp_path, generate=False)
    assert ring.generation == 4
    assert _kids(ring) == [second.kid]  # no longer published
    header, claims = _keyset(ring)
    assert header["kid"] == second.kid
    assert claims["ver"] == 4
    # History stays in the file.
    states = {e.kid: e.state for e in read_ring_file(tmp_path).entries}
    assert states == {first: KeyState.RETIRED, second.kid: KeyState.ACTIVE}


def test_two_rotations_before_retiring_sign_with_the_oldest_retiring_key(tmp_path: Path) -> None:
    first = KeyRing.initialize(tmp_path).active.kid
    add_next(tmp_path, now=T0)
    second, _ = activate(tmp_path, now=T0 + 1)
    add_next(tmp_path, now=T0 + 2)
    third, _ = activate(tmp_path, now=T0 + 3)
    ring = KeyRing.load(tmp_path, generate=False)
    assert ring.generation == 5
    assert ring.active.kid == third.kid
    assert sorted(_kids(ring)) == sorted([first, second.kid, third.kid])
    assert _keyset(ring)[0]["kid"] == first
    # Both old keys retire together once due; the ring is left with the active key only.
    retired = retire(tmp_path, max_token_lifetime_s=LIFETIME_S, now=T0 + 3 + 100)
    assert sorted(e.kid for e in retired) == sorted([first, second.kid])
    assert _kids(KeyRing.load(tmp_path, generate=False)) == [third.kid]


def test_every_holder_of_the_ring_signs_with_the_new_generation(tmp_path: Path) -> None:
    ring = KeyRing.initialize(tmp_path)
    minter = UnlockTokenMinter(ring, ISSUER, 30)
    first_token, _ = minter.mint(gateway_id="gw", door_id="d", subject="u", seconds=3)
    add_next(tmp_path)
    activate(tmp_path)
    ring.update(KeyRing.load(tmp_path, generate=False))
    token, _ = minter.mint(gateway_id="gw", door_id="d", subject="u", seconds=3)
    assert jwt.get_unverified_header(token)["kid"] == ring.active.kid
    assert jwt.get_unverified_header(first_token)["kid"] != ring.active.kid
    # The signed key set is made once per generation: republishing sends the same bytes.
    assert ring.signed_keyset(ISSUER) == ring.signed_keyset(ISSUER)


def test_a_ring_written_before_rotation_existed_loads_as_generation_1(tmp_path: Path) -> None:
    kid = KeyRing.initialize(tmp_path).active.kid
    (tmp_path / RING_FILE).write_text(json.dumps({"keys": [{"kid": kid, "state": "active"}]}))
    ring = KeyRing.load(tmp_path, generate=False)
    assert (ring.generation, ring.active.kid) == (1, kid)
    add_next(tmp_path)
    assert read_ring_file(tmp_path).generation == 2


@pytest.mark.parametrize(
    "document",
    [
        {"keys": [{"kid": "../etc/passwd", "state": "active"}]},
        {"keys": [{"kid": "k-1", "state": "sleeping"}]},
        {"generation": True, "keys": []},
        {"generation": 0, "keys": []},
        {"keys": "nope"},
    ],
)
def test_a_bad_ring_file_is_refused_with_a_clear_error(
    tmp_path: Path, document: dict[str, object]
) -> None:
    (tmp_path / RING_FILE).write_text(json.dumps(document))
    with pytest.raises(KeyRingError, match="unreadable"):
        KeyRing.load(tmp_path, generate=False)
