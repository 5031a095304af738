"""Booking clients (managed by managers) and their OAuth client-credentials tokens; neither
kind of token works where the other belongs."""

import base64
import time
from typing import Any

import jwt

from api.bookings.models import BookingClient
from api.bookings.tokens import KEY_FILE, ClientTokens
from api.keys.keyring import read_private_key
from tests.bookings.support import client_for, form, token_for_client
from tests.citizen.helpers import (
    add_building,
    add_manager,
    add_owner,
    add_user,
    audit_actions,
    error_code,
    grants_where,
)
from tests.conftest import ApiHarness


async def test_managers_of_the_owner_manage_its_clients(api: ApiHarness) -> None:
    owner, other_owner = await add_owner(api), await add_owner(api)
    manager = await add_manager(api, owner)
    outsider = await add_manager(api, other_owner)
    citizen = await add_user(api)
    body = {"owner_id": owner, "name": "Aktiv Kommune"}

    created = await api.client.post(
        "/v1/booking-clients", json=body, headers=api.token_for(manager)
    )
    foreign = await api.client.post(
        "/v1/booking-clients", json=body, headers=api.token_for(outsider)
    )
    forbidden = await api.client.post(
        "/v1/booking-clients", json=body, headers=api.token_for(citizen)
    )

    assert created.status_code == 201, created.text
    assert created.headers["cache-control"] == "no-store"
    client = created.json()
    assert client["client_secret"].startswith("cks_")
    assert (foreign.status_code, error_code(foreign)) == (404, "owner_not_found")
    assert (forbidden.status_code, error_code(forbidden)) == (403, "manager_only")
    async with api.state.sessions() as session:
        row = await session.get(BookingClient, client["client_id"])
        assert row is not None
        assert row.secret_hash.startswith("scrypt$16384$8$1$")
        assert client["client_secret"] not in row.secret_hash
    assert await audit_actions(api, client["client_id"]) == [(manager, "booking_client.created")]

    listed = await api.client.get(
        f"/v1/booking-clients?owner_id={owner}", headers=api.token_for(manager)
    )
    assert [c["client_id"] for c in listed.json()["items"]] == [client["client_id"]]
    assert "client_secret" not in listed.json()["items"][0]
    mine = await api.client.get("/v1/booking-clients", headers=api.token_for(manager))
    assert [c["client_id"] for c in mine.json()["items"]] == [client["client_id"]]
    hidden = await api.client.get(
        f"/v1/booking-clients?owner_id={owner}", headers=api.token_for(outsider)
    )
    assert (hidden.status_code, error_code(hidden)) == (404, "owner_not_found")
    not_theirs = await api.client.delete(
        f"/v1/booking-clients/{client['client_id']}", headers=api.token_for(outsider)
    )
    assert (not_theirs.status_code, error_code(not_theirs)) == (404, "booking_client_not_found")


async def test_token_by_form_or_basic_and_what_is_refused(api: ApiHarness) -> None:
    client_id, secret, _ = await client_for(api)

    by_form = await api.client.post(
        "/v1/oauth/token",
        content=form(grant_type="client_credentials", client_id=client_id, client_secret=secret),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    by_basic = await api.client.post(
        "/v1/oauth/token",
        content=form(grant_type="client_credentials", scope="bookings"),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": f"Basic {basic}",
        },
    )

    for response in (by_form, by_basic):
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        body = response.json()
        assert (body["token_type"], body["expires_in"], body["scope"]) == (
            "Bearer",
            3600,
            "bookings",
        )
        header = jwt.get_unverified_header(body["access_token"])
        claims = jwt.decode(body["access_token"], options={"verify_signature": False})
        assert (header["alg"], header["typ"]) == ("ES256", "citykey-client+jwt")
        assert claims["iss"] == api.state.settings.issuer
        assert (claims["aud"], claims["sub"], claims["scope"]) == (
            "citykey-bookings",
            client_id,
            "bookings",
        )
        assert claims["exp"] - claims["iat"] == 3600

    async def refused(fields: dict[str, str], **headers: str) -> tuple[int, str]:
        response = await api.client.post(
            "/v1/oauth/token",
            content=form(**fields),
            headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
        )
        return response.status_code, error_code(response)

    good = {"grant_type": "client_credentials", "client_id": client_id}
    assert await refused({**good, "client_secret": secret + "x"}) == (401, "invalid_client")
    assert await refused({**good, "client_id": "bc_nobody", "client_secret": secret}) == (
        401,
        "invalid_client",
    )
    assert await refused({**good}) == (401, "invalid_client")
    assert await refused({**good, "grant_type": "password", "client_secret": secret}) == (
        400,
        "unsupported_grant_type",
    )
    assert await refused({**good, "client_secret": secret, "scope": "admin"}) == (
        400,
        "invalid_scope",
    )
    both = await refused({**good, "client_secret": secret}, Authorization=f"Basic {basic}")
    assert both == (400, "invalid_request")
    as_json = await api.client.post(
        "/v1/oauth/token",
        json={**good, "client_secret": secret, "grant_type": "client_credentials"},
    )
    assert (as_json.status_code, error_code(as_json)) == (400, "invalid_request")


async def test_tokens_do_not_cross_between_citizens_and_booking_systems(
    api: ApiHarness,
) -> None:
    client_id, secret, owner = await client_for(api)
    manager = await add_manager(api, owner)
    client_token = {"Authorization": f"Bearer {await token_for_client(api, client_id, secret)}"}
    booking = {
        "version": 1,
        "valid_from": "2030-01-01T10:00:00+01:00",
        "valid_until": "2030-01-01T12:00:00+01:00",
        "buildings": [(await add_building(api, owner))[0]],
        "recipients": [{"phone": "+4790000000"}],
    }

    # A citizen's (here: a manager's) identity token on the booking API.
    identity = await api.client.put(
        "/v1/bookings/b-1", json=booking, headers=api.token_for(manager)
    )
    assert (identity.status_code, error_code(identity)) == (401, "invalid_token")
    # The client's token on citizen and manager endpoints.
    for method, url in (
        ("GET", "/v1/me/doors"),
        ("GET", "/v1/booking-clients"),
        ("POST", "/v1/me/phone"),
    ):
        response = await api.client.request(
            method, url, headers=client_token, json={"phone": "+4790000000"}
        )
        assert (response.status_code, error_code(response)) == (401, "invalid_token"), url
    # An unlock-style or forged token on the booking API.
    forged = await api.client.put(
        "/v1/bookings/b-1", json=booking, headers={"Authorization": "Bearer abc.def.ghi"}
    )
    assert (forged.status_code, error_code(forged)) == (401, "invalid_token")
    missing = await api.client.put("/v1/bookings/b-1", json=booking)
    assert (missing.status_code, error_code(missing)) == (401, "unauthorized")

    ok = await api.client.put("/v1/bookings/b-1", json=booking, headers=client_token)
    assert ok.status_code == 201, ok.text


async def test_expired_or_foreign_signed_client_token_is_refused(api: ApiHarness) -> None:
    client_id, secret, _ = await client_for(api)
    await token_for_client(api, client_id, secret)  # makes sure the key exists
    key = read_private_key(api.state.settings.key_dir / KEY_FILE)
    stale = ClientTokens(key, api.state.settings.issuer, clock=lambda: time.time() - 7200)
    other_issuer = ClientTokens(key, "http://elsewhere.test")

    for token in (stale.issue(client_id), other_issuer.issue(client_id)):
        response = await api.client.get(
            "/v1/bookings/any", headers={"Authorization": f"Bearer {token}"}
        )
        assert (response.status_code, error_code(response)) == (401, "invalid_token")


async def test_disabling_a_client_stops_its_tokens_and_revokes_its_grants(
    api: ApiHarness,
) -> None:
    client_id, secret, owner = await client_for(api)
    manager = await add_manager(api, owner)
    citizen = await add_user(api)
    building, _ = await add_building(api, owner)
    headers = {"Authorization": f"Bearer {await token_for_client(api, client_id, secret)}"}
    booking: dict[str, Any] = {
        "version": 1,
        "valid_from": "2030-01-01T10:00:00+01:00",
        "valid_until": "2030-01-01T12:00:00+01:00",
        "buildings": [building],
        "recipients": [{"user_id": citizen}],
    }
    put = await api.client.put("/v1/bookings/ext-9", json=booking, headers=headers)
    assert put.status_code == 201, put.text
    booking_id = put.json()["booking_id"]

    disabled = await api.client.delete(
        f"/v1/booking-clients/{client_id}", headers=api.token_for(manager)
    )
    again = await api.client.delete(
        f"/v1/booking-clients/{client_id}", headers=api.token_for(manager)
    )

    assert (disabled.status_code, again.status_code) == (204, 204)
    grants = await grants_where(api, booking_id=booking_id)
    assert len(grants) == 1
    assert all(g.revoked_at is not None and g.revoked_by == manager for g in grants)
    after = await api.client.get("/v1/bookings/ext-9", headers=headers)
    assert (after.status_code, error_code(after)) == (401, "invalid_token")
    no_token = await api.client.post(
        "/v1/oauth/token",
        content=form(grant_type="client_credentials", client_id=client_id, client_secret=secret),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert (no_token.status_code, error_code(no_token)) == (401, "invalid_client")
    actions = await audit_actions(api, client_id)
    assert [a for _, a in actions] == ["booking_client.created", "booking_client.disabled"]
    assert actions[-1][0] == manager
    assert await audit_actions(api, booking_id) == [
        (f"client:{client_id}", "booking.created"),
        (manager, "booking.deleted"),
    ]
