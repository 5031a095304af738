"""The gateway's offline checks (lock_gateway/offline.py) and its revocation list
(lock_gateway/revocations.py), with real keys and signatures and a fake clock."""

import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from api.keys.keyring import KeyRing
from citykey_protocol.claims import UNLOCK_TOKEN_TYPE
from citykey_protocol.codes import ModeRejection, OfflineRefusal
from citykey_protocol.offline import (
    PROOF_TYPE,
    InvalidJwkError,
    b64url_encode,
    jwk_thumbprint,
    token_hash,
)
from firmware_sim.phone import SimulatedPhone
from lock_gateway.keys import KeySet
from lock_gateway.offline import OfflineRefusedError, OfflineVerifier
from lock_gateway.replay import ReplayGuard
from lock_gateway.revocations import RevocationList, RevocationsRejectedError
from tests.offline.helpers import ISSUER, T0, FakeClock, offline_token, revocation_list, ring

GATEWAY = "gw-offline"
DOOR = "door-1"


@pytest.fixture
def keyring(tmp_path: Path) -> KeyRing:
    return ring(tmp_path)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def revocations(keyring: KeyRing, tmp_path: Path) -> RevocationList:
    return RevocationList(
        keys=KeySet.from_jwks(keyring.jwks()),
        issuer=ISSUER,
        gateway_id=GATEWAY,
        path=tmp_path / "state" / "revocations.json",
    )


@pytest.fixture
def verifier(keyring: KeyRing, clock: FakeClock, revocations: RevocationList) -> OfflineVerifier:
    return OfflineVerifier(
        keys=KeySet.from_jwks(keyring.jwks()),
        issuer=ISSUER,
        gateway_id=GATEWAY,
        doors=[DOOR, "door-2"],
        revocations=revocations,
        proof_guard=ReplayGuard(now=T0),
        clock=clock,
    )


@pytest.fixture
def phone(clock: FakeClock) -> SimulatedPhone:
    return SimulatedPhone(clock=clock)


def refusal_of(verifier: OfflineVerifier, token: str, proof: str) -> OfflineRefusal:
    with pytest.raises(OfflineRefusedError) as caught:
        verifier.verify(token, proof)
    return caught.value.reason


def test_a_token_with_a_fresh_proof_from_the_bound_key_is_accepted(
    verifier: OfflineVerifier, keyring: KeyRing, phone: SimulatedPhone
) -> None:
    token, jti = offline_token(keyring, gateway_id=GATEWAY, door=DOOR, jkt=phone.thumbprint, iat=T0)
    grant = verifier.verify(token, phone.proof(token, DOOR))
    assert (grant.token.jti, grant.token.door, grant.token.dur) == (jti, DOOR, 5)
    # Several uses within its life, each with a new proof.
    assert verifier.verify(token, phone.proof(token, DOOR)).token.jti == jti


def test_a_copied_token_with_a_proof_from_another_key_is_refused(
    verifier: OfflineVerifier, keyring: KeyRing, phone: SimulatedPhone, clock: FakeClock
) -> None:
    token, _ = offline_token(keyring, gateway_id=GATEWAY, door=DOOR, jkt=phone.thumbprint, iat=T0)
    thief = SimulatedPhone(clock=clock)
    assert refusal_of(verifier, token, thief.proof(token, DOOR)) is OfflineRefusal.KEY_MISMATCH


def test_a_proof_naming_the_right_key_but_signed_by_another_is_refused(
    verifier: OfflineVerifier, keyring: KeyRing, phone: SimulatedPhone
) -> None:
    token, _ = offline_token(keyring, gateway_id=GATEWAY, door=DOOR, jkt=phone.thumbprint, iat=T0)
    other = ec.generate_private_key(ec.SECP256R1())
    claims = {"jti": "p1", "iat": int(T0), "ath": token_hash(token), "door": DOOR}
    forged = jwt.encode(
        claims, other, algorithm="ES256", headers={"typ": PROOF_TYPE, "jwk": phone.public_jwk}
    )
    assert refusal_of(verifier, token, forged) is OfflineRefusal.BAD_PROOF


def test_a_replayed_proof_is_refused_and_proof_ids_are_per_key(
    verifier: OfflineVerifier, keyring: KeyRing, phone: SimulatedPhone, clock: FakeClock
) -> None:
    token, _ = offline_token(keyring, gateway_id=GATEWAY, door=DOOR, jkt=phone.thumbprint, iat=T0)
    proof = phone.proof(token, DOOR, jti="same-id")
    verifier.verify(token, proof)
    assert refusal_of(verifier, token, proof) is OfflineRefusal.REPLAYED_PROOF
    # Another app using the same proof id burns nothing of the first app's.
    other = SimulatedPhone(clock=clock)
    other_token, _ = offline_token(
        keyring, gateway_id=GATEWAY, door=DOOR, jkt=other.thumbprint, iat=T0
    )
    verifier.verify(other_token, other.proof(other_token, DOOR, jti="same-id"))


@pytest.mark.parametrize(
    ("offset", "accepted"), [(-30, True), (30, True), (-31, False), (31, False)]
)
def test_proof_freshness_window_is_thirty_seconds_either_way(
    verifier: OfflineVerifier,
    keyring: KeyRing,
    phone: SimulatedPhone,
    offset: int,
    accepted: bool,
) -> None:
    token, _ = offline_token(keyring, gateway_id=GATEWAY, door=DOOR, jkt=phone.thumbprint, iat=T0)
    proof = phone.proof(token, DOOR, iat=T0 + offset)
    if accepted:
        verifier.verify(token, proof)
    else:
        assert refusal_of(verifier, token, proof) is OfflineRefusal.STALE_PROOF


def test_a_proof_for_another_token_or_door_is_refused(
    verifier: OfflineVerifier, keyring: KeyRing, phone: SimulatedPhone
) -> None:
    token, _ = offline_token(keyring, gateway_id=GATEWAY, door=DOOR, jkt=phone.thumbprint, iat=T0)
    other, _ = offline_token(
        keyring, gateway_id=GATEWAY, door="door-2", jkt=phone.thumbprint, iat=T0
    )
    assert refusal_of(verifier, token, phone.proof(other, DOOR)) is OfflineRefusal.PROOF_MISMATCH
    assert refusal_of(verifier, token, phone.proof(token, "door-2")) is (
        OfflineRefusal.PROOF_MISMATCH
    )


def test_time_limits_of_the_token(
    verifier: OfflineVerifier, keyring: KeyRing, phone: SimulatedPhone, clock: FakeClock
) -> None:
    token, _ = offline_token(
        keyring, gateway_id=GATEWAY, door=DOOR, jkt=phone.thumbprint, iat=T0, lifetime=60
    )
    clock.now = T0 + 64  # within the 5 s leeway
    verifier.verify(token, phone.proof(token, DOOR))
    clock.now = T0 + 66
    assert refusal_of(verifier, token, phone.proof(token, DOOR)) is OfflineRefusal.EXPIRED
    future, _ = offline_token(
        keyring, gateway_id=GATEWAY, door=DOOR, jkt=phone.thumbprint, iat=clock.now + 60
    )
    assert refusal_of(verifier, future, phone.proof(future, DOOR)) is (OfflineRefusal.NOT_YET_VALID)
    too_long, _ = offline_token(
        keyring, gateway_id=GATEWAY, door=DOOR, jkt=phone.thumbprint, iat=clock.now, lifetime=3601
    )
    assert refusal_of(verifier, too_long, phone.proof(too_long, DOOR)) is OfflineRefusal.BAD_TOKEN


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"gateway_id": "gw-other"}, OfflineRefusal.WRONG_GATEWAY),
        ({"door": "door-elsewhere"}, OfflineRefusal.UNKNOWN_DOOR),
        ({"issuer": "https://evil.example"}, OfflineRefusal.BAD_TOKEN),
        ({"typ": UNLOCK_TOKEN_TYPE}, OfflineRefusal.BAD_TOKEN),
        ({"dur": True}, OfflineRefusal.BAD_TOKEN),
        ({"cnf": {"jkt": "short"}}, OfflineRefusal.BAD_TOKEN),
    ],
)
def test_tokens_not_for_this_gateway_or_not_offline_tokens_are_refused(
    verifier: OfflineVerifier,
    keyring: KeyRing,
    phone: SimulatedPhone,
    change: dict[str, object],
    reason: OfflineRefusal,
) -> None:
    fields: dict[str, object] = {"gateway_id": GATEWAY, "door": DOOR, **change}
    token, _ = offline_token(keyring, jkt=phone.thumbprint, iat=T0, **fields)  # type: ignore[arg-type]
    door = str(fields["door"])
    assert refusal_of(verifier, token, phone.proof(token, door)) is reason


def test_a_token_signed_by_an_untrusted_key_or_tampered_is_refused(
    verifier: OfflineVerifier, phone: SimulatedPhone, tmp_path: Path, keyring: KeyRing
) -> None:
    stranger = KeyRing.load(tmp_path / "stranger", generate=True)
    token, _ = offline_token(stranger, gateway_id=GATEWAY, door=DOOR, jkt=phone.thumbprint, iat=T0)
    assert refusal_of(verifier, token, phone.proof(token, DOOR)) is OfflineRefusal.BAD_TOKEN
    good, _ = offline_token(keyring, gateway_id=GATEWAY, door=DOOR, jkt=phone.thumbprint, iat=T0)
    header, claims, signature = good.split(".")
    tampered = f"{header}.{claims}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'AQ'}"
    assert refusal_of(verifier, tampered, phone.proof(tampered, DOOR)) is OfflineRefusal.BAD_TOKEN


@pytest.mark.parametrize(
    "bad_header",
    [
        {"typ": "JWT"},
        {"typ": PROOF_TYPE, "jwk": {"kty": "RSA", "n": "x", "e": "AQAB"}},
        {"typ": PROOF_TYPE, "jwk": "not a key"},
        {"typ": PROOF_TYPE, "kid": "k"},
    ],
)
def test_malformed_proofs_are_refused(
    verifier: OfflineVerifier,
    keyring: KeyRing,
    phone: SimulatedPhone,
    bad_header: dict[str, object],
) -> None:
    token, _ = offline_token(keyring, gateway_id=GATEWAY, door=DOOR, jkt=phone.thumbprint, iat=T0)
    headers = {"jwk": phone.public_jwk, **bad_header}
    if "kid" in bad_header:
        headers.pop("jwk")
    proof = jwt.encode(
        {"jti": "p", "iat": int(T0), "ath": token_hash(token), "door": DOOR},
        phone._key,
        algorithm="ES256",
        headers=headers,
    )
    assert refusal_of(verifier, token, proof) is OfflineRefusal.BAD_PROOF
    assert refusal_of(verifier, token, "not.a.proof") is OfflineRefusal.BAD_PROOF


async def test_a_revoked_token_is_refused_and_the_list_survives_a_restart(
    verifier: OfflineVerifier,
    keyring: KeyRing,
    phone: SimulatedPhone,
    revocations: RevocationList,
    tmp_path: Path,
) -> None:
    token, jti = offline_token(keyring, gateway_id=GATEWAY, door=DOOR, jkt=phone.thumbprint, iat=T0)
    verifier.verify(token, phone.proof(token, DOOR))
    listing = revocation_list(keyring, gateway_id=GATEWAY, version=7, jtis=[jti])
    assert await revocations.receive(listing) is True
    assert refusal_of(verifier, token, phone.proof(token, DOOR)) is OfflineRefusal.REVOKED
    assert await revocations.receive(listing) is False  # the retained copy again

    restarted = RevocationList(
        keys=KeySet.from_jwks(keyring.jwks()),
        issuer=ISSUER,
        gateway_id=GATEWAY,
        path=tmp_path / "state" / "revocations.json",
    )
    restarted.restore()
    assert (restarted.version, restarted.is_revoked(jti)) == (7, True)


async def test_revocation_lists_must_be_authentic_newer_and_for_this_gateway(
    revocations: RevocationList, keyring: KeyRing, tmp_path: Path
) -> None:
    await revocations.receive(revocation_list(keyring, gateway_id=GATEWAY, version=5, jtis=["a"]))
    stranger = KeyRing.load(tmp_path / "stranger", generate=True)
    cases = [
        (revocation_list(keyring, gateway_id=GATEWAY, version=4, jtis=[]), "stale_version"),
        (revocation_list(keyring, gateway_id="gw-other", version=9, jtis=[]), "wrong_gateway"),
        (revocation_list(stranger, gateway_id=GATEWAY, version=9, jtis=[]), "unknown_key"),
        (
            revocation_list(keyring, gateway_id=GATEWAY, version=9, jtis=[], issuer="x"),
            "bad_issuer",
        ),
        (keyring.sign({"iss": ISSUER}, "citykey-mode+jwt").encode(), "bad_type"),
        (b"\xff garbage", "malformed"),
    ]
    for payload, reason in cases:
        with pytest.raises(RevocationsRejectedError) as caught:
            await revocations.receive(payload)
        assert caught.value.reason is ModeRejection(reason)
    assert (revocations.version, revocations.is_revoked("a")) == (5, True)


async def test_an_unreadable_stored_list_refuses_every_offline_token_until_a_fresh_one(
    verifier: OfflineVerifier,
    revocations: RevocationList,
    keyring: KeyRing,
    phone: SimulatedPhone,
    tmp_path: Path,
) -> None:
    path = tmp_path / "state" / "revocations.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    revocations.restore()
    token, _ = offline_token(keyring, gateway_id=GATEWAY, door=DOOR, jkt=phone.thumbprint, iat=T0)
    assert refusal_of(verifier, token, phone.proof(token, DOOR)) is (
        OfflineRefusal.REVOCATIONS_UNAVAILABLE
    )
    await revocations.receive(revocation_list(keyring, gateway_id=GATEWAY, version=1, jtis=[]))
    verifier.verify(token, phone.proof(token, DOOR))
    assert json.loads(path.read_text())["version"] == 1


def test_jwk_thumbprint_matches_rfc_7638_and_refuses_private_keys() -> None:
    # The EC example key of RFC 7517 appendix A.1; thumbprint computed by the RFC 7638 rules.
    jwk = {
        "kty": "EC",
        "crv": "P-256",
        "x": "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
        "y": "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM",
        "use": "enc",
        "kid": "1",
    }
    canonical = (
        '{"crv":"P-256","kty":"EC","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",'
        '"y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}'
    )
    import hashlib

    assert jwk_thumbprint(jwk) == b64url_encode(hashlib.sha256(canonical.encode()).digest())
    with pytest.raises(InvalidJwkError):
        jwk_thumbprint({**jwk, "d": "secret"})
    with pytest.raises(InvalidJwkError):
        jwk_thumbprint({**jwk, "x": jwk["x"] + "A"})


def test_figure_offline_verification_cost(
    verifier: OfflineVerifier, keyring: KeyRing, phone: SimulatedPhone
) -> None:
    token, _ = offline_token(keyring, gateway_id=GATEWAY, door=DOOR, jkt=phone.thumbprint, iat=T0)
    proofs = [phone.proof(token, DOOR) for _ in range(200)]
    durations = []
    for proof in proofs:
        started = time.perf_counter()
        verifier.verify(token, proof)
        durations.append(time.perf_counter() - started)
    durations.sort()
    print(
        f"\n[offline] gateway check of token + proof (PyJWT, 2 ES256 verifies): "
        f"median {durations[100] * 1e6:.0f} us, p99 {durations[197] * 1e6:.0f} us (n=200)"
    )
