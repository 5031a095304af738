"""Door alarms from the simulated lock reach a building manager: through the real gateway's
journal, the real broker and the API, each alarm shows in the door's status, in the audit log
and in the gateway's event listing."""

import time
from typing import Any

from api.identity.models import Role
from api.owners.models import ManagerScope
from tests.conftest import ApiHarness
from tests.journal.support import journal_delivered, start_gateway, stop_gateway, wait_for
from tests.manage.helpers_org import add_user
from tests.support import World, unique

HELD_OPEN_AFTER_S = 0.3


async def building_manager(api: ApiHarness, building_id: str) -> dict[str, str]:
    manager_id = await add_user(api, "u-mgr", Role.MANAGER)
    async with api.state.sessions() as session:
        session.add(ManagerScope(id=unique("msc"), user_id=manager_id, building_id=building_id))
        await session.commit()
    return api.token_for(manager_id)


async def test_every_alarm_reaches_door_status_audit_and_events(
    api: ApiHarness, world: World
) -> None:
    gateway_id, doors = await world.add_gateway()
    door_id = next(iter(doors))
    await world.grant(world.citizen_id, building=True)
    manager = await building_manager(api, world.building_id)
    gateway, lock, task = start_gateway(
        world, gateway_id, doors, lock=None, heartbeat_s=30.0, journal_resend_s=2.0
    )
    lock.held_open_after_s = HELD_OPEN_AFTER_S
    await wait_for(lambda: api.state.relay.gateway_online(gateway_id), 10, "gateway online")
    heartbeat = api.state.relay.gateway_status(gateway_id)
    assert heartbeat is not None
    assert heartbeat.journal_fill is not None  # reported in every heartbeat
    figures: list[str] = []

    async def status() -> dict[str, Any]:
        response = await api.client.get(f"/v1/doors/{door_id}/status", headers=manager)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def shows(what: str, **expected: Any) -> None:
        started = time.monotonic()
        last: dict[str, Any] = {}

        async def matches() -> bool:
            nonlocal last
            last = await status()
            return all(last[k] == v for k, v in expected.items())

        try:
            await wait_for(matches, 5, what)
        except AssertionError:
            raise AssertionError(f"{what}: status never showed {expected}; last {last}") from None
        figures.append(f"{what}: in door status after {(time.monotonic() - started) * 1000:.0f} ms")

    try:
        # Forced open: the door opened while the lock was locked.
        lock.open_door(1)
        await shows("forced open", door_state="open", alarms=["forced_open"])
        lock.close_door(1)
        await shows("forced open cleared", door_state="closed", alarms=[])

        # Held open: unlocked, opened, left open past the limit.
        unlocked = await api.client.post(
            f"/v1/doors/{door_id}/unlock",
            json={"seconds": 1},
            headers=api.token_for(world.citizen_id),
        )
        assert unlocked.status_code == 200, unlocked.text
        lock.open_door(1)
        await shows("held open", door_state="open", alarms=["held_open"])
        lock.close_door(1)
        await shows("held open cleared", door_state="closed", alarms=[])
        await wait_for(lambda: lock.state(1).locked, 5, "relock")

        # Jammed: the bolt does not move when an unlock is tried.
        lock.jam(1)
        jammed = await api.client.post(
            f"/v1/doors/{door_id}/unlock",
            json={"seconds": 1},
            headers=api.token_for(world.citizen_id),
        )
        assert jammed.status_code == 409, jammed.text
        await shows("jammed", lock_state="jammed", alarms=["jammed"])
        lock.jam(1, False)

        # Tamper, and back to normal.
        lock.tamper(1)
        await shows("tamper", alarms=["jammed", "tamper"])
        lock.tamper(1, active=False)
        await shows("tamper cleared", alarms=["jammed"])

        # Low battery, then a fresh battery.
        lock.battery(1, 12)
        await shows("low battery", battery_pct=12, alarms=["jammed", "low_battery"])
        lock.battery(1, 95)
        await shows("battery replaced", battery_pct=95, alarms=["jammed"])
        await journal_delivered(api.state.sessions, gateway, 10)
    finally:
        await stop_gateway(gateway, task)

    # The audit log, as the manager reads it.
    response = await api.client.get(
        "/v1/audit", headers=manager, params={"building_id": world.building_id, "limit": 200}
    )
    assert response.status_code == 200, response.text
    rows = [r for r in response.json()["items"] if r["gateway_id"] == gateway_id]
    by_action: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_action.setdefault(row["action"], []).append(row)
    for action in (
        "gateway.door_forced_open",
        "gateway.held_open",
        "gateway.jammed",
        "gateway.tamper",
        "gateway.battery",
        "gateway.unlock",
    ):
        assert action in by_action, f"no {action} in the audit log: {sorted(by_action)}"
        assert all(r["door_id"] == door_id for r in by_action[action])
    held = [r["detail"]["data"]["active"] for r in reversed(by_action["gateway.held_open"])]
    assert held == [True, False]
    assert [r["detail"]["data"]["pct"] for r in by_action["gateway.battery"]] == [12]  # low only
    results = sorted(r["result"] for r in by_action["gateway.unlock"])
    assert results == ["jammed", "unlocked"]
    assert all(r["actor"] == world.citizen_id for r in by_action["gateway.unlock"])
    # Plain state changes are not audited (door_status and the event listing have them).
    assert not {"gateway.door_opened", "gateway.door_closed", "gateway.locked"} & set(by_action)

    # The gateway's event listing has every one, in journal order.
    events = await api.client.get(
        f"/v1/gateways/{gateway_id}/events", headers=manager, params={"limit": 200}
    )
    assert events.status_code == 200, events.text
    kinds = [e["kind"] for e in reversed(events.json()["items"])]
    for kind in ("door_forced_open", "held_open", "jammed", "tamper", "battery", "unlock"):
        assert kind in kinds
    seqs = [e["seq"] for e in events.json()["items"]]
    assert seqs == list(range(seqs[0], seqs[0] - len(seqs), -1))  # gapless
    print("\n" + "\n".join(figures))
    print(f"audit rows from this gateway's events: {len(rows)}; events listed: {len(seqs)}")
    print(sorted((a, len(r)) for a, r in by_action.items()))
