"""Passage mode end to end: a door schedule, the scheduler's tick, a real gateway holding a
simulated lock unlocked until the window's end, across a restart and under a lockdown."""

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import col, select

from api.audit.models import AuditEvent
from api.modes.scheduler import PassageScheduler
from citykey_protocol.topics import GatewayTopics
from firmware_sim.lock import ChannelState
from tests.conftest import ApiHarness
from tests.modes.conftest import start_gateway, wait_for
from tests.support import World, unique

pytestmark = pytest.mark.usefixtures("clean_modes")

EARLY_S = 0.05
"""A relock may come this much before the window end (timer resolution), never more."""


def window_ending_in(seconds: int, zone: str = "Europe/Oslo") -> tuple[dict[str, Any], int]:
    """A weekly range that opened ten minutes ago and ends ``seconds`` from now (building
    local time), and its end as Unix seconds."""
    end = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=seconds)
    start = end - timedelta(minutes=10)
    local_start, local_end = start.astimezone(ZoneInfo(zone)), end.astimezone(ZoneInfo(zone))
    weekly = {
        "weekday": local_start.weekday(),
        "start": local_start.time().isoformat(),
        "end": local_end.time().isoformat(),  # before start: crosses midnight, still right
    }
    return {"weekly": [weekly]}, int(end.timestamp())


async def put_schedule(
    api: ApiHarness, door_id: str, schedule: dict[str, Any] | None, headers: dict[str, str]
) -> Any:
    return await api.client.put(
        f"/v1/doors/{door_id}/passage-schedule", json={"schedule": schedule}, headers=headers
    )


def relocked_at(channel: ChannelState) -> float:
    return max(ts for ts, kind in channel.history if kind == "locked")


async def test_a_passage_window_holds_the_door_open_until_its_end_then_it_relocks(
    api: ApiHarness,
    world: World,
    manager: dict[str, str],
    scheduler: PassageScheduler,
    tmp_path: Path,
) -> None:
    gateway_id, doors = await world.add_gateway(doors=2)
    held_door, other_door = doors
    running = await start_gateway(world, gateway_id, doors, tmp_path / "gw")
    schedule, until = window_ending_in(3)

    response = await put_schedule(api, held_door, schedule, manager)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["held_now"] is True
    assert datetime.fromisoformat(body["held_until"]).timestamp() == until
    assert gateway_id in await scheduler.tick()
    channel = running.lock.state(doors[held_door])
    await wait_for(lambda: channel.held_until == until, "the door held until the window end")
    assert not channel.locked
    assert running.lock.state(doors[other_door]).locked
    assert gateway_id not in await scheduler.tick()  # nothing changed: nothing sent
    view = (
        await api.client.get(f"/v1/buildings/{world.building_id}/lockdown", headers=manager)
    ).json()
    await wait_for(
        lambda: reported_version(api, gateway_id) == view["mode_version"],
        "the gateway acknowledges the passage mode",
    )

    await wait_for(lambda: channel.locked, "relocked by itself", timeout=until - time.time() + 3)
    assert relocked_at(channel) >= until - EARLY_S
    assert relocked_at(channel) < until + 1.5
    assert gateway_id in await scheduler.tick()  # the window has closed: one message
    assert gateway_id not in await scheduler.tick()
    # The closing message is on its way (QoS 1 to the broker, then to the gateway): wait for it.
    await wait_for(lambda: running.gateway.modes.state.holds == {}, "the gateway drops the hold")

    async with api.state.sessions() as session:
        audit = (
            await session.execute(
                select(AuditEvent).where(
                    col(AuditEvent.door_id) == held_door,
                    col(AuditEvent.action) == "door.passage_schedule_set",
                )
            )
        ).scalar_one()
    assert audit.detail["before"]["passage_schedule"] is None
    assert audit.detail["after"]["passage_schedule"]["weekly"][0]["weekday"] in range(7)


def reported_version(api: ApiHarness, gateway_id: str) -> int | None:
    status = api.state.relay.gateway_status(gateway_id)
    return status.mode_version if status is not None else None


async def test_a_restarted_gateway_holds_until_the_window_end_and_relocks(
    api: ApiHarness,
    world: World,
    manager: dict[str, str],
    scheduler: PassageScheduler,
    tmp_path: Path,
) -> None:
    gateway_id, doors = await world.add_gateway()
    door_id = next(iter(doors))
    first = await start_gateway(world, gateway_id, doors, tmp_path / "gw")
    schedule, until = window_ending_in(4)
    await put_schedule(api, door_id, schedule, manager)
    await scheduler.tick()
    await wait_for(lambda: first.lock.state(1).held_until == until, "held before the restart")

    # Power cut: the daemon goes, the lock hardware forgets, the broker loses the message.
    await first.stop()
    world.gateways.remove(first)
    await first.lock.lock(1)
    async with world.broker.client(unique("wipe")) as client:
        await client.publish(GatewayTopics(gateway_id).mode, b"", qos=1, retain=True)
    second = await start_gateway(world, gateway_id, doors, tmp_path / "gw")

    channel = second.lock.state(1)
    assert channel.held_until == until
    assert not channel.locked
    await wait_for(lambda: channel.locked, "relocked on time", timeout=until - time.time() + 3)
    assert relocked_at(channel) >= until - EARLY_S


async def test_lockdown_overrides_passage_and_lifting_it_holds_the_door_again(
    api: ApiHarness,
    world: World,
    manager: dict[str, str],
    scheduler: PassageScheduler,
    tmp_path: Path,
) -> None:
    gateway_id, doors = await world.add_gateway()
    door_id = next(iter(doors))
    running = await start_gateway(world, gateway_id, doors, tmp_path / "gw")
    schedule, until = window_ending_in(120)
    await put_schedule(api, door_id, schedule, manager)
    await scheduler.tick()
    channel = running.lock.state(1)
    await wait_for(lambda: channel.held_until == until, "held")
    path = f"/v1/buildings/{world.building_id}/lockdown"

    await api.client.post(path, json={"reason": "fire alarm"}, headers=manager)
    await wait_for(lambda: channel.locked, "locked by the lockdown")
    held = await put_schedule(api, door_id, schedule, manager)
    assert held.json()["held_now"] is False  # not during a lockdown
    await scheduler.tick()
    assert channel.locked

    await api.client.delete(path, headers=manager)
    await wait_for(lambda: channel.held_until == until, "held again after the lockdown")

    assert (await put_schedule(api, door_id, None, manager)).json()["schedule"] is None
    await scheduler.tick()
    await wait_for(lambda: channel.locked, "locked once passage mode is removed")


async def test_the_passage_schedule_endpoint_refuses_what_it_must(
    api: ApiHarness, world: World, manager: dict[str, str]
) -> None:
    _, doors = await world.add_gateway()
    door_id = next(iter(doors))
    citizen = api.token_for(world.citizen_id)
    refused = await put_schedule(api, door_id, None, citizen)
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "manager_only")
    missing = await put_schedule(api, unique("no-such-door"), None, manager)
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "door_not_found")
    for bad in (
        {"weekly": [{"weekday": 7, "start": "08:00", "end": "16:00"}]},
        {"weekly": [{"weekday": 0, "start": "25:00", "end": "16:00"}]},
        {"weekly": "always"},
    ):
        response = await put_schedule(api, door_id, bad, manager)
        assert response.status_code == 422, bad
    path = f"/v1/doors/{door_id}/passage-schedule"
    no_body = await api.client.put(path, json={}, headers=manager)
    assert no_body.status_code == 422
