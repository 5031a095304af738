"""The API side of the journal against the real PostgreSQL and Mosquitto: each (gateway, seq)
stored exactly once whatever is delivered twice, gaps flagged, acknowledged for resending and
closed, journal restarts and reused numbers told apart, and the listings managers read."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import pytest
from sqlalchemy import select
from sqlmodel import col

from api.events.models import GatewayEventRecord
from api.events.repository import EventRepository
from api.events.service import EventStore
from api.owners.schemas import encode_cursor
from citykey_protocol import messages
from citykey_protocol.messages import JOURNAL_STARTED_EVENT, EventAck, GatewayEvent
from citykey_protocol.topics import GatewayTopics
from citykey_protocol.transport import BrokerAddress
from tests.conftest import ApiHarness
from tests.journal.support import (
    gaps,
    gateway_audit,
    journal_delivered,
    stored_counts,
    stored_last_seq,
    stored_seqs,
    wait_for,
)
from tests.manage.helpers_org import add_admin, seed_org
from tests.support import World, unique

START = 1_767_225_600_000


class Impostor:
    """Talks to the API as a gateway would, byte for byte, to craft deliveries a real gateway
    only makes under faults: duplicates, gaps, late arrivals."""

    def __init__(self, client: aiomqtt.Client, gateway_id: str) -> None:
        self.client = client
        self.gateway_id = gateway_id
        self.topics = GatewayTopics(gateway_id)
        self.acks: list[EventAck] = []

    def event(self, seq: int, kind: str = "door_opened", **data: Any) -> GatewayEvent:
        return GatewayEvent(
            gateway_id=self.gateway_id,
            kind=kind,
            ts=seq / 1000,
            door=None,
            data=data,
            seq=seq,
        )

    async def send(self, *events: GatewayEvent) -> None:
        for event in events:
            await self.client.publish(self.topics.events, messages.encode(event), qos=1)

    async def ack_after(self, *events: GatewayEvent, timeout: float = 5.0) -> EventAck:
        """Send ``events`` and return the first acknowledgement that covers the last of them
        (or, when the API has a gap, the first one after they were sent)."""
        self.acks.clear()
        await self.send(*events)
        last = events[-1].seq or 0
        await wait_for(
            lambda: any(a.up_to_seq >= last or a.resend for a in self.acks), timeout, "event ack"
        )
        await asyncio.sleep(0.1)  # let a batch split in two acknowledge its second half too
        return self.acks[-1]

    async def listen(self) -> None:
        async for message in self.client.messages:
            if isinstance(message.payload, bytes):
                self.acks.append(messages.event_ack_decoder.decode(message.payload))


@contextlib.asynccontextmanager
async def impostor(broker: BrokerAddress, gateway_id: str) -> AsyncIterator[Impostor]:
    async with broker.client(unique("impostor")) as client:
        fake = Impostor(client, gateway_id)
        await client.subscribe(fake.topics.event_acks, qos=1)
        listener = asyncio.create_task(fake.listen())
        try:
            yield fake
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener


async def stored_events(api: ApiHarness, gateway_id: str) -> list[GatewayEvent]:
    """The stored events of a gateway as the gateway sent them, lowest seq first."""
    async with api.state.sessions() as session:
        rows = await session.execute(
            select(GatewayEventRecord)
            .where(col(GatewayEventRecord.gateway_id) == gateway_id)
            .order_by(col(GatewayEventRecord.seq))
        )
        return [
            GatewayEvent(
                gateway_id=gateway_id,
                kind=r.kind,
                ts=r.ts.timestamp(),
                door=r.door_id,
                data=r.data,
                seq=r.seq,
            )
            for r in rows.scalars().all()
        ]


async def test_a_real_gateway_is_stored_exactly_once_despite_duplicate_deliveries(
    api: ApiHarness, world: World, broker: BrokerAddress
) -> None:
    gateway_id, doors = await world.add_gateway()
    door_id = next(iter(doors))
    await world.grant(world.citizen_id, building=True)
    running = await world.start_gateway(gateway_id, doors)
    response = await api.client.post(
        f"/v1/doors/{door_id}/unlock", json={"seconds": 1}, headers=api.token_for(world.citizen_id)
    )
    assert response.status_code == 200, response.text
    running.lock.open_door(1)
    running.lock.close_door(1)
    await wait_for(lambda: running.lock.state(1).locked, 5, "relock")
    await journal_delivered(api.state.sessions, running.gateway, 10)
    journal = running.gateway.journal
    seqs = list(range(journal.first_seq, journal.last_seq + 1))
    assert await stored_seqs(api.state.sessions, gateway_id) == seqs
    audit_before = [a.action for a in await gateway_audit(api.state.sessions, gateway_id)]
    # (other audited events, such as a key set this test's gateway cannot verify, may join)
    assert {"gateway.journal_started", "gateway.unlock"} <= set(audit_before)
    await running.stop()  # from here on the impostor speaks for it

    # Every stored event delivered twice more, as a broker redelivery or a resend would; then
    # one new event: it is stored after them (one gateway's events go in order), so once it
    # is acknowledged every duplicate has been dealt with.
    replay = await stored_events(api, gateway_id)
    async with impostor(broker, gateway_id) as fake:
        marker = fake.event(journal.last_seq + 1, "door_opened")
        ack = await fake.ack_after(*replay, *replay, marker)
    assert ack == EventAck(gateway_id=gateway_id, up_to_seq=marker.seq or 0, resend=False)
    rows, distinct = await stored_counts(api.state.sessions, gateway_id)
    assert rows == distinct == len(seqs) + 1
    after = [a.action for a in await gateway_audit(api.state.sessions, gateway_id)]
    assert after == audit_before
    assert await gaps(api.state.sessions, gateway_id) == []
    print(
        f"\nexactly once: {len(seqs)} events from a real gateway, then {2 * len(replay)} "
        f"duplicate deliveries: rows {rows}, distinct (gateway, seq) {distinct}, duplicates "
        f"stored {rows - distinct}, audit rows {len(after)} (unchanged)"
    )


async def test_gaps_are_flagged_acknowledged_for_resending_and_closed(
    api: ApiHarness, broker: BrokerAddress
) -> None:
    org = await seed_org(api)
    other = await seed_org(api)
    manager = api.token_for(org.building_manager_id)
    async with impostor(broker, org.gateway_id) as fake:
        first = [fake.event(START, JOURNAL_STARTED_EVENT, first_seq=START)]
        first += [fake.event(START + i) for i in (1, 2)]
        assert await fake.ack_after(*first) == EventAck(
            gateway_id=org.gateway_id, up_to_seq=START + 2
        )

        # START+3 and START+4 never arrived: a gap, and the ack asks for a resend.
        ack = await fake.ack_after(fake.event(START + 5))
        assert (ack.up_to_seq, ack.resend) == (START + 2, True)
        (gap,) = await gaps(api.state.sessions, org.gateway_id)
        assert (gap.from_seq, gap.to_seq, gap.closed_at) == (START + 3, START + 4, None)
        listed = await api.client.get(f"/v1/gateways/{org.gateway_id}/event-gaps", headers=manager)
        assert listed.status_code == 200, listed.text
        body = listed.json()
        assert body["last_seq"] == START + 2
        assert [(g["from_seq"], g["to_seq"], g["missing"]) for g in body["items"]] == [
            (START + 3, START + 4, 2)
        ]

        # Half of it arrives late: still open, still asking.
        ack = await fake.ack_after(fake.event(START + 4))
        assert (ack.up_to_seq, ack.resend) == (START + 2, True)
        # The rest: closed, and the prefix jumps to the end.
        ack = await fake.ack_after(fake.event(START + 3))
        assert (ack.up_to_seq, ack.resend) == (START + 5, False)

    (gap,) = await gaps(api.state.sessions, org.gateway_id)
    assert gap.closed_at is not None
    assert await stored_last_seq(api.state.sessions, org.gateway_id) == START + 5
    closed = await api.client.get(
        f"/v1/gateways/{org.gateway_id}/event-gaps", headers=manager, params={"state": "closed"}
    )
    assert [g["missing"] for g in closed.json()["items"]] == [0]
    still_open = await api.client.get(
        f"/v1/gateways/{org.gateway_id}/event-gaps", headers=manager, params={"state": "open"}
    )
    assert still_open.json()["items"] == []

    # The events listing: newest first, in pages.
    page = await api.client.get(
        f"/v1/gateways/{org.gateway_id}/events", headers=manager, params={"limit": 4}
    )
    assert page.status_code == 200, page.text
    assert [e["seq"] for e in page.json()["items"]] == [START + 5, START + 4, START + 3, START + 2]
    rest = await api.client.get(
        f"/v1/gateways/{org.gateway_id}/events",
        headers=manager,
        params={"limit": 4, "cursor": page.json()["next_cursor"]},
    )
    assert [e["seq"] for e in rest.json()["items"]] == [START + 1, START]
    assert rest.json()["next_cursor"] is None
    started = await api.client.get(
        f"/v1/gateways/{org.gateway_id}/events",
        headers=manager,
        params={"kind": JOURNAL_STARTED_EVENT},
    )
    assert [e["seq"] for e in started.json()["items"]] == [START]

    # Another owner's manager: as if the gateway did not exist.
    stranger = api.token_for(other.manager_id)
    for path in ("events", "event-gaps"):
        refused = await api.client.get(f"/v1/gateways/{org.gateway_id}/{path}", headers=stranger)
        assert refused.status_code == 404
        assert refused.json()["error"]["code"] == "gateway_not_found"
    admin = api.token_for(await add_admin(api))
    assert (
        await api.client.get(f"/v1/gateways/{org.gateway_id}/events", headers=admin)
    ).status_code == 200
    bad = await api.client.get(
        f"/v1/gateways/{org.gateway_id}/events", headers=manager, params={"cursor": "nope"}
    )
    assert bad.status_code == 422
    print(
        f"\ngap {START + 3}..{START + 4} flagged (ack up_to {START + 2}, resend) and closed "
        f"when both arrived late (ack up_to {START + 5})"
    )


def batch(gateway_id: str, seqs: range, kind: str = "door_forced_open") -> list[GatewayEvent]:
    return [
        GatewayEvent(gateway_id=gateway_id, kind=kind, ts=s / 1000, door=None, data={}, seq=s)
        for s in seqs
    ]


async def record(api: ApiHarness, gateway_id: str, events: list[GatewayEvent]) -> Any:
    async with api.state.sessions() as session:
        outcome = await EventStore(session).record_batch(gateway_id, events)
        await session.commit()
        return outcome


async def test_two_api_instances_store_each_event_once(api: ApiHarness) -> None:
    """Every API instance receives every event; the gateway row lock makes them take turns,
    and only the one that inserts an event audits it."""
    org = await seed_org(api)
    events = [
        GatewayEvent(
            gateway_id=org.gateway_id,
            kind=JOURNAL_STARTED_EVENT,
            ts=START / 1000,
            data={"first_seq": START},
            seq=START,
        ),
        *batch(org.gateway_id, range(START + 1, START + 300)),
    ]
    started = time.perf_counter()
    outcomes = await asyncio.gather(*(record(api, org.gateway_id, events) for _ in range(4)))
    elapsed = time.perf_counter() - started
    assert sum(o.inserted for o in outcomes) == 300
    assert sum(o.duplicates for o in outcomes) == 900
    assert all(o.up_to_seq == START + 299 and not o.resend for o in outcomes)
    rows, distinct = await stored_counts(api.state.sessions, org.gateway_id)
    assert rows == distinct == 300
    audit = await gateway_audit(api.state.sessions, org.gateway_id)
    assert len(audit) == 300  # journal_started + 299 forced-open alarms, each once
    assert await gaps(api.state.sessions, org.gateway_id) == []
    print(
        f"\n4 instances x 300 events at once: {rows} rows, {len(audit)} audit rows, "
        f"{sum(o.duplicates for o in outcomes)} duplicates skipped ({elapsed * 1000:.0f} ms)"
    )


async def test_a_gateway_another_transaction_holds_is_skipped_not_waited_for(
    api: ApiHarness,
) -> None:
    """The ingest stores a slice of several gateways in one transaction with ``skip_locked``:
    a gateway row another instance holds is reported skipped with nothing of it stored, the
    others go ahead, and the skipped batch stores normally once the row is free."""
    held, free = await seed_org(api), await seed_org(api)
    held_events = batch(held.gateway_id, range(START, START + 3))
    free_events = batch(free.gateway_id, range(START, START + 3))
    unknown = unique("gw")
    async with api.state.sessions() as holder:
        assert await EventRepository(holder).lock_gateway(held.gateway_id) is not None
        async with api.state.sessions() as session:
            result = await EventStore(session).record_batches(
                {
                    held.gateway_id: held_events,
                    free.gateway_id: free_events,
                    unknown: batch(unknown, range(1, 2)),
                },
                skip_locked={held.gateway_id, free.gateway_id, unknown},
            )
            await session.commit()
        assert result.skipped == {held.gateway_id}  # the unknown one is neither
        assert set(result.outcomes) == {free.gateway_id}
        assert result.outcomes[free.gateway_id].up_to_seq == START + 2
        await holder.rollback()
    assert await stored_seqs(api.state.sessions, held.gateway_id) == []
    assert await stored_seqs(api.state.sessions, free.gateway_id) == [START, START + 1, START + 2]
    outcome = await record(api, held.gateway_id, held_events)
    assert (outcome.inserted, outcome.up_to_seq) == (3, START + 2)


async def test_a_new_journal_continues_without_a_false_gap_and_is_on_record(
    api: ApiHarness,
) -> None:
    org = await seed_org(api)
    old = [
        GatewayEvent(
            gateway_id=org.gateway_id,
            kind=JOURNAL_STARTED_EVENT,
            ts=START / 1000,
            data={"first_seq": START},
            seq=START,
        ),
        *batch(org.gateway_id, range(START + 1, START + 4), "door_opened"),
    ]
    assert (await record(api, org.gateway_id, old)).up_to_seq == START + 3
    # The gateway lost its journal (new SD card) and started a new one an hour later.
    restart = START + 3_600_000
    new = [
        GatewayEvent(
            gateway_id=org.gateway_id,
            kind=JOURNAL_STARTED_EVENT,
            ts=restart / 1000,
            data={"first_seq": restart},
            seq=restart,
        ),
        *batch(org.gateway_id, range(restart + 1, restart + 3), "door_opened"),
    ]
    outcome = await record(api, org.gateway_id, new)
    assert (outcome.up_to_seq, outcome.resend, outcome.gaps_opened) == (restart + 2, False, 0)
    assert await gaps(api.state.sessions, org.gateway_id) == []
    starts = [
        a
        for a in await gateway_audit(api.state.sessions, org.gateway_id)
        if a.action == "gateway.journal_started"
    ]
    assert [a.detail.get("previous_last_seq") for a in starts] == [0, START + 3]


async def test_a_reused_number_is_a_conflict_not_a_duplicate(api: ApiHarness) -> None:
    org = await seed_org(api)
    first = [
        GatewayEvent(
            gateway_id=org.gateway_id,
            kind=JOURNAL_STARTED_EVENT,
            ts=START / 1000,
            data={"first_seq": START},
            seq=START,
        ),
        *batch(org.gateway_id, range(START + 1, START + 3), "door_opened"),
    ]
    await record(api, org.gateway_id, first)
    impostor_event = GatewayEvent(
        gateway_id=org.gateway_id, kind="tamper", ts=START / 1000 + 99, data={}, seq=START + 1
    )
    outcome = await record(api, org.gateway_id, [impostor_event, *first[2:]])
    assert (outcome.inserted, outcome.duplicates, outcome.conflicts) == (0, 2, 1)
    stored = await stored_events(api, org.gateway_id)
    assert stored[1].kind == "door_opened"  # the first event keeps its number
    audit = await gateway_audit(api.state.sessions, org.gateway_id)
    assert audit[-1].action == "gateway.seq_conflict"
    assert audit[-1].detail == {"count": 1, "seqs": [START + 1]}


async def test_unjournaled_foreign_and_unknown_events_are_not_stored(api: ApiHarness) -> None:
    org = await seed_org(api)
    assert await record(api, "gw-nobody-knows", batch("gw-nobody-knows", range(1, 3))) is None
    mixed = [
        GatewayEvent(gateway_id=org.gateway_id, kind="door_opened", ts=1.0),  # no seq
        *batch("another-gateway", range(START, START + 2)),  # not this gateway's
        *batch(org.gateway_id, range(0, 1)),  # seq 0 is not a journal number
    ]
    outcome = await record(api, org.gateway_id, mixed)
    assert (outcome.inserted, outcome.up_to_seq) == (0, 0)
    assert await stored_counts(api.state.sessions, org.gateway_id) == (0, 0)


@pytest.mark.parametrize("size", [20_000])
async def test_oversized_event_data_is_stored_as_a_note(api: ApiHarness, size: int) -> None:
    org = await seed_org(api)
    event = GatewayEvent(
        gateway_id=org.gateway_id,
        kind="tamper",
        ts=START / 1000,
        data={"blob": "x" * size},
        seq=START,
    )
    assert (await record(api, org.gateway_id, [event])).inserted == 1
    (stored,) = await stored_events(api, org.gateway_id)
    assert stored.data == {"truncated": True, "bytes": size + 12}


@pytest.mark.parametrize("raw", ["99999999999999999999999", "²", "-1", "1.5"])
async def test_forged_cursors_are_refused(api: ApiHarness, raw: str) -> None:
    org = await seed_org(api)
    admin = api.token_for(await add_admin(api))
    for path in ("events", "event-gaps"):
        response = await api.client.get(
            f"/v1/gateways/{org.gateway_id}/{path}",
            headers=admin,
            params={"cursor": encode_cursor(raw)},
        )
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "invalid_cursor"
