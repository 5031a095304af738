"""The audit query and CSV export over the real API and PostgreSQL: scope (managers see their
buildings' rows only), filters, pagination that stays stable while rows are added."""

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from api.audit.models import AuditEvent
from api.audit.schemas import CSV_COLUMNS
from tests.conftest import ApiHarness
from tests.manage.helpers_org import Org, add_admin, all_pages, error_code, seed_org
from tests.support import unique

T0 = datetime(2029, 3, 1, 12, 0, tzinfo=UTC)


async def add_rows(api: ApiHarness, *rows: AuditEvent) -> list[int]:
    async with api.state.sessions() as session:
        session.add_all(rows)
        await session.commit()
    return [r.id for r in rows if r.id is not None]


def unlock_row(actor: str, org: Org | None, minutes: int, decision: str = "allow") -> AuditEvent:
    return AuditEvent(
        ts=T0 + timedelta(minutes=minutes),
        actor=actor,
        action="unlock.requested",
        building_id=org.building_id if org else None,
        door_id=org.door_id if org else None,
        gateway_id=org.gateway_id if org else None,
        decision=decision,
        reason="no_grant" if decision == "deny" else None,
        command_id=unique("cmd"),
    )


async def query(api: ApiHarness, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    return await all_pages(api.client, "/v1/audit", headers, limit=2, params=params)


async def test_managers_see_only_their_buildings_rows(api: ApiHarness) -> None:
    a, b = await seed_org(api), await seed_org(api)
    actor = unique("u-cit")
    ids = await add_rows(
        api,
        unlock_row(actor, a, 0),
        unlock_row(actor, b, 1),
        unlock_row(actor, None, 2),
        unlock_row(actor, a, 3, "deny"),
    )
    a_rows, b_row, orphan, a_deny = ids

    admin = api.token_for(await add_admin(api))
    assert [r["id"] for r in await query(api, admin, actor=actor)] == [
        a_deny,
        orphan,
        b_row,
        a_rows,
    ]
    for manager in (a.manager_id, a.building_manager_id):
        headers = api.token_for(manager)
        rows = await query(api, headers, actor=actor)
        assert [r["id"] for r in rows] == [a_deny, a_rows]
        assert await query(api, headers, actor=actor, building_id=b.building_id) == []
        assert await query(api, headers, door_id=b.door_id) == []

    first = (await query(api, admin, actor=actor))[-1]
    assert first["building_id"] == a.building_id
    assert first["door_id"] == a.door_id
    assert first["decision"] == "allow"
    assert datetime.fromisoformat(first["ts"]) == T0


async def test_filters(api: ApiHarness) -> None:
    org = await seed_org(api)
    actor = unique("u-cit")
    ids = await add_rows(
        api, *(unlock_row(actor, org, m, "deny" if m % 2 else "allow") for m in range(6))
    )
    headers = api.token_for(org.manager_id)

    denied = await query(api, headers, actor=actor, decision="deny")
    assert [r["id"] for r in denied] == [ids[5], ids[3], ids[1]]
    window = await query(
        api,
        headers,
        actor=actor,
        **{"from": (T0 + timedelta(minutes=2)).isoformat()},
        to=(T0 + timedelta(minutes=4)).isoformat().replace("+00:00", ""),  # naive = UTC
    )
    assert [r["id"] for r in window] == [ids[3], ids[2]]  # 'to' is exclusive
    by_door = await query(api, headers, door_id=org.door_id, action="unlock.requested")
    assert [r["id"] for r in by_door] == list(reversed(ids))
    assert await query(api, headers, actor=actor, action="door.updated") == []

    for bad in (
        {"decision": "maybe"},
        {"from": "yesterday"},
        {"from": "2029-03-02T00:00:00", "to": "2029-03-01T00:00:00"},
        {"cursor": "%%%"},
        {"limit": 0},
    ):
        response = await api.client.get("/v1/audit", params=bad, headers=headers)
        assert response.status_code == 422, bad
    inverted = await api.client.get(
        "/v1/audit", params={"from": "2029-03-02", "to": "2029-03-01"}, headers=headers
    )
    assert error_code(inverted) == "invalid_range"


async def test_pages_stay_stable_while_rows_are_added(api: ApiHarness) -> None:
    org = await seed_org(api)
    actor = unique("u-cit")
    old = await add_rows(api, *(unlock_row(actor, org, m) for m in range(5)))
    headers = api.token_for(org.building_manager_id)

    page1 = (await api.client.get(f"/v1/audit?actor={actor}&limit=2", headers=headers)).json()
    assert [r["id"] for r in page1["items"]] == [old[4], old[3]]
    await add_rows(api, *(unlock_row(actor, org, 10 + m) for m in range(3)))
    seen = [r["id"] for r in page1["items"]]
    cursor = page1["next_cursor"]
    while cursor:
        page = (
            await api.client.get(
                "/v1/audit", params={"actor": actor, "limit": 2, "cursor": cursor}, headers=headers
            )
        ).json()
        seen += [r["id"] for r in page["items"]]
        cursor = page["next_cursor"]
    assert seen == list(reversed(old))


async def test_changes_made_through_the_api_are_queryable(api: ApiHarness) -> None:
    org = await seed_org(api)
    manager = api.token_for(org.manager_id)
    await api.client.patch(f"/v1/doors/{org.door_id}", json={"enabled": False}, headers=manager)
    rows = await query(
        api, api.token_for(org.building_manager_id), door_id=org.door_id, action="door.updated"
    )
    assert len(rows) == 1
    assert rows[0]["actor"] == org.manager_id
    assert rows[0]["detail"]["target"] == {"type": "door", "id": org.door_id}
    assert rows[0]["detail"]["before"]["enabled"] is True
    assert rows[0]["detail"]["after"]["enabled"] is False


async def test_csv_export(api: ApiHarness) -> None:
    a, b = await seed_org(api), await seed_org(api)
    actor = unique("u-cit")
    formula = AuditEvent(
        ts=T0,
        actor=actor,
        action="unlock.completed",
        building_id=a.building_id,
        door_id=a.door_id,
        gateway_id=a.gateway_id,
        decision="allow",
        result="device_error",
        reason='=HYPERLINK("http://evil")',
        latency_ms=12.5,
        detail={"rule_id": "grt_1", "note": 'æøå, "quoted"'},
    )
    ids = await add_rows(api, formula, unlock_row(actor, b, 1), unlock_row(actor, a, 2, "deny"))

    response = await api.client.get(
        "/v1/audit.csv", params={"actor": actor}, headers=api.token_for(a.manager_id)
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(response.text)))
    assert list(table[0].keys()) == [
        "id",
        "ts",
        "actor",
        "action",
        "building_id",
        "door_id",
        "gateway_id",
        "decision",
        "reason",
        "result",
        "command_id",
        "latency_ms",
        "detail",
    ]
    assert [int(row["id"]) for row in table] == [ids[2], ids[0]]
    last = table[1]
    assert last["reason"] == '\'=HYPERLINK("http://evil")'
    assert last["latency_ms"] == "12.5"
    assert last["command_id"] == ""
    assert datetime.fromisoformat(last["ts"]) == T0
    assert json.loads(last["detail"]) == {"rule_id": "grt_1", "note": 'æøå, "quoted"'}

    admin_csv = await api.client.get(
        "/v1/audit.csv", params={"actor": actor}, headers=api.token_for(await add_admin(api))
    )
    assert len(list(csv.DictReader(io.StringIO(admin_csv.text)))) == 3
    empty = await api.client.get(
        "/v1/audit.csv", params={"actor": unique("nobody")}, headers=api.token_for(a.manager_id)
    )
    assert empty.text.strip() == ",".join(CSV_COLUMNS)
