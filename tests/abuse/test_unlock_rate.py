"""Per-citizen, per-door unlock rate limit through the real API, gateway and broker, with two
API instances sharing one budget through PostgreSQL."""

import asyncio

from sqlalchemy import func, select
from sqlmodel import col

from api.audit.models import AuditEvent
from api.settings import Settings
from tests.abuse.support import instance
from tests.conftest import ApiHarness
from tests.support import World


async def test_eleventh_unlock_in_a_minute_is_refused_across_two_instances(
    api: ApiHarness, world: World, settings: Settings
) -> None:
    assert settings.unlock_rate_per_minute == 10  # the default
    gateway_id, doors = await world.add_gateway(doors=2)
    door, other_door = doors
    await world.grant(world.citizen_id, building=True)
    await world.grant(world.stranger_id, building=True)
    await world.start_gateway(gateway_id, doors)
    citizen = api.token_for(world.citizen_id)
    async with instance(settings) as second:
        async with asyncio.timeout(10):
            while not second.state.relay.gateway_online(gateway_id):
                await asyncio.sleep(0.01)
        clients = [api.client, second.client()]
        statuses = [
            (await clients[i % 2].post(f"/v1/doors/{door}/unlock", headers=citizen)).status_code
            for i in range(10)
        ]
        assert statuses == [200] * 10

        refused = [await c.post(f"/v1/doors/{door}/unlock", headers=citizen) for c in clients]
        for response in refused:
            assert response.status_code == 429, response.text
            body = response.json()["error"]
            assert body["code"] == "rate_limited"
            retry_after = int(response.headers["Retry-After"])
            assert 1 <= retry_after <= 60
            assert body["retry_after_s"] == retry_after

        # Per door and per citizen: the other door, and another citizen, still open.
        other = await api.client.post(f"/v1/doors/{other_door}/unlock", headers=citizen)
        assert other.status_code == 200, other.text
        stranger = api.token_for(world.stranger_id)
        assert (
            await api.client.post(f"/v1/doors/{door}/unlock", headers=stranger)
        ).status_code == 200

    async with api.state.sessions() as session:
        audited = (
            await session.execute(
                select(func.count())
                .select_from(AuditEvent)
                .where(
                    col(AuditEvent.door_id) == door,
                    col(AuditEvent.actor) == world.citizen_id,
                    col(AuditEvent.action).in_(("unlock.requested", "unlock.completed")),
                )
            )
        ).scalar()
    assert audited == 20  # requested + completed for each of the 10; a 429 writes nothing
    print(
        f"\nunlock rate limit: 10 unlocks of one door over 2 API instances -> 200; the 11th on "
        f"either instance -> 429 rate_limited, Retry-After {retry_after} s; other door and other "
        "citizen unaffected"
    )


async def test_unknown_door_leaves_no_limit_row(api: ApiHarness, world: World) -> None:
    from api.limits.models import RateLimitBucket

    response = await api.client.post(
        "/v1/doors/no-such-door/unlock", headers=api.token_for(world.citizen_id)
    )
    assert response.status_code == 404
    async with api.state.sessions() as session:
        row = await session.get(RateLimitBucket, f"unlock:{world.citizen_id}:no-such-door")
    assert row is None  # rolled back with the request: random door ids cannot fill the table
