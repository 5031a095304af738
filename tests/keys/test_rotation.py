"""Key rotation end to end: the real API (its key ring watcher and relay), the real broker, a
real gateway driving a simulated lock.

- two rotations while citizens keep unlocking: no unlock fails;
- after the old keys retire, a token they sign is refused by the gateway;
- a key set planted by someone with broker access is ignored and reported to the API;
- a gateway restarted after a rotation trusts the new keys from its cache, API unreachable.
"""

import asyncio
import dataclasses
import secrets
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from api.identity.models import Role, User
from api.keys.keyring import RETIRE_MARGIN_S, KeyRing, activate, add_next, retire
from api.keys.watcher import KeyRingWatcher
from citykey_protocol import messages
from citykey_protocol.claims import UNLOCK_TOKEN_TYPE
from citykey_protocol.codes import AckResult, TokenRejection
from citykey_protocol.keyset import KEYSET_REJECTED_EVENT, KeySetRejection
from citykey_protocol.messages import GatewayEvent, UnlockCommand
from citykey_protocol.topics import KEYSET_TOPIC
from citykey_protocol.transport import BrokerAddress
from lock_gateway.keys import load_trusted_keys, save_cached_jwks
from tests.conftest import ApiHarness
from tests.keys.helpers import start_gateway, until
from tests.support import AckListener, World, unique

UNLOCKS = 150
UNLOCK_WINDOW_S = 8.0
CITIZENS = 8  # the unlocks are spread so that no citizen meets the per-door rate limit
UNREACHABLE_JWKS = "http://127.0.0.1:1/.well-known/jwks.json"


async def _citizens(world: World, count: int) -> list[str]:
    ids = [unique("u-cit") for _ in range(count)]
    async with world.state.sessions() as session:
        for user_id in ids:
            session.add(User(id=user_id, display_name=user_id, roles=[Role.CITIZEN]))
        await session.commit()
    for user_id in ids:
        await world.grant(user_id, building=True)
    return ids


def _watcher(api: ApiHarness) -> KeyRingWatcher:
    watcher = api.state.keys_watcher
    assert watcher is not None
    return watcher


def _token(
    key: ec.EllipticCurvePrivateKey, kid: str, issuer: str, gateway_id: str, door: str
) -> str:
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": gateway_id,
        "sub": "u-probe",
        "door": door,
        "dur": 1,
        "jti": secrets.token_hex(16),
        "iat": now,
        "nbf": now,
        "exp": now + 30,
    }
    return jwt.encode(
        claims, key, algorithm="ES256", headers={"kid": kid, "typ": UNLOCK_TOKEN_TYPE}
    )


async def _probe(broker: BrokerAddress, gateway_id: str, door: str, token: str) -> messages.Ack:
    command = UnlockCommand(command_id=str(uuid.uuid4()), door=door, token=token, reply_to="x")
    async with AckListener(broker, gateway_id) as listener:
        return await listener.send(command)


async def test_two_rotations_during_continuous_unlocks_fail_no_unlock(
    api: ApiHarness, world: World, key_dir: Path, broker: BrokerAddress
) -> None:
    gateway_id, doors = await world.add_gateway(doors=3)
    door_ids = sorted(doors)
    citizens = await _citizens(world, CITIZENS)
    running = await world.start_gateway(gateway_id, doors)
    keysets = running.gateway.keysets
    ring = api.state.keyring
    watcher = _watcher(api)
    # The gateway booted from the plain JWKS (v0) and takes the retained signed set at once.
    await until(lambda: keysets.version == ring.generation, "initial key set")
    original = ring.active.kid

    results: list[int] = []

    async def unlock_continuously() -> None:
        # Paced to the window: unlock i starts at i x window / count (or at once when behind).
        start = time.monotonic()
        for i in range(UNLOCKS):
            await asyncio.sleep(max(0.0, start + i * UNLOCK_WINDOW_S / UNLOCKS - time.monotonic()))
            citizen, door = citizens[i % CITIZENS], door_ids[(i // CITIZENS) % len(door_ids)]
            response = await api.client.post(
                f"/v1/doors/{door}/unlock", headers=api.token_for(citizen)
            )
            if response.status_code != 200:
                print(f"unlock {i} failed: {response.status_code} {response.text}")
            results.append(response.status_code)

    steps: list[tuple[str, int, str, float, int]] = []

    async def step(name: str, change: Callable[[], object]) -> None:
        started = time.monotonic()
        change()
        # The watcher would notice within a second by itself; asking it now makes the test
        # deterministic. Then: until the gateway acknowledges the new generation.
        assert await watcher.check()
        generation = ring.generation
        await until(lambda: keysets.version == generation, name)
        took = (time.monotonic() - started) * 1000
        # ... and the API hears the acknowledgement in the gateway's status.
        await until(lambda: _acked(api, gateway_id) == generation, f"{name} acknowledged")
        steps.append((name, generation, ring.active.kid, took, len(results)))

    unlocking = asyncio.create_task(unlock_continuously())
    for _ in range(2):
        await asyncio.sleep(UNLOCK_WINDOW_S / 5)
        await step("add-next", lambda: add_next(key_dir))
        await asyncio.sleep(UNLOCK_WINDOW_S / 5)
        await step("activate", lambda: activate(key_dir))
    await unlocking

    failures = sum(1 for status in results if status != 200)
    print(f"\nunlocks during two rotations: {len(results)}, failures: {failures}")
    for name, generation, active, took, done in steps:
        print(
            f"  {name:<9} -> key set v{generation} (active {active}): ring written to gateway "
            f"trusting it in {took:.1f} ms, after {done} unlocks"
        )
    assert len(results) == UNLOCKS
    assert failures == 0
    # Every step happened while the unlocks were still going on.
    assert all(0 < done < UNLOCKS for *_, done in steps)
    assert len({active for _, _, active, _, _ in steps}) == 3

    # Retire the two old keys. The unlocks are over, so no token of theirs is in flight: let
    # the ring believe their tokens' lifetime has passed instead of waiting for it.
    old = [key for key in ring.keys if key.kid != ring.active.kid]
    assert original in {key.kid for key in old}
    lifetime = api.state.settings.token_lifetime_s
    retired = retire(
        key_dir, max_token_lifetime_s=lifetime, now=time.time() + lifetime + RETIRE_MARGIN_S + 1
    )
    assert sorted(e.kid for e in retired) == sorted(key.kid for key in old)
    await step("retire", lambda: None)
    assert keysets.keys.kids() == [ring.active.kid]

    issuer = api.state.settings.issuer
    door = door_ids[0]
    for key in old:
        ack = await _probe(
            broker, gateway_id, door, _token(key.private_key, key.kid, issuer, gateway_id, door)
        )
        assert (ack.result, ack.reason) == (AckResult.DENIED, TokenRejection.UNKNOWN_KEY.value)
    current = ring.active
    ack = await _probe(
        broker, gateway_id, door, _token(current.private_key, current.kid, issuer, gateway_id, door)
    )
    assert ack.result is AckResult.UNLOCKED
    print(f"tokens signed by the {len(old)} retired keys: refused ({TokenRejection.UNKNOWN_KEY})")


def _acked(api: ApiHarness, gateway_id: str) -> int | None:
    status = api.state.relay.gateway_status(gateway_id)
    return None if status is None else status.keyset_version


async def test_a_planted_key_set_is_ignored_and_reported(
    api: ApiHarness,
    world: World,
    broker: BrokerAddress,
    tmp_path: Path,
) -> None:
    gateway_id, doors = await world.add_gateway()
    door = next(iter(doors))
    await world.grant(world.citizen_id, door_id=door)
    running = await world.start_gateway(gateway_id, doors)
    keysets = running.gateway.keysets
    await until(lambda: keysets.version == api.state.keyring.generation, "initial key set")
    trusted = (keysets.keys.kids(), keysets.version)
    events: list[GatewayEvent] = []

    async def collect(event: GatewayEvent) -> None:
        if event.gateway_id == gateway_id and event.kind == KEYSET_REJECTED_EVENT:
            events.append(event)

    api.state.relay.on_event(collect)

    # Someone with a broker password publishes a key set of their own, with a huge version
    # (to lock out the real sets) signed by their own key. Not retained: the shared test
    # broker must not keep it for other tests' gateways.
    rogue = KeyRing.initialize(tmp_path / "rogue")
    planted = jwt.encode(
        {
            "iss": api.state.settings.issuer,
            "iat": int(time.time()),
            "ver": 10**9,
            "keys": rogue.jwks()["keys"],
        },
        rogue.active.private_key,
        algorithm="ES256",
        headers={"kid": rogue.active.kid, "typ": "citykey-keyset+jwt"},
    )
    async with broker.client(unique("rogue")) as client:
        await client.publish(KEYSET_TOPIC, planted.encode(), qos=1)
    await until(lambda: bool(events), "keyset_rejected event at the API")

    event = events[0]
    assert event.data["reason"] == KeySetRejection.UNKNOWN_KEY.value
    assert event.data["kid"] == rogue.active.kid
    assert event.data["source"] == "mqtt"
    assert (keysets.keys.kids(), keysets.version) == trusted
    # The planted key opens nothing; the real keys still do.
    ack = await _probe(
        broker,
        gateway_id,
        door,
        _token(
            rogue.active.private_key, rogue.active.kid, api.state.settings.issuer, gateway_id, door
        ),
    )
    assert (ack.result, ack.reason) == (AckResult.DENIED, TokenRejection.UNKNOWN_KEY.value)
    response = await api.client.post(
        f"/v1/doors/{door}/unlock", headers=api.token_for(world.citizen_id)
    )
    assert response.status_code == 200, response.text
    print(f"\nplanted key set: ignored, reported as {event.kind} {dict(event.data)}")


async def test_a_restarted_gateway_trusts_the_rotated_keys_from_its_cache(
    api: ApiHarness,
    world: World,
    key_dir: Path,
    tmp_path: Path,
) -> None:
    gateway_id, doors = await world.add_gateway()
    door = next(iter(doors))
    await world.grant(world.citizen_id, door_id=door)
    cache = tmp_path / "gateway" / "jwks.json"
    # The API is unreachable over HTTP for this gateway all along (nothing listens on port 1).
    config = dataclasses.replace(
        world.gateway_config(gateway_id, doors), key_cache=cache, jwks_url=UNREACHABLE_JWKS
    )
    # Its first boot cached the JWKS (what load_trusted_keys writes after an HTTPS fetch).
    save_cached_jwks(cache, {"keys": api.state.keyring.jwks()["keys"]})
    running = await start_gateway(world, config, load_trusted_keys(config.jwks_url, cache))
    ring = api.state.keyring
    watcher = _watcher(api)
    keysets = running.gateway.keysets
    await until(lambda: keysets.version == ring.generation, "initial key set")
    for change in (add_next, activate):
        change(key_dir)
        assert await watcher.check()
        await until(lambda: keysets.version == ring.generation, "rotation step")
    await running.stop()
    world.gateways.remove(running)

    restarted_keys = load_trusted_keys(config.jwks_url, cache)
    assert restarted_keys.version == ring.generation
    assert restarted_keys.get(ring.active.kid) is not None
    restarted = await start_gateway(world, config, restarted_keys)
    response = await api.client.post(
        f"/v1/doors/{door}/unlock", headers=api.token_for(world.citizen_id)
    )
    assert response.status_code == 200, response.text
    assert restarted.gateway.actuations == 1
    print(
        f"\nrestarted gateway: trusts key set v{restarted_keys.version} from its cache (API "
        f"unreachable); unlock signed by the new key {ring.active.kid}: {response.status_code}"
    )
