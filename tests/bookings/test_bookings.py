"""The booking API: idempotent versioned PUT, deletion, targets in scope, recipients by user
id or by phone number (claimed when the citizen verifies it), each change audited."""

import asyncio
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from api.access.policy import DenyReason, RuleKind
from api.me.phone_sender import dev_phone_sender
from tests.bookings.support import client_headers
from tests.citizen.helpers import (
    add_building,
    add_owner,
    add_user,
    audit_actions,
    audit_count,
    decide,
    error_code,
    grants_where,
)
from tests.conftest import ApiHarness


def booking(version: int, recipients: list[dict[str, str]], **targets: Any) -> dict[str, Any]:
    now = datetime.now(UTC).replace(microsecond=0)
    return {
        "version": version,
        "valid_from": (now - timedelta(hours=1)).isoformat(),
        "valid_until": (now + timedelta(hours=2)).isoformat(),
        "recipients": recipients,
        **targets,
    }


def grant_ids(grants: list[Any]) -> set[str]:
    return {g.id for g in grants}


async def test_same_version_twice_changes_nothing(api: ApiHarness) -> None:
    headers, client_id, owner = await client_headers(api)
    kari, ola = await add_user(api), await add_user(api)
    building, doors = await add_building(api, owner, doors=2)
    body = booking(3, [{"user_id": kari}, {"user_id": ola}, {"user_id": kari}], doors=doors)

    first = await api.client.put("/v1/bookings/ak-1", json=body, headers=headers)
    assert first.status_code == 201, first.text
    booking_id = first.json()["booking_id"]
    grants_before = await grants_where(api, booking_id=booking_id)
    audits_before = await audit_count(api, booking_id)
    reordered = {**body, "recipients": list(reversed(body["recipients"]))}
    second = await api.client.put("/v1/bookings/ak-1", json=reordered, headers=headers)

    assert second.status_code == 200, second.text
    assert second.json() == first.json()
    assert first.json()["grants"] == 4, "one grant per recipient per door (kari once)"
    assert first.json()["pending_phone_recipients"] == 0
    grants_after = await grants_where(api, booking_id=booking_id)
    assert grant_ids(grants_after) == grant_ids(grants_before)
    assert all(g.revoked_at is None for g in grants_after)
    assert {g.created_by for g in grants_after} == {f"client:{client_id}"}
    assert await audit_count(api, booking_id) == audits_before == 1
    assert await audit_actions(api, booking_id) == [(f"client:{client_id}", "booking.created")]
    decision = await decide(api, ola, doors[1])
    assert (decision.allowed, decision.rule_kind) == (True, RuleKind.BOOKING)
    listed = (await api.client.get("/v1/me/doors", headers=api.token_for(ola))).json()
    vias = {d["via"] for b in listed if b["building_id"] == building for d in b["doors"]}
    assert vias == {"booking"}

    changed = {**body, "recipients": [{"user_id": kari}]}
    conflict = await api.client.put("/v1/bookings/ak-1", json=changed, headers=headers)
    assert (conflict.status_code, error_code(conflict)) == (409, "version_conflict")
    assert conflict.json()["error"]["current_version"] == 3


async def test_a_newer_version_replaces_and_an_older_one_is_refused(api: ApiHarness) -> None:
    headers, _, owner = await client_headers(api)
    kari, ola = await add_user(api), await add_user(api)
    _, (door,) = await add_building(api, owner)
    v1 = await api.client.put(
        "/v1/bookings/ak-2", json=booking(1, [{"user_id": kari}], doors=[door]), headers=headers
    )
    assert v1.status_code == 201
    booking_id = v1.json()["booking_id"]
    assert (await decide(api, kari, door)).allowed

    v2 = await api.client.put(
        "/v1/bookings/ak-2", json=booking(2, [{"user_id": ola}], doors=[door]), headers=headers
    )
    late_v1 = await api.client.put(
        "/v1/bookings/ak-2", json=booking(1, [{"user_id": kari}], doors=[door]), headers=headers
    )

    assert v2.status_code == 200, v2.text
    assert (v2.json()["booking_id"], v2.json()["version"]) == (booking_id, 2)
    assert (await decide(api, kari, door)).reason is DenyReason.REVOKED
    assert (await decide(api, ola, door)).allowed
    assert (late_v1.status_code, error_code(late_v1)) == (409, "stale_version")
    assert late_v1.json()["error"]["current_version"] == 2
    assert (await decide(api, kari, door)).reason is DenyReason.REVOKED
    grants = await grants_where(api, booking_id=booking_id)
    assert sorted((g.user_id == kari, g.revoked_at is None) for g in grants) == [
        (False, True),
        (True, False),
    ]
    assert [a for _, a in await audit_actions(api, booking_id)] == [
        "booking.created",
        "booking.updated",
    ]
    detail = (await api.client.get("/v1/bookings/ak-2", headers=headers)).json()
    assert (detail["version"], detail["recipients"], detail["doors"]) == (
        2,
        [{"user_id": ola, "phone": None}],
        [door],
    )


async def test_deleting_ends_access_and_a_higher_version_restores(api: ApiHarness) -> None:
    headers, _, owner = await client_headers(api)
    kari = await add_user(api)
    building, (door,) = await add_building(api, owner)
    body = booking(5, [{"user_id": kari}], buildings=[building])
    created = await api.client.put("/v1/bookings/ak-3", json=body, headers=headers)
    booking_id = created.json()["booking_id"]
    assert (await decide(api, kari, door)).allowed

    deleted = await api.client.delete("/v1/bookings/ak-3", headers=headers)
    again = await api.client.delete("/v1/bookings/ak-3", headers=headers)

    assert (deleted.status_code, again.status_code) == (204, 204)
    assert (await decide(api, kari, door)).reason is DenyReason.REVOKED
    detail = (await api.client.get("/v1/bookings/ak-3", headers=headers)).json()
    assert (detail["deleted"], detail["grants"]) == (True, 0)
    assert [a for _, a in await audit_actions(api, booking_id)] == [
        "booking.created",
        "booking.deleted",
    ]
    retry = await api.client.put("/v1/bookings/ak-3", json=body, headers=headers)
    assert (retry.status_code, error_code(retry)) == (409, "booking_deleted")
    assert (await decide(api, kari, door)).reason is DenyReason.REVOKED

    restored = await api.client.put(
        "/v1/bookings/ak-3", json={**body, "version": 6}, headers=headers
    )
    assert restored.status_code == 200, restored.text
    assert (restored.json()["deleted"], restored.json()["grants"]) == (False, 1)
    assert (await decide(api, kari, door)).allowed

    missing = await api.client.delete("/v1/bookings/never-made", headers=headers)
    assert (missing.status_code, error_code(missing)) == (404, "booking_not_found")


async def test_a_phone_recipient_gets_access_once_they_verify(api: ApiHarness) -> None:
    headers, _, owner = await client_headers(api)
    phone = f"+479{secrets.randbelow(10**7):07d}"
    _, (door,) = await add_building(api, owner)
    put = await api.client.put(
        "/v1/bookings/ak-4", json=booking(1, [{"phone": phone}], doors=[door]), headers=headers
    )
    assert put.status_code == 201, put.text
    assert (put.json()["grants"], put.json()["pending_phone_recipients"]) == (1, 1)
    citizen = await add_user(api)
    assert (await decide(api, citizen, door)).reason is DenyReason.NO_GRANT
    me = api.token_for(citizen)

    sent = await api.client.post("/v1/me/phone", json={"phone": phone}, headers=me)
    assert sent.status_code == 202
    code = dev_phone_sender(api.state).last_code(phone)
    verified = await api.client.post("/v1/me/phone/verify", json={"code": code}, headers=me)

    assert verified.status_code == 200, verified.text
    assert verified.json()["claimed_grants"] == 1
    decision = await decide(api, citizen, door)
    assert (decision.allowed, decision.rule_kind) == (True, RuleKind.BOOKING)
    detail = (await api.client.get("/v1/bookings/ak-4", headers=headers)).json()
    assert (detail["grants"], detail["pending_phone_recipients"]) == (1, 0)

    # From now on a booking to that number goes straight to the citizen.
    direct = await api.client.put(
        "/v1/bookings/ak-5", json=booking(1, [{"phone": phone}], doors=[door]), headers=headers
    )
    assert direct.json()["pending_phone_recipients"] == 0
    (grant,) = await grants_where(api, booking_id=direct.json()["booking_id"])
    assert (grant.user_id, grant.subject_phone) == (citizen, None)


async def test_targets_outside_the_owner_are_refused_by_name(api: ApiHarness) -> None:
    headers, _, owner = await client_headers(api)
    kari = await add_user(api)
    ours, (our_door,) = await add_building(api, owner)
    theirs, (their_door,) = await add_building(api, await add_owner(api))

    async def refusal(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        response = await api.client.put("/v1/bookings/ak-6", json=body, headers=headers)
        return response.status_code, response.json()["error"]

    status, error = await refusal(
        booking(
            1,
            [{"user_id": kari}],
            doors=[our_door, their_door],
            buildings=[ours, theirs, "bld-nowhere"],
        )
    )
    assert (status, error["code"]) == (422, "target_out_of_scope")
    assert (error["doors"], error["buildings"]) == ([their_door], sorted([theirs, "bld-nowhere"]))
    assert (await decide(api, kari, our_door)).reason is DenyReason.NO_GRANT

    status, error = await refusal(booking(1, [{"user_id": "u-nobody"}], doors=[our_door]))
    assert (status, error["code"], error["user_ids"]) == (422, "unknown_recipient", ["u-nobody"])
    status, error = await refusal(booking(1, [{"user_id": kari}]))
    assert (status, error["code"]) == (422, "no_targets")
    backwards = {
        **booking(1, [{"user_id": kari}], doors=[our_door]),
        "valid_until": "2020-01-01T00:00:00Z",
    }
    assert (await refusal(backwards))[1]["code"] == "invalid_window"
    for bad in (
        booking(1, [], doors=[our_door]),
        booking(1, [{"user_id": kari, "phone": "+4790000000"}], doors=[our_door]),
        booking(1, [{"phone": "90000000"}], doors=[our_door]),
        {**booking(1, [{"user_id": kari}], doors=[our_door]), "valid_from": "2030-01-01T10:00"},
        booking(-1, [{"user_id": kari}], doors=[our_door]),
    ):
        status, error = await refusal(bad)
        assert (status, error["code"]) == (422, "validation_error"), bad
    never = await api.client.get("/v1/bookings/ak-6", headers=headers)
    assert (never.status_code, error_code(never)) == (404, "booking_not_found")


async def test_clients_see_only_their_own_bookings(api: ApiHarness) -> None:
    headers_a, _, owner = await client_headers(api)
    headers_b, _, _ = await client_headers(api, owner)
    kari = await add_user(api)
    _, (door,) = await add_building(api, owner)
    put = await api.client.put(
        "/v1/bookings/shared-id",
        json=booking(1, [{"user_id": kari}], doors=[door]),
        headers=headers_a,
    )
    assert put.status_code == 201

    other = await api.client.get("/v1/bookings/shared-id", headers=headers_b)
    gone = await api.client.delete("/v1/bookings/shared-id", headers=headers_b)
    own = await api.client.put(
        "/v1/bookings/shared-id",
        json=booking(1, [{"user_id": kari}], doors=[door]),
        headers=headers_b,
    )

    assert (other.status_code, error_code(other)) == (404, "booking_not_found")
    assert (gone.status_code, error_code(gone)) == (404, "booking_not_found")
    assert own.status_code == 201, "external ids are per client"
    assert own.json()["booking_id"] != put.json()["booking_id"]


async def test_concurrent_first_puts_create_one_booking(api: ApiHarness) -> None:
    headers, _, owner = await client_headers(api)
    kari = await add_user(api)
    _, (door,) = await add_building(api, owner)
    body = booking(1, [{"user_id": kari}], doors=[door])

    responses = await asyncio.gather(
        *(api.client.put("/v1/bookings/ak-race", json=body, headers=headers) for _ in range(4))
    )

    assert sorted(r.status_code for r in responses) == [200, 200, 200, 201]
    assert len({r.json()["booking_id"] for r in responses}) == 1
    grants = await grants_where(api, booking_id=responses[0].json()["booking_id"])
    assert len(grants) == 1
    assert await audit_count(api, responses[0].json()["booking_id"]) == 1
