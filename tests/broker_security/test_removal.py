"""Deleting a gateway through the API removes its broker account on a real mosquitto: the
connected gateway (the real gateway code) is disconnected at once, cannot log in again, and
nothing it left on the broker (retained status, retained mode) outlives it."""

import asyncio
import logging
import time

import pytest

from api.broker_accounts.acl import API_USER, gateway_client_id
from citykey_protocol.topics import GatewayTopics
from tests.broker_security.broker import DynsecMosquitto, connect_result, probe
from tests.broker_security.estate import Estate
from tests.broker_security.test_provisioning import broker_client
from tests.conftest import ApiHarness
from tests.support import unique

WATCH_S = 3.0
"""How long the removed gateway is watched trying to come back (its backoff starts at 0.2 s)."""


async def test_deleting_a_gateway_disconnects_it_for_good(
    secure_api: ApiHarness, dynsec_broker: DynsecMosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    estate = await Estate.create(secure_api, dynsec_broker)
    gateway = await estate.provision()
    topics = GatewayTopics(gateway.gateway_id)
    running = await estate.start(gateway)
    try:
        await secure_api.state.relay.publish_retained(topics.mode, b"a retained mode")
        async with probe(dynsec_broker.address(API_USER), unique("api-watch")) as watch:
            assert await watch.subscribe(topics.status)
            async with asyncio.timeout(5):  # the retained status is there while it lives
                while not watch.received:
                    await asyncio.sleep(0.01)
        await estate.remove_doors(gateway)
        assert running.gateway.connected.is_set()
        caplog.set_level(logging.WARNING, logger="lock_gateway.daemon")
        caplog.clear()

        async def disconnected() -> float:
            # Polls while the DELETE request runs: when did the gateway lose the broker?
            while running.gateway.connected.is_set():
                await asyncio.sleep(0.001)
            return time.perf_counter()

        watcher = asyncio.create_task(disconnected())
        started = time.perf_counter()
        deleted = await secure_api.client.delete(
            f"/v1/gateways/{gateway.gateway_id}", headers=estate.manager
        )
        answered = time.perf_counter() - started
        assert deleted.status_code == 204, deleted.text
        async with asyncio.timeout(5):
            cut = await watcher - started

        # It keeps trying (its reconnect loop with backoff); none of its attempts gets in.
        came_back = False
        deadline = time.monotonic() + WATCH_S
        while time.monotonic() < deadline:
            came_back = came_back or running.gateway.connected.is_set()
            await asyncio.sleep(0.01)
        # What the real gateway saw of its own attempts (it logs each refusal).
        refused = sum(
            "Not authorized" in r.getMessage() and gateway.gateway_id in r.getMessage()
            for r in caplog.records
        )
        direct = await connect_result(
            gateway.address(dynsec_broker), gateway_client_id(gateway.gateway_id)
        )

        print(f"\nDELETE /v1/gateways/{{id}} answered in {answered * 1000:.1f} ms; the gateway's")
        print(f"  connection was closed {cut * 1000:.1f} ms after the request was sent")
        print(
            f"  over the next {WATCH_S:.0f} s it tried to log in again {refused} times, "
            f"all refused; a direct login: {direct}"
        )
        assert not came_back, "the removed gateway got back on the broker"
        assert refused >= 1, "the gateway did not even try to reconnect"
        assert direct.startswith("refused")
        assert await broker_client(dynsec_broker, gateway.gateway_id) is None

        # Nothing of it stays on the broker: no retained status, no retained mode.
        async with probe(dynsec_broker.address(API_USER), unique("api-watch")) as watch:
            assert await watch.subscribe(topics.status)
            leftovers = await watch.quiet(0.5)
        assert leftovers == [], f"retained messages outlived the gateway: {leftovers}"
        assert secure_api.state.relay.gateway_status(gateway.gateway_id) is None
    finally:
        await running.stop()


async def test_a_gateway_created_again_with_the_same_id_inherits_nothing(
    secure_api: ApiHarness, dynsec_broker: DynsecMosquitto
) -> None:
    """Re-registering a removed id issues a new password (the old one stays refused), and the
    new gateway receives no retained mode (say, a lockdown) meant for the removed one."""
    estate = await Estate.create(secure_api, dynsec_broker)
    first = await estate.provision(doors=0)
    topics = GatewayTopics(first.gateway_id)
    await secure_api.state.relay.publish_retained(topics.mode, b"a retained mode")
    client_id = gateway_client_id(first.gateway_id)
    async with probe(first.address(dynsec_broker), client_id) as before:
        assert await before.subscribe(topics.mode)
        await before.wait_for(topics.mode, b"a retained mode")
    deleted = await secure_api.client.delete(
        f"/v1/gateways/{first.gateway_id}", headers=estate.manager
    )
    assert deleted.status_code == 204
    again = await estate.provision(doors=0, gateway_id=first.gateway_id)
    assert (await connect_result(first.address(dynsec_broker), client_id)).startswith("refused")
    async with probe(again.address(dynsec_broker), client_id) as after:
        assert await after.subscribe(topics.mode)
        assert await after.subscribe(topics.commands)
        leftovers = await after.quiet(0.5)
    assert leftovers == [], f"the new gateway inherited: {leftovers}"
