"""The gateway's side of key sets, without a broker: what it accepts, what it refuses and
reports, what it remembers across a restart, and its clock offset estimate."""

import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from api.keys.keyring import KeyRing, SigningKey, activate, add_next, retire
from citykey_protocol.keyset import (
    KEYSET_PATH,
    KEYSET_TOKEN_TYPE,
    MAX_KEYSET_BYTES,
    KeySetRejection,
    keyset_url_for,
)
from citykey_protocol.modes import MODE_TOKEN_TYPE
from lock_gateway.clock_offset import ClockOffsetEstimator
from lock_gateway.keys import KeySet, load_cached_keys, load_trusted_keys
from lock_gateway.keyset import KeySetController, KeySetRejectedError

ISSUER = "http://citykey.test"
UNREACHABLE = "http://127.0.0.1:1/.well-known/jwks.json"


def _ring(key_dir: Path) -> KeyRing:
    return KeyRing.load(key_dir, generate=False)


def _controller(ring: KeyRing, cache: Path | None = None) -> KeySetController:
    return KeySetController(keys=KeySet.from_jwks(ring.jwks()), issuer=ISSUER, cache_path=cache)


def _sign(
    claims: dict[str, Any],
    key: ec.EllipticCurvePrivateKey,
    kid: str,
    typ: str = KEYSET_TOKEN_TYPE,
    **extra_header: str,
) -> bytes:
    headers = {"kid": kid, "typ": typ, **extra_header}
    return jwt.encode(claims, key, algorithm="ES256", headers=headers).encode()


def _hs256(claims: dict[str, Any], kid: str) -> bytes:
    headers = {"kid": kid, "typ": KEYSET_TOKEN_TYPE}
    return jwt.encode(
        claims, "a-shared-secret-of-thirty-two-bytes!", algorithm="HS256", headers=headers
    ).encode()


def _claims(ring: KeyRing, **changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "iat": int(time.time()),
        "ver": ring.generation + 1,
        "keys": ring.jwks()["keys"],
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    KeyRing.initialize(tmp_path / "ring")
    return tmp_path / "ring"


def test_a_key_set_from_a_trusted_key_replaces_the_keys_once(key_dir: Path) -> None:
    ring = _ring(key_dir)
    controller = _controller(ring)
    assert controller.receive(ring.signed_keyset(ISSUER).encode()) is True
    assert controller.version == 1
    # The same generation again (the retained copy, another API instance's signature of it,
    # the HTTP poll): quietly ignored.
    assert controller.receive(ring.signed_keyset(ISSUER).encode()) is False
    again = _sign(_claims(ring, ver=1), ring.active.private_key, ring.active.kid)
    assert controller.receive(again) is False
    assert controller.receive(b"") is False  # a cleared retained message changes nothing

    add_next(key_dir)
    announced = _ring(key_dir)
    assert controller.receive(announced.signed_keyset(ISSUER).encode()) is True
    assert controller.version == 2
    assert controller.keys.kids() == sorted(k["kid"] for k in announced.jwks()["keys"])


def test_a_gateway_that_missed_a_set_catches_up_through_the_retiring_key(key_dir: Path) -> None:
    first = _ring(key_dir)
    stale = _controller(first)  # holds generation 1: missed the set announcing the next key
    stale.receive(first.signed_keyset(ISSUER).encode())
    add_next(key_dir)
    activate(key_dir)
    rotated = _ring(key_dir)
    assert stale.receive(rotated.signed_keyset(ISSUER).encode()) is True
    assert stale.keys.get(rotated.active.kid) is not None
    # After the old key retires, the set is signed by the new active key, which it now trusts.
    retire(key_dir, max_token_lifetime_s=30, now=time.time() + 60)
    final = _ring(key_dir)
    assert stale.receive(final.signed_keyset(ISSUER).encode()) is True
    assert stale.keys.kids() == [final.active.kid]
    assert stale.keys.get(first.active.kid) is None  # the retired key is refused from now on


def test_a_gateway_that_missed_a_whole_rotation_refuses_and_reports(key_dir: Path) -> None:
    first = _ring(key_dir)
    stranded = _controller(first)
    add_next(key_dir)
    activate(key_dir)
    retire(key_dir, max_token_lifetime_s=30, now=time.time() + 60)
    with pytest.raises(KeySetRejectedError) as caught:
        stranded.receive(_ring(key_dir).signed_keyset(ISSUER).encode())
    assert caught.value.reason is KeySetRejection.UNKNOWN_KEY
    assert stranded.keys.kids() == [first.active.kid]


def _refusals(ring: KeyRing, rogue: KeyRing) -> list[tuple[bytes, KeySetRejection]]:
    key, kid = ring.active.private_key, ring.active.kid
    impostor = rogue.active.private_key
    rsa_only = [{"kty": "RSA", "kid": "r", "n": "AQAB", "e": "AQAB"}]
    return [
        (rogue.signed_keyset(ISSUER).encode(), KeySetRejection.UNKNOWN_KEY),
        (_sign(_claims(ring), impostor, kid), KeySetRejection.BAD_SIGNATURE),
        (_sign(_claims(ring, iss="https://evil.example"), key, kid), KeySetRejection.BAD_ISSUER),
        (_sign(_claims(ring), key, kid, MODE_TOKEN_TYPE), KeySetRejection.BAD_TYPE),
        (
            _sign(_claims(ring), key, kid, jku="https://evil.example/jwks"),
            KeySetRejection.BAD_HEADER,
        ),
        (_hs256(_claims(ring), kid), KeySetRejection.BAD_HEADER),
        (b"not a token", KeySetRejection.MALFORMED),
        (b"\xff\xfe", KeySetRejection.MALFORMED),
        (b"e" * (MAX_KEYSET_BYTES + 1), KeySetRejection.OVERSIZED),
        (_sign(_claims(ring, ver=None), key, kid), KeySetRejection.BAD_CLAIMS),
        (_sign(_claims(ring, ver=True), key, kid), KeySetRejection.BAD_CLAIMS),
        (_sign(_claims(ring, ver=0), key, kid), KeySetRejection.BAD_CLAIMS),
        (_sign(_claims(ring, keys=[]), key, kid), KeySetRejection.BAD_CLAIMS),
        (_sign(_claims(ring, keys=rsa_only), key, kid), KeySetRejection.NO_KEYS),
        (_sign(_claims(ring, ver=0 + 1, iat=-5), key, kid), KeySetRejection.BAD_CLAIMS),
    ]


def test_every_bad_key_set_is_refused_with_its_reason_and_changes_nothing(
    key_dir: Path, tmp_path: Path
) -> None:
    ring = _ring(key_dir)
    rogue = KeyRing.initialize(tmp_path / "rogue")
    cases = _refusals(ring, rogue)
    for payload, reason in cases:
        controller = _controller(ring)
        before = controller.keys.kids()
        with pytest.raises(KeySetRejectedError) as caught:
            controller.receive(payload)
        assert caught.value.reason is reason, (reason, caught.value)
        assert (controller.keys.kids(), controller.version) == (before, 0)
    print(f"\nkey sets refused, one per reason: {len(cases)}")


def test_an_older_set_is_refused_as_stale(key_dir: Path) -> None:
    old = _ring(key_dir)
    controller = _controller(old)
    add_next(key_dir)
    controller.receive(_ring(key_dir).signed_keyset(ISSUER).encode())
    with pytest.raises(KeySetRejectedError) as caught:
        controller.receive(old.signed_keyset(ISSUER).encode())
    assert caught.value.reason is KeySetRejection.STALE_VERSION
    assert controller.version == 2


def test_refusals_are_reported_once_per_payload_and_rate_limited(
    key_dir: Path, tmp_path: Path
) -> None:
    ring = _ring(key_dir)
    now = [0.0]
    controller = KeySetController(
        keys=KeySet.from_jwks(ring.jwks()), issuer=ISSUER, cache_path=None, clock=lambda: now[0]
    )
    rogue = KeyRing.initialize(tmp_path / "rogue")

    def reported(payload: bytes) -> bool:
        with pytest.raises(KeySetRejectedError) as caught:
            controller.receive(payload)
        return caught.value.report

    planted = [
        _sign(_claims(ring, ver=n), rogue.active.private_key, rogue.active.kid)
        for n in range(2, 12)
    ]
    assert reported(planted[0]) is True
    assert reported(planted[0]) is False  # the same payload again: once is enough
    flags = [reported(p) for p in planted[1:]]
    assert flags == [True] * 4 + [False] * 5  # a burst of 5, then at most one a minute
    now[0] += 61
    assert reported(_sign(_claims(ring, ver=99), rogue.active.private_key, "x")) is True


def test_the_accepted_set_is_cached_and_trusted_at_the_next_start(
    key_dir: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "gw" / "jwks.json"
    first = _ring(key_dir)
    assert load_trusted_keys(None, cache).kids() == []  # no cache, no URL: nothing trusted
    controller = _controller(first, cache)
    add_next(key_dir)
    activate(key_dir)
    rotated = _ring(key_dir)
    assert controller.receive(rotated.signed_keyset(ISSUER).encode())

    cached = load_cached_keys(cache)
    assert cached is not None
    assert (cached.kids(), cached.version) == (controller.keys.kids(), 3)
    assert cached.token == rotated.signed_keyset(ISSUER)
    # A restart trusts the cache (the API is not even asked; its URL is unreachable here).
    restarted = load_trusted_keys(UNREACHABLE, cache)
    assert (restarted.kids(), restarted.version) == (cached.kids(), 3)


def test_the_keyset_url_sits_next_to_the_jwks() -> None:
    assert keyset_url_for("https://citykey.example.org/.well-known/jwks.json") == (
        "https://citykey.example.org" + KEYSET_PATH
    )
    assert keyset_url_for("https://citykey.example.org/keys.json") is None


def test_the_clock_offset_is_the_median_of_recent_authentic_iats() -> None:
    now = [1000.0]
    mono = [0.0]
    estimator = ClockOffsetEstimator(
        size=5, max_age_s=60, clock=lambda: now[0], monotonic=lambda: mono[0]
    )
    assert estimator.estimate() is None
    for iat in (970, 969, 971, 900, 970):  # one outlier: a command the broker delivered late
        estimator.observe(iat)
    # local 1000 - (970 + 0.5): the gateway runs 29.5 s ahead of the API.
    assert estimator.estimate() == 29.5
    mono[0] += 61
    assert estimator.estimate() is None  # old samples age out (NTP may have fixed the clock)


def test_signing_key_dataclass_still_takes_three_positional_fields(key_dir: Path) -> None:
    ring = _ring(key_dir)
    again = KeyRing([SigningKey(ring.active.kid, ring.active.state, ring.active.private_key)])
    assert again.jwks() == ring.jwks()


def test_gateways_sharing_one_key_set_each_acknowledge_a_new_set(key_dir: Path) -> None:
    ring = _ring(key_dir)
    shared = KeySet.from_jwks(ring.jwks())  # a simulated fleet shares one KeySet
    first, second = (
        KeySetController(keys=shared, issuer=ISSUER, cache_path=None) for _ in range(2)
    )
    payload = ring.signed_keyset(ISSUER).encode()
    assert first.receive(payload) is True
    assert second.receive(payload) is True  # already applied by the first, announced by both
    assert (first.receive(payload), second.receive(payload)) == (False, False)
    assert first.version == second.version == 1
