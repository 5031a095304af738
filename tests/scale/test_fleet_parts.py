"""The parts that let a fleet of thousands run and be tracked: the simulator's shards and the
status tracker's coalesced writes (against the real PostgreSQL)."""

import time

import pytest
from sqlalchemy import select

from api.gateways.models import Gateway as GatewayRow
from api.gateways.tracker import GatewayStatusTracker
from citykey_protocol.messages import GatewayStatus
from citykey_protocol.transport import BrokerAddress
from firmware_sim.cli import main as sim_main
from firmware_sim.fleet import Fleet, FleetLayout
from lock_gateway.config import GatewayConfig
from lock_gateway.keys import KeySet
from tests.conftest import ApiHarness
from tests.support import World


def test_shards_split_the_layout_without_overlap(broker: BrokerAddress) -> None:
    layout = FleetLayout("shard-gw", gateways=10, doors_per_gateway=2)
    template = GatewayConfig(gateway_id="template", broker=broker, issuer="x", doors={})
    keys = KeySet.from_jwks({"keys": []})
    shards = [set(Fleet(layout, template, keys, shard=(i, 3)).members) for i in range(3)]
    assert sorted(len(s) for s in shards) == [3, 3, 4]
    assert set().union(*shards) == {gid for gid, _ in layout}
    assert sum(len(s) for s in shards) == 10
    with pytest.raises(ValueError, match="shard"):
        Fleet(layout, template, keys, shard=(3, 3))


def test_sim_refuses_bad_counts() -> None:
    with pytest.raises(SystemExit, match="must be >= 1"):
        sim_main(["--gateways", "0"])
    with pytest.raises(SystemExit, match="must be >= 1"):
        sim_main(["--processes", "0"])


async def test_tracker_writes_the_latest_status_of_each_gateway_in_one_go(
    api: ApiHarness, world: World
) -> None:
    ids = [(await world.add_gateway())[0] for _ in range(3)]
    tracker = GatewayStatusTracker(api.state.sessions, flush_s=3600)  # only explicit flushes
    now = time.time()
    for gid in ids:
        await tracker.record(GatewayStatus(gateway_id=gid, online=True, ts=now - 10))
        await tracker.record(GatewayStatus(gateway_id=gid, online=False, ts=now))
    await tracker.record(GatewayStatus(gateway_id=ids[0], online=True, ts=now + 1))
    assert await tracker.flush()
    async with api.state.sessions() as session:
        rows = {
            row.id: row
            for row in await session.scalars(
                select(GatewayRow).where(GatewayRow.id.in_(ids))  # type: ignore[attr-defined]
            )
        }
    assert rows[ids[0]].online is True
    assert rows[ids[1]].online is False
    assert rows[ids[2]].online is False
    seen = rows[ids[1]].last_seen
    assert seen is not None
    assert abs(seen.timestamp() - now) < 0.01
