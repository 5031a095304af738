"""Offline unlock end to end: the API (real PostgreSQL, real Mosquitto) issues a key-bound
token while the phone is online; the building is then cut off from the broker for real; the
phone opens the door through the gateway's local endpoint; the real gateway code validates,
drives the simulated lock and journals the event, which reaches the API when the link is back.
Revocation goes the other way as a signed, retained list."""

import asyncio
import contextlib
import statistics
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlmodel import col, func, select

from api.audit.models import AuditEvent
from api.modes.plan import DesiredMode
from api.modes.publisher import ModePublisher
from citykey_protocol.codes import OfflineRefusal
from citykey_protocol.messages import GatewayEvent
from citykey_protocol.offline import AUTHORIZED, OFFLINE_UNLOCK_EVENT
from citykey_protocol.topics import GatewayTopics
from firmware_sim.phone import SimulatedPhone
from tests.conftest import ApiHarness
from tests.offline.conftest import StartOffline, endpoint_url, wait_for
from tests.offline.helpers import offline_token
from tests.offline.link import BuildingLink
from tests.support import World, unique

pytestmark = pytest.mark.usefixtures("offline_cleanup")


async def unlock_audit_rows(api: ApiHarness, door_id: str) -> int:
    """Audit rows of online unlocks of ``door_id``: proof that the API took no part."""
    async with api.state.sessions() as session:
        statement = select(func.count()).where(
            col(AuditEvent.door_id) == door_id, col(AuditEvent.action).like("unlock.%")
        )
        return int((await session.execute(statement)).scalar_one())


def offline_events(events: list[GatewayEvent], jti: str) -> list[tuple[str, str]]:
    """(result, sub) of the offline_unlock events of token ``jti`` the API heard, in journal
    order, each once (the journal sends again what the API has not acknowledged)."""
    unique_events = {
        e.seq if e.seq is not None else id(e): e
        for e in events
        if e.kind == OFFLINE_UNLOCK_EVENT and e.data.get("jti") == jti
    }
    return [
        (str(e.data.get("result")), str(e.data.get("sub")))
        for _, e in sorted(unique_events.items())
    ]


async def test_the_door_opens_offline_and_the_event_reaches_the_api_when_the_link_is_back(
    api: ApiHarness,
    world: World,
    start_offline_gateway: StartOffline,
    link: BuildingLink,
    radio: httpx.AsyncClient,
    api_events: list[GatewayEvent],
) -> None:
    gateway_id, doors = await world.add_gateway()
    door_id = next(iter(doors))
    await world.grant(world.citizen_id, building=True)
    running = await start_offline_gateway(gateway_id, doors, link=link)
    phone = SimulatedPhone()
    held = await phone.fetch_token(api.client, door_id, api.token_for(world.citizen_id))
    assert (held.door_id, held.gateway_id) == (door_id, gateway_id)

    # The building's line goes down: the gateway loses the broker, the API sees it offline.
    await link.cut()
    await wait_for(lambda: not running.gateway.connected.is_set(), "gateway disconnected")
    await wait_for(lambda: not api.state.relay.gateway_online(gateway_id), "API sees it offline")
    online = await api.client.post(
        f"/v1/doors/{door_id}/unlock", headers=api.token_for(world.citizen_id)
    )
    assert online.json()["error"]["code"] == "gateway_offline"  # the normal way is closed
    audit_before = await unlock_audit_rows(api, door_id)

    answer = await phone.open_offline(radio, endpoint_url(running), door_id)

    assert answer.status == 200, answer.body
    assert answer.body["status"] == "unlocked"
    assert answer.body["unlocked_until"] > time.time()
    channel = running.lock.state(running.channel(door_id))
    assert (channel.locked, channel.unlock_count) == (False, 1)
    assert await unlock_audit_rows(api, door_id) == audit_before  # the API took no part
    assert offline_events(api_events, held.jti) == []  # nothing can reach it yet

    # Figure: an offline unlock over loopback, door already open (the relock is extended).
    durations = []
    for _ in range(20):
        started = time.perf_counter()
        again = await phone.open_offline(radio, endpoint_url(running), door_id)
        durations.append((time.perf_counter() - started) * 1000)
        assert again.status == 200, again.body
    print(
        f"\n[offline] offline unlock over the local endpoint (loopback, httpx keep-alive, fresh "
        f"proof each): median {statistics.median(durations):.2f} ms, "
        f"max {max(durations):.2f} ms (n=20, link cut)"
    )

    # The link comes back: the journal delivers what happened while it was down.
    await link.restore()
    await wait_for(lambda: running.gateway.connected.is_set(), "gateway reconnected")
    await wait_for(
        lambda: offline_events(api_events, held.jti).count(("unlocked", world.citizen_id)) == 21,
        "the offline unlocks reach the API",
        timeout=20,
    )
    results = [result for result, _ in offline_events(api_events, held.jti)]
    assert results[:2] == [AUTHORIZED, "unlocked"]  # journaled before the lock moved
    assert results.count(AUTHORIZED) == 21


async def test_copied_replayed_expired_and_foreign_tokens_open_nothing(
    api: ApiHarness,
    world: World,
    start_offline_gateway: StartOffline,
    radio: httpx.AsyncClient,
    api_events: list[GatewayEvent],
) -> None:
    gateway_id, doors = await world.add_gateway()
    _, other_doors = await world.add_gateway()
    door_id, other_door = next(iter(doors)), next(iter(other_doors))
    await world.grant(world.citizen_id, building=True)
    running = await start_offline_gateway(gateway_id, doors)
    url = endpoint_url(running)
    phone = SimulatedPhone()
    headers = api.token_for(world.citizen_id)
    held = await phone.fetch_token(api.client, door_id, headers)

    # A copied token, with a proof signed by the thief's own key.
    thief = SimulatedPhone()
    copied = await thief.present(radio, url, held.token, door_id)
    assert (copied.status, copied.code) == (401, OfflineRefusal.KEY_MISMATCH)

    # A proof captured on the way and sent again.
    proof = phone.proof(held.token, door_id)
    assert (await phone.present(radio, url, held.token, door_id, proof=proof)).status == 200
    replayed = await phone.present(radio, url, held.token, door_id, proof=proof)
    assert (replayed.status, replayed.code) == (409, OfflineRefusal.REPLAYED_PROOF)

    # An expired token (signed by the API's key, issued 20 minutes ago for 15).
    expired, _ = offline_token(
        api.state.keyring,
        gateway_id=gateway_id,
        door=door_id,
        jkt=phone.thumbprint,
        iat=time.time() - 1200,
        issuer=api.state.settings.issuer,
    )
    late = await phone.present(radio, url, expired, door_id)
    assert (late.status, late.code) == (401, OfflineRefusal.EXPIRED)

    # A real token for another gateway's door, and one for a door this gateway lacks.
    foreign = await phone.fetch_token(api.client, other_door, headers)
    elsewhere = await phone.present(radio, url, foreign.token, other_door)
    assert (elsewhere.status, elsewhere.code) == (403, OfflineRefusal.WRONG_GATEWAY)
    unknown, _ = offline_token(
        api.state.keyring,
        gateway_id=gateway_id,
        door="door-not-here",
        jkt=phone.thumbprint,
        iat=time.time(),
        issuer=api.state.settings.issuer,
    )
    no_door = await phone.present(radio, url, unknown, "door-not-here")
    assert (no_door.status, no_door.code) == (403, OfflineRefusal.UNKNOWN_DOOR)

    # An online unlock token is not an offline token.
    unlock_token, _ = api.state.minter.mint(
        gateway_id=gateway_id, door_id=door_id, subject=world.citizen_id, seconds=1
    )
    wrong_type = await phone.present(radio, url, unlock_token, door_id)
    assert (wrong_type.status, wrong_type.code) == (401, OfflineRefusal.BAD_TOKEN)

    assert running.lock.state(running.channel(door_id)).unlock_count == 1  # the one good try
    await wait_for(
        lambda: (
            ("key_mismatch", world.citizen_id) in offline_events(api_events, held.jti)
            and ("replayed_proof", world.citizen_id) in offline_events(api_events, held.jti)
        ),
        "refusals of the authentic token reach the audit trail",
    )


async def test_a_revoked_token_is_refused_once_the_signed_list_reaches_the_gateway(
    api: ApiHarness,
    world: World,
    start_offline_gateway: StartOffline,
    link: BuildingLink,
    radio: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    gateway_id, doors = await world.add_gateway()
    door_id = next(iter(doors))
    await world.grant(world.citizen_id, building=True)
    state_dir = tmp_path / "gw-state"
    running = await start_offline_gateway(gateway_id, doors, link=link, state_dir=state_dir)
    phone = SimulatedPhone()
    headers = api.token_for(world.citizen_id)
    lost = await phone.fetch_token(api.client, door_id, headers)
    kept = await phone.fetch_token(api.client, door_id, headers)  # a second phone session
    assert (await phone.present(radio, endpoint_url(running), lost.token, door_id)).status == 200

    revocations = running.gateway.offline.revocations
    started = time.perf_counter()
    revoked = await api.client.delete(f"/v1/me/offline-tokens/{lost.jti}", headers=headers)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None
    await wait_for(lambda: revocations.is_revoked(lost.jti), "the list reaches the gateway")
    print(
        f"\n[offline] revocation: DELETE to the gateway refusing the token "
        f"{(time.perf_counter() - started) * 1000:.1f} ms (signed list, retained, QoS 1)"
    )
    refused = await phone.present(radio, endpoint_url(running), lost.token, door_id)
    assert (refused.status, refused.code) == (403, OfflineRefusal.REVOKED)
    assert (await phone.present(radio, endpoint_url(running), kept.token, door_id)).status == 200

    # While the building is cut off a revocation cannot reach it (the token's short life is
    # the bound); once the link is back, the retained list does.
    await link.cut()
    await wait_for(lambda: not running.gateway.connected.is_set(), "gateway disconnected")
    version = revocations.version
    assert (
        await api.client.delete(f"/v1/me/offline-tokens/{kept.jti}", headers=headers)
    ).status_code == 200
    assert (await phone.present(radio, endpoint_url(running), kept.token, door_id)).status == 200
    await link.restore()
    await wait_for(lambda: revocations.is_revoked(kept.jti), "the retained list after the outage")
    assert revocations.version > version

    # The list is kept on disk: a restart with the retained message gone still refuses both.
    await running.stop()
    world.gateways.remove(running)
    async with world.broker.client(unique("wipe")) as client:
        await client.publish(GatewayTopics(gateway_id).revocations, b"", qos=1, retain=True)
    restarted = await start_offline_gateway(gateway_id, doors, state_dir=state_dir)
    for held in (lost, kept):
        answer = await phone.present(radio, endpoint_url(restarted), held.token, door_id)
        assert (answer.status, answer.code) == (403, OfflineRefusal.REVOKED)


async def test_lockdown_holds_offline_too(
    api: ApiHarness,
    world: World,
    start_offline_gateway: StartOffline,
    radio: httpx.AsyncClient,
) -> None:
    gateway_id, doors = await world.add_gateway()
    door_id = next(iter(doors))
    await world.grant(world.citizen_id, building=True)
    running = await start_offline_gateway(gateway_id, doors)
    phone = SimulatedPhone()
    held = await phone.fetch_token(api.client, door_id, api.token_for(world.citizen_id))
    # A lockdown signed by the API reaches the gateway (here handed over directly; the wire
    # path of mode messages is tested in tests/modes).
    publisher = ModePublisher(api.state.relay, api.state.keyring, api.state.settings.issuer)
    message = publisher.sign(gateway_id, 10**12, DesiredMode(lockdown=True), datetime.now(UTC))
    assert await running.gateway.modes.receive(message)

    answer = await phone.present(radio, endpoint_url(running), held.token, door_id)

    assert (answer.status, answer.code) == (403, OfflineRefusal.LOCKDOWN)
    assert running.lock.state(running.channel(door_id)).unlock_count == 0


async def test_the_local_endpoint_speaks_plain_bounded_http(
    api: ApiHarness,
    world: World,
    start_offline_gateway: StartOffline,
    radio: httpx.AsyncClient,
) -> None:
    gateway_id, doors = await world.add_gateway()
    running = await start_offline_gateway(gateway_id, doors)
    url = endpoint_url(running)
    cases = [
        (radio.get(f"{url}/v1/offline-unlock"), 405, "method_not_allowed"),
        (radio.post(f"{url}/v1/elsewhere", json={}), 404, "not_found"),
        (radio.post(f"{url}/v1/offline-unlock", content=b"{not json"), 422, "malformed_request"),
        (radio.post(f"{url}/v1/offline-unlock", json={"token": "x"}), 422, "malformed_request"),
        (
            radio.post(f"{url}/v1/offline-unlock", content=b"x" * 20000),
            413,
            "payload_too_large",
        ),
        (
            radio.post(f"{url}/v1/offline-unlock", json={"token": "a.b.c", "proof": "d.e.f"}),
            401,
            "bad_token",
        ),
    ]
    for request, status, code in cases:
        response = await request
        assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    # Raw HTTP: garbage, two pipelined requests on one connection, HTTP/1.0.
    endpoint = running.gateway.offline.endpoint
    assert endpoint is not None
    host, port = endpoint.address
    garbage = await raw_exchange(host, port, b"HELLO\r\n\r\n")
    assert garbage.startswith(b"HTTP/1.1 422 ")
    assert b"malformed_request" in garbage
    one = (
        b"POST /v1/offline-unlock HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        b"Content-Length: 25\r\n\r\n" + b'{"token":"a","proof":"b"}'
    )
    pipelined = await raw_exchange(host, port, one + one)
    assert pipelined.count(b"HTTP/1.1 401 Unauthorized") == 2
    old_http = await raw_exchange(host, port, one.replace(b"HTTP/1.1", b"HTTP/1.0"))
    assert b"Connection: close" in old_http
    assert running.gateway.actuations == 0
    # Still serving after all that, on the same keep-alive connection pool.
    response = await radio.post(
        f"{url}/v1/offline-unlock", json={"token": uuid.uuid4().hex, "proof": "p"}
    )
    assert response.status_code == 401


async def raw_exchange(host: str, port: int, data: bytes) -> bytes:
    """Send ``data`` on a new connection; everything the endpoint answers within 1 s."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(data)
    await writer.drain()
    received = b""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(1.0):
            while chunk := await reader.read(65536):
                received += chunk
    writer.close()
    return received
