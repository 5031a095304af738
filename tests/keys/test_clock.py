"""Clock offset: a gateway reports it in its heartbeat, the API shows whose clock is off."""

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import Any

from api.gateways.service import CLOCK_TOLERANCE_S
from api.identity.models import Role, User
from lock_gateway.keys import KeySet
from tests.conftest import ApiHarness
from tests.keys.helpers import start_gateway
from tests.support import RunningGateway, World, unique

SKEW_S = 30.0


async def test_a_gateway_whose_clock_is_30_s_ahead_is_shown_as_off(
    api: ApiHarness, world: World
) -> None:
    admin = unique("u-adm")
    async with api.state.sessions() as session:
        session.add(User(id=admin, display_name="Admin", roles=[Role.ADMIN]))
        await session.commit()

    async def shown(gateway_id: str) -> dict[str, Any]:
        response = await api.client.get(f"/v1/gateways/{gateway_id}", headers=api.token_for(admin))
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    started: dict[str, RunningGateway] = {}
    for name, skew in (("skewed", SKEW_S), ("punctual", 0.0)):
        gateway_id, doors = await world.add_gateway()
        await world.grant(world.citizen_id, door_id=next(iter(doors)))
        # Frequent heartbeats, so the test need not wait 30 s for the API's own estimate.
        config = dataclasses.replace(world.gateway_config(gateway_id, doors), heartbeat_s=0.2)
        started[name] = await start_gateway(
            world,
            config,
            KeySet.from_jwks(api.state.keyring.jwks()),
            clock=_clock(skew),
        )

    # A token is still accepted 30 s ahead (iat + 30 s lifetime > now - 5 s leeway), and its
    # iat gives the gateway its own estimate.
    for running in started.values():
        door = next(iter(running.doors))
        response = await api.client.post(
            f"/v1/doors/{door}/unlock", headers=api.token_for(world.citizen_id)
        )
        assert response.status_code == 200, response.text

    own = started["skewed"].gateway.clock_offset.estimate()
    assert own is not None
    assert abs(own - SKEW_S) < 2.0

    views: dict[str, dict[str, Any]] = {}

    async def settled() -> bool:
        for name, running in started.items():
            views[name] = await shown(running.gateway.config.gateway_id)
        return all(view["clock_ok"] is not None for view in views.values())

    # The API's own estimate skips each gateway's first status (it may be a retained copy), so
    # it needs a heartbeat or two.
    deadline = time.monotonic() + 10
    while not await settled():
        assert time.monotonic() < deadline, views
        await asyncio.sleep(0.1)

    skewed, punctual = views["skewed"], views["punctual"]
    print(
        f"\nclock offsets shown by the API: skewed gateway {skewed['clock_offset_s']:+.2f} s "
        f"(gateway's own estimate {own:+.2f} s) clock_ok={skewed['clock_ok']}; punctual "
        f"gateway {punctual['clock_offset_s']:+.2f} s clock_ok={punctual['clock_ok']} "
        f"(tolerance {CLOCK_TOLERANCE_S} s)"
    )
    assert skewed["clock_ok"] is False
    assert abs(skewed["clock_offset_s"] - SKEW_S) < 2.0
    assert punctual["clock_ok"] is True
    assert abs(punctual["clock_offset_s"]) <= CLOCK_TOLERANCE_S


def _clock(skew: float) -> Callable[[], float]:
    """The machine's clock, ``skew`` seconds off."""
    return lambda: time.time() + skew
