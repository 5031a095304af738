"""Door status: a real gateway with a simulated lock reports through Mosquitto; the recorder
writes door_status in PostgreSQL; the endpoint shows it. Plus the state rules one by one."""

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from api.buildings.models import DoorStatus
from api.buildings.status import DoorStatusRecorder, apply_event
from citykey_protocol.messages import GatewayEvent
from tests.conftest import ApiHarness
from tests.manage.helpers_org import add_admin, error_code, seed_org
from tests.support import World

AT = datetime(2030, 1, 1, tzinfo=UTC)


async def wait_for_status(
    api: ApiHarness, door_id: str, headers: dict[str, str], **expected: Any
) -> dict[str, Any]:
    """Poll the status endpoint until it shows ``expected`` (bounded)."""
    body: dict[str, Any] = {}
    try:
        async with asyncio.timeout(5):
            while True:
                response = await api.client.get(f"/v1/doors/{door_id}/status", headers=headers)
                assert response.status_code == 200, response.text
                body = response.json()
                if all(body[k] == v for k, v in expected.items()):
                    return body
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"status never showed {expected}; last {body}") from None


async def test_status_follows_the_real_door(api: ApiHarness, world: World) -> None:
    admin = api.token_for(await add_admin(api))
    gateway_id, doors = await world.add_gateway()
    door_id = next(iter(doors))

    before = await api.client.get(f"/v1/doors/{door_id}/status", headers=admin)
    assert before.json() == {
        "door_id": door_id,
        "gateway_id": gateway_id,
        "online": False,
        "lock_state": None,
        "door_state": None,
        "battery_pct": None,
        "alarms": [],
        "last_event": None,
        "last_event_at": None,
    }

    gateway = await world.start_gateway(gateway_id, doors)
    assert (await api.client.get(f"/v1/doors/{door_id}/status", headers=admin)).json()["online"]

    # Opened while locked: forced open.
    gateway.lock.open_door(1)
    forced = await wait_for_status(
        api,
        door_id,
        admin,
        door_state="open",
        alarms=["forced_open"],
        last_event="door_forced_open",
    )
    assert forced["last_event_at"] is not None
    gateway.lock.close_door(1)
    await wait_for_status(api, door_id, admin, door_state="closed", alarms=[])

    await gateway.lock.unlock(1, 0.3)
    # The lock relocks by itself; both reports arrive.
    await wait_for_status(api, door_id, admin, lock_state="locked", last_event="locked")
    history = [kind for _, kind in gateway.lock.state(1).history]
    assert history[-2:] == ["unlocked", "locked"]

    gateway.lock.jam(1)
    with pytest.raises(Exception, match="jammed"):
        await gateway.lock.unlock(1, 1)
    await wait_for_status(api, door_id, admin, lock_state="jammed", alarms=["jammed"])


async def test_status_is_scoped(api: ApiHarness) -> None:
    a, b = await seed_org(api), await seed_org(api)
    mine = await api.client.get(
        f"/v1/doors/{a.door_id}/status", headers=api.token_for(a.building_manager_id)
    )
    assert mine.status_code == 200
    theirs = await api.client.get(
        f"/v1/doors/{b.door_id}/status", headers=api.token_for(a.building_manager_id)
    )
    assert theirs.status_code == 404
    assert error_code(theirs) == "door_not_found"


async def test_recorder_ignores_foreign_doors_and_stale_events(api: ApiHarness) -> None:
    org = await seed_org(api)
    recorder = DoorStatusRecorder(api.state.sessions)
    now = time.time()

    def event(kind: str, ts: float, gateway_id: str = org.gateway_id, **data: Any) -> GatewayEvent:
        return GatewayEvent(gateway_id=gateway_id, kind=kind, ts=ts, door=org.door_id, data=data)

    async def status() -> DoorStatus | None:
        async with api.state.sessions() as session:
            return await session.get(DoorStatus, org.door_id)

    # Another gateway may not speak for this door.
    await recorder.record(event("door_forced_open", now, gateway_id="gw-impostor"))
    assert await status() is None

    await recorder.record(event("door_opened", now))
    await recorder.record(event("door_closed", now - 5))  # older: arrived late, ignored
    current = await status()
    assert current is not None
    assert current.door_state == "open"

    # Concurrent events of one door apply in arrival order.
    await asyncio.gather(
        recorder.record(event("battery", now + 1, pct=12)),
        recorder.record(event("tamper", now + 2)),
        recorder.record(event("door_closed", now + 3)),
    )
    current = await status()
    assert current is not None
    assert (current.door_state, current.battery_pct, current.alarms) == (
        "closed",
        12,
        ["low_battery", "tamper"],
    )
    assert current.last_event == "door_closed"
    # Unknown doors and gateway-level events are dropped without error.
    await recorder.record(GatewayEvent(gateway_id=org.gateway_id, kind="locked", ts=now))
    await recorder.record(
        GatewayEvent(gateway_id=org.gateway_id, kind="locked", ts=now, door="no-such-door")
    )


def fresh() -> DoorStatus:
    return DoorStatus(door_id="d", alarms=[])


@pytest.mark.parametrize(
    ("events", "lock", "door", "alarms"),
    [
        ([("unlocked", {})], "unlocked", None, []),
        ([("jammed", {}), ("locked", {})], "locked", None, []),
        ([("jammed", {})], "jammed", None, ["jammed"]),
        ([("door_opened", {})], None, "open", []),
        ([("door_forced_open", {})], None, "open", ["forced_open"]),
        ([("held_open", {})], None, "open", ["held_open"]),
        ([("door_forced_open", {}), ("held_open", {}), ("door_closed", {})], None, "closed", []),
        ([("held_open", {}), ("held_open", {"active": False})], None, "open", []),
        ([("tamper", {})], None, None, ["tamper"]),
        ([("tamper", {}), ("tamper", {"active": False})], None, None, []),
        ([("battery", {"pct": 19})], None, None, ["low_battery"]),
        ([("battery", {"pct": 19}), ("battery", {"pct": 20})], None, None, []),
        ([("battery", {"pct": "low"}), ("battery", {"pct": True})], None, None, []),
        ([("battery", {"pct": 101})], None, None, []),
        ([("firmware_update", {})], None, None, []),
    ],
)
def test_event_rules(
    events: list[tuple[str, dict[str, Any]]], lock: str | None, door: str | None, alarms: list[str]
) -> None:
    status = fresh()
    for kind, data in events:
        apply_event(status, kind, data, AT)
    assert (status.lock_state, status.door_state, status.alarms) == (lock, door, alarms)
    assert status.last_event == events[-1][0]
    assert status.last_event_at == AT


def test_battery_level_is_kept() -> None:
    status = fresh()
    apply_event(status, "battery", {"pct": 64}, AT)
    apply_event(status, "battery", {"pct": "bad"}, AT)
    assert status.battery_pct == 64
