"""Rogue broker clients against a real mosquitto with the dynamic security plugin: a gateway
with a valid login of its own that subscribes to everything, logins without a password or
with a wrong one, wildcard client ids, and a gateway trying to send commands or key sets."""

import asyncio
import secrets
import time

from api.broker_accounts.acl import ADMIN_USER, API_USER, HEALTHCHECK_USER, gateway_client_id
from citykey_protocol import messages
from citykey_protocol.codes import AckResult
from citykey_protocol.topics import KEYSET_TOPIC, GatewayTopics
from tests.broker_security.broker import DynsecMosquitto, connect_result, probe
from tests.broker_security.estate import Estate
from tests.conftest import ApiHarness
from tests.support import unique

COMMANDS = 1_000
IN_FLIGHT = 25


async def test_rogue_gateway_hears_nothing_of_another_gateway_over_1000_commands(
    secure_api: ApiHarness, dynsec_broker: DynsecMosquitto
) -> None:
    estate = await Estate.create(secure_api, dynsec_broker)
    victim, rogue = await estate.provision(), await estate.provision(doors=0)
    running = await estate.start(victim)
    victim_topics, rogue_topics = GatewayTopics(victim.gateway_id), GatewayTopics(rogue.gateway_id)
    try:
        async with probe(rogue.address(dynsec_broker), gateway_client_id(rogue.gateway_id)) as spy:
            attempts = [
                "#",
                "citykey/#",
                victim_topics.commands,
                "citykey/v1/gw/+/cmd",
                victim_topics.mode,
                victim_topics.revocations,
                victim_topics.event_acks,
                f"{victim_topics.base}/ack/+",
                victim_topics.status,
                victim_topics.events,
                "$SYS/#",
                "$CONTROL/#",
                "$CONTROL/dynamic-security/v1/response",
            ]
            granted = {topic: await spy.subscribe(topic) for topic in attempts}
            assert await spy.subscribe(rogue_topics.mode), "its own mode must be granted"
            print("\nrogue gateway's subscriptions (True = granted):")
            for topic, ok in granted.items():
                print(f"  {topic:45} {ok}")

            # The API's own broker session (its relay) sends real unlock commands with
            # signed tokens, as the unlock endpoint does (that whole path, HTTP included, is
            # test_provisioning's); the victim validates each, opens and acks.
            door_id = next(iter(victim.doors))
            relay, minter = secure_api.state.relay, secure_api.state.minter

            async def send_one() -> str:
                token, _ = minter.mint(
                    gateway_id=victim.gateway_id, door_id=door_id, subject="u-sec", seconds=1
                )
                command = messages.UnlockCommand(
                    command_id=unique("cmd"), door=door_id, token=token, reply_to=relay.instance_id
                )
                ack = await relay.send_unlock(victim.gateway_id, command, 5.0)
                return ack.result

            started = time.perf_counter()
            results: list[str] = []
            for _ in range(COMMANDS // IN_FLIGHT):
                results += await asyncio.gather(*(send_one() for _ in range(IN_FLIGHT)))
            took = time.perf_counter() - started
            # A message on the rogue's own topic, sent by the API after the commands: once it
            # is there, anything routed to the rogue before it would be there too.
            marker = b"marker-" + secrets.token_hex(4).encode()
            await secure_api.state.relay.publish_retained(rogue_topics.mode, marker)
            await spy.wait_for(rogue_topics.mode, marker)
            foreign = [
                (t, p) for t, p in await spy.quiet() if (t, p) != (rogue_topics.mode, marker)
            ]
            await secure_api.state.relay.publish_retained(rogue_topics.mode, b"")
        print(
            f"{COMMANDS} commands sent by the API to {victim.gateway_id} in {took:.1f} s "
            f"({results.count(AckResult.UNLOCKED)} acked unlocked, door opened "
            f"{running.gateway.actuations} times)"
        )
        print(f"foreign messages received by the rogue gateway: {len(foreign)}")
        assert not any(granted.values()), f"granted: {[t for t, ok in granted.items() if ok]}"
        assert results.count(AckResult.UNLOCKED) == COMMANDS
        assert running.gateway.actuations == COMMANDS
        assert foreign == []
    finally:
        await running.stop()


async def test_no_login_no_wrong_password_and_no_wildcard_client_id_gets_in(
    secure_api: ApiHarness, dynsec_broker: DynsecMosquitto
) -> None:
    estate = await Estate.create(secure_api, dynsec_broker)
    victim, rogue = await estate.provision(), await estate.provision(doors=0)
    running = await estate.start(victim)
    try:
        victim_id = gateway_client_id(victim.gateway_id)
        rogue_login = rogue.address(dynsec_broker)
        attempts = [
            ("anonymous", dynsec_broker.address(), unique("anon")),
            ("anonymous, client id +", dynsec_broker.address(), "+"),
            ("anonymous, client id #", dynsec_broker.address(), "#"),
            ("anonymous, the victim's client id", dynsec_broker.address(), victim_id),
            ("victim, wrong password", victim.address(dynsec_broker, "wrong"), victim_id),
            ("rogue, wrong password", rogue.address(dynsec_broker, "wrong"), rogue.gateway_id),
            ("rogue, client id gw-#", rogue_login, "gw-#"),
            ("rogue, client id gw-+", rogue_login, "gw-+"),
            ("rogue, client id +", rogue_login, "+"),
            ("rogue, client id #", rogue_login, "#"),
            ("rogue, the victim's client id", rogue_login, victim_id),
            ("rogue, a random client id", rogue_login, unique("any")),
            ("user #", dynsec_broker.address("#", rogue.password), "#"),
            ("user +", dynsec_broker.address("+", rogue.password), "+"),
            ("citykey-api, wrong password", dynsec_broker.address(API_USER, "x"), unique("a")),
            ("citykey-admin, wrong password", dynsec_broker.address(ADMIN_USER, "x"), unique("b")),
            ("healthcheck, wrong password", dynsec_broker.address(HEALTHCHECK_USER, "x"), "hc"),
        ]
        print()
        results = {}
        for label, address, client_id in attempts:
            results[label] = await connect_result(address, client_id)
            print(f"  {label:40} {results[label]}")
        assert all(r.startswith("refused") for r in results.values()), results
        # The victim was never pushed off by a login using its client id.
        assert running.gateway.connected.is_set()
        assert await estate.unlock(next(iter(victim.doors))) == 200
    finally:
        await running.stop()


async def test_a_gateway_cannot_send_commands_key_sets_or_another_gateways_status(
    secure_api: ApiHarness, dynsec_broker: DynsecMosquitto
) -> None:
    estate = await Estate.create(secure_api, dynsec_broker)
    victim, rogue, bystander = (
        await estate.provision(),
        await estate.provision(doors=0),
        await estate.provision(doors=0),
    )
    running = await estate.start(victim)
    victim_topics = GatewayTopics(victim.gateway_id)
    api_login = dynsec_broker.address(API_USER)
    try:
        async with (
            probe(rogue.address(dynsec_broker), gateway_client_id(rogue.gateway_id)) as rogue_c,
            probe(
                bystander.address(dynsec_broker), gateway_client_id(bystander.gateway_id)
            ) as other,
            probe(api_login, unique("api-watch")) as watch,
        ):
            assert await watch.subscribe(f"{victim_topics.base}/ack/+")
            assert await other.subscribe(KEYSET_TOPIC)
            assert await other.subscribe(GatewayTopics(bystander.gateway_id).mode)
            # The API publishes its signed key set, retained, when it starts.
            async with asyncio.timeout(5):
                while not other.received:
                    await asyncio.sleep(0.01)
            [(_, genuine_keys)] = other.received

            def command(reply_to: str) -> bytes:
                return messages.encode(
                    messages.UnlockCommand(
                        command_id=unique("cmd"),
                        door=next(iter(victim.doors)),
                        token="not-a-token",
                        reply_to=reply_to,
                    )
                )

            # Forged by the rogue: a command (the victim would answer it on ack/forged), a key
            # set, and the victim's status.
            forged_keys = b'{"keys":["forged"]}'
            await rogue_c.publish(victim_topics.commands, command("forged"))
            await rogue_c.publish(KEYSET_TOPIC, forged_keys, retain=True)
            offline = messages.GatewayStatus(gateway_id=victim.gateway_id, online=False, ts=1.0)
            await rogue_c.publish(victim_topics.status, messages.encode(offline), retain=True)
            # Sent by the API's user after the forgeries, these reach their readers: markers.
            await watch.publish(victim_topics.commands, command("probe"))
            marker = b"marker-" + secrets.token_hex(4).encode()
            bystander_mode = GatewayTopics(bystander.gateway_id).mode
            await secure_api.state.relay.publish_retained(bystander_mode, marker)
            await other.wait_for(bystander_mode, marker)
            async with asyncio.timeout(5):
                while not any(t.endswith("/ack/probe") for t, _ in watch.received):
                    await asyncio.sleep(0.01)
            acks = [t for t, _ in await watch.quiet()]
            keys = [p for t, p in await other.quiet() if t == KEYSET_TOPIC]
            await secure_api.state.relay.publish_retained(bystander_mode, b"")
        print(f"\nacks the victim sent: {acks}")
        print(f"key sets the bystander gateway received: {len(keys)} (the API's signed one)")
        assert acks == [f"{victim_topics.base}/ack/probe"], "the forged command was delivered"
        assert keys == [genuine_keys], "the forged key set was delivered"
        async with probe(
            bystander.address(dynsec_broker), gateway_client_id(bystander.gateway_id)
        ) as late:
            assert await late.subscribe(KEYSET_TOPIC)
            async with asyncio.timeout(5):
                while not late.received:
                    await asyncio.sleep(0.01)
            assert late.received == [(KEYSET_TOPIC, genuine_keys)], "the retained key set changed"
        assert secure_api.state.relay.gateway_online(victim.gateway_id), "forged status arrived"
        assert running.gateway.actuations == 0
    finally:
        await running.stop()
