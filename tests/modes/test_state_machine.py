"""The gateway's mode state machine, verifier and store, with a fake clock. No broker: the
controller drives a real SimulatedLock directly."""

import base64
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from api.keys.keyring import KeyRing
from citykey_protocol.claims import UNLOCK_TOKEN_TYPE
from citykey_protocol.codes import ModeRejection
from citykey_protocol.modes import MODE_TOKEN_TYPE, DoorHold, ModeClaims, claims_to_dict
from firmware_sim.lock import SimulatedLock
from lock_gateway.keys import KeySet
from lock_gateway.modes import (
    MODE_STATE_FILE,
    Actuation,
    GatewayLockedDownError,
    ModeController,
    ModeRejectedError,
    ModeState,
    ModeVerifier,
    plan,
)

ISSUER = "http://citykey.test"
GATEWAY = "gw-unit"
DOORS = {"front": 1, "back": 2, "side": 3}
T0 = 1_900_000_000.0


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def ring(tmp_path_factory: pytest.TempPathFactory) -> KeyRing:
    return KeyRing.initialize(tmp_path_factory.mktemp("unit-keys"))


@pytest.fixture(scope="module")
def rogue(tmp_path_factory: pytest.TempPathFactory) -> KeyRing:
    return KeyRing.initialize(tmp_path_factory.mktemp("rogue-keys"))


def message(
    ring: KeyRing,
    ver: int,
    *,
    lockdown: bool = False,
    holds: dict[str, int] | None = None,
    aud: str = GATEWAY,
    iss: str = ISSUER,
    typ: str = MODE_TOKEN_TYPE,
) -> bytes:
    claims = ModeClaims(
        iss=iss,
        aud=aud,
        iat=int(T0),
        ver=ver,
        lockdown=lockdown,
        holds=tuple(DoorHold(d, u) for d, u in (holds or {}).items()),
    )
    return ring.sign(claims_to_dict(claims), typ).encode()


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


# plan: the pure transitions


def test_lockdown_locks_every_door_whatever_came_before() -> None:
    old = ModeState(3, False, {"front": T0 + 60})
    actions = plan(old, ModeState(4, True, {}), DOORS, T0)
    assert actions == [Actuation("lock", d, c) for d, c in sorted(DOORS.items())]


def test_new_and_changed_holds_are_applied_unchanged_ones_left_alone() -> None:
    old = ModeState(1, False, {"front": T0 + 60, "back": T0 + 60})
    new = ModeState(2, False, {"front": T0 + 60, "back": T0 + 120, "side": T0 + 30})
    assert plan(old, new, DOORS, T0) == [
        Actuation("hold", "back", 2, T0 + 120),
        Actuation("hold", "side", 3, T0 + 30),
    ]


def test_dropped_and_ended_holds_are_relocked() -> None:
    old = ModeState(1, False, {"front": T0 + 60, "back": T0 + 60})
    new = ModeState(2, False, {"back": T0 - 1})
    assert plan(old, new, DOORS, T0) == [
        Actuation("lock", "back", 2),
        Actuation("lock", "front", 1),
    ]


def test_leaving_lockdown_holds_the_doors_in_a_window_again() -> None:
    new = ModeState(5, False, {"front": T0 + 60})
    assert plan(ModeState(4, True, {}), new, DOORS, T0) == [Actuation("hold", "front", 1, T0 + 60)]


def test_restore_reholds_running_windows_and_relocks_ended_ones() -> None:
    stored = ModeState(7, False, {"front": T0 + 60, "back": T0 - 60, "gone": T0 + 60})
    assert plan(ModeState(), stored, DOORS, T0) == [
        Actuation("lock", "back", 2),
        Actuation("hold", "front", 1, T0 + 60),
    ]


def test_only_this_gateways_doors_are_held() -> None:
    claims = ModeClaims(
        iss=ISSUER,
        aud=GATEWAY,
        iat=1,
        ver=2,
        lockdown=False,
        holds=(DoorHold("front", 5), DoorHold("elsewhere", 5)),
    )
    assert ModeState.from_claims(claims, DOORS).holds == {"front": 5.0}
    locked = ModeState.from_claims(
        ModeClaims(iss=ISSUER, aud=GATEWAY, iat=1, ver=3, lockdown=True, holds=claims.holds), DOORS
    )
    assert locked.holds == {}  # lockdown overrides passage, whatever the message says


# The verifier


@pytest.fixture(scope="module")
def verifier(ring: KeyRing) -> ModeVerifier:
    return ModeVerifier(KeySet.from_jwks(ring.jwks()), ISSUER, GATEWAY)


def test_an_authentic_message_verifies(ring: KeyRing, verifier: ModeVerifier) -> None:
    claims = verifier.verify(message(ring, 9, holds={"front": int(T0)}))
    assert (claims.ver, claims.lockdown, claims.holds) == (9, False, (DoorHold("front", int(T0)),))


def _refusals(ring: KeyRing, rogue: KeyRing) -> Iterator[tuple[bytes, ModeRejection]]:
    good = message(ring, 9).decode()
    header, claims, signature = good.split(".")
    yield message(rogue, 9), ModeRejection.UNKNOWN_KEY
    yield message(ring, 9, aud="gw-other"), ModeRejection.WRONG_GATEWAY
    yield message(ring, 9, iss="http://evil.test"), ModeRejection.BAD_ISSUER
    yield message(ring, 9, typ=UNLOCK_TOKEN_TYPE), ModeRejection.BAD_TYPE
    forged = b64({**json.loads(base64.urlsafe_b64decode(claims + "==")), "lockdown": True})
    yield f"{header}.{forged}.{signature}".encode(), ModeRejection.BAD_SIGNATURE
    unsigned = b64({"alg": "none", "kid": ring.active.kid, "typ": MODE_TOKEN_TYPE})
    yield f"{unsigned}.{claims}.".encode(), ModeRejection.BAD_HEADER
    steering = b64(
        {"alg": "ES256", "kid": ring.active.kid, "typ": MODE_TOKEN_TYPE, "jku": "http://x"}
    )
    yield f"{steering}.{claims}.{signature}".encode(), ModeRejection.BAD_HEADER
    bad_types = {**json.loads(base64.urlsafe_b64decode(claims + "==")), "ver": True}
    yield ring.sign(bad_types, MODE_TOKEN_TYPE).encode(), ModeRejection.BAD_CLAIMS
    yield (
        ring.sign({"iss": ISSUER, "aud": GATEWAY}, MODE_TOKEN_TYPE).encode(),
        (ModeRejection.BAD_CLAIMS),
    )
    yield b"not a token", ModeRejection.MALFORMED
    yield "ünïcode".encode(), ModeRejection.MALFORMED
    yield b"x" * 20000, ModeRejection.OVERSIZED


def test_every_inauthentic_or_misaddressed_message_is_refused_with_its_reason(
    ring: KeyRing, rogue: KeyRing, verifier: ModeVerifier
) -> None:
    for payload, reason in _refusals(ring, rogue):
        with pytest.raises(ModeRejectedError) as caught:
            verifier.verify(payload)
        assert caught.value.reason is reason, payload[:80]


# The controller: versions, persistence, restart, unlock guard


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def lock(clock: FakeClock) -> AsyncIterator[SimulatedLock]:
    lock = SimulatedLock(sorted(DOORS.values()), clock=clock)
    yield lock
    for channel in lock.channels:  # cancel pending relock timers
        await lock.lock(channel)


def controller(
    ring: KeyRing, lock: SimulatedLock, clock: FakeClock, state_dir: Path | None
) -> ModeController:
    return ModeController(
        gateway_id=GATEWAY,
        issuer=ISSUER,
        doors=DOORS,
        driver=lock,
        keys=KeySet.from_jwks(ring.jwks()),
        state_path=None if state_dir is None else state_dir / MODE_STATE_FILE,
        clock=clock,
    )


async def test_versions_only_grow_and_the_retained_copy_is_no_rejection(
    ring: KeyRing, lock: SimulatedLock, clock: FakeClock
) -> None:
    modes = controller(ring, lock, clock, None)
    lockdown = message(ring, 5, lockdown=True)
    assert await modes.receive(lockdown) is True
    assert (modes.version, modes.lockdown) == (5, True)
    assert await modes.receive(lockdown) is False  # the same message again (reconnect)
    for stale in (message(ring, 4), message(ring, 5)):  # older, or same number but different
        with pytest.raises(ModeRejectedError) as caught:
            await modes.receive(stale)
        assert caught.value.reason is ModeRejection.STALE_VERSION
    assert (modes.version, modes.lockdown) == (5, True)
    assert await modes.receive(message(ring, 6)) is True
    assert (modes.version, modes.lockdown) == (6, False)


async def test_lockdown_refuses_unlocks_and_relocks_doors_opened_before(
    ring: KeyRing, lock: SimulatedLock, clock: FakeClock
) -> None:
    modes = controller(ring, lock, clock, None)
    await modes.unlock("front", 1, 30)
    assert not lock.state(1).locked
    await modes.receive(message(ring, 1, lockdown=True))
    assert all(state.locked for state in lock.channels.values())
    with pytest.raises(GatewayLockedDownError):
        await modes.unlock("front", 1, 5)
    assert lock.state(1).unlock_count == 1


async def test_a_plain_unlock_never_cuts_a_hold_short(
    ring: KeyRing, lock: SimulatedLock, clock: FakeClock
) -> None:
    modes = controller(ring, lock, clock, None)
    await modes.receive(message(ring, 1, holds={"front": int(T0) + 600}))
    assert lock.state(1).held_until == T0 + 600
    assert await modes.unlock("front", 1, 5) == T0 + 600
    assert lock.state(1).held_until == T0 + 600  # no actuation: the hold's relock stands
    await modes.receive(message(ring, 2))  # the window closes
    assert lock.state(1).locked


async def test_the_applied_mode_survives_a_restart(
    ring: KeyRing, lock: SimulatedLock, clock: FakeClock, tmp_path: Path
) -> None:
    first = controller(ring, lock, clock, tmp_path)
    held = message(ring, 3, holds={"front": int(T0) + 600, "back": int(T0) + 60})
    await first.receive(held)

    # Restarted 2 minutes later: the back door's window has ended, the front door's has not.
    clock.now = T0 + 120
    after = SimulatedLock(sorted(DOORS.values()), clock=clock)
    second = controller(ring, after, clock, tmp_path)
    await second.restore()
    assert second.version == 3
    assert after.state(1).held_until == T0 + 600
    assert after.state(2).locked
    # The broker's retained copy of the same message is recognised, not refused as stale.
    assert await second.receive(held) is False
    await after.lock(1)


async def test_a_lockdown_survives_a_restart(
    ring: KeyRing, lock: SimulatedLock, clock: FakeClock, tmp_path: Path
) -> None:
    await controller(ring, lock, clock, tmp_path).receive(message(ring, 8, lockdown=True))
    fresh_lock = SimulatedLock(sorted(DOORS.values()), clock=clock)
    restarted = controller(ring, fresh_lock, clock, tmp_path)
    await restarted.restore()
    assert (restarted.version, restarted.lockdown) == (8, True)
    with pytest.raises(GatewayLockedDownError):
        await restarted.unlock("front", 1, 5)


async def test_an_unreadable_store_fails_closed(
    ring: KeyRing, lock: SimulatedLock, clock: FakeClock, tmp_path: Path
) -> None:
    (tmp_path / MODE_STATE_FILE).write_text("{half a file")
    modes = controller(ring, lock, clock, tmp_path)
    await modes.restore()
    assert (modes.version, modes.lockdown) == (0, True)
    # The first authentic message replaces it.
    await modes.receive(message(ring, 1))
    assert (modes.version, modes.lockdown) == (1, False)
