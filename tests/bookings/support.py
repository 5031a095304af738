"""Helpers for the booking tests: a registered client and its token, through the real API."""

from urllib.parse import urlencode

from tests.citizen.helpers import add_manager, add_owner
from tests.conftest import ApiHarness


def form(**fields: str) -> bytes:
    return urlencode(fields).encode()


async def client_for(api: ApiHarness, owner_id: str | None = None) -> tuple[str, str, str]:
    """(client id, secret, owner id) of a new booking client, registered by a manager."""
    owner = owner_id or await add_owner(api)
    manager = await add_manager(api, owner)
    response = await api.client.post(
        "/v1/booking-clients",
        json={"owner_id": owner, "name": "Booking system"},
        headers=api.token_for(manager),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return body["client_id"], body["client_secret"], owner


async def token_for_client(api: ApiHarness, client_id: str, secret: str) -> str:
    response = await api.client.post(
        "/v1/oauth/token",
        content=form(grant_type="client_credentials", client_id=client_id, client_secret=secret),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def client_headers(
    api: ApiHarness, owner_id: str | None = None
) -> tuple[dict[str, str], str, str]:
    """(Authorization header, client id, owner id) of a new client with a fresh token."""
    client_id, secret, owner = await client_for(api, owner_id)
    token = await token_for_client(api, client_id, secret)
    return {"Authorization": f"Bearer {token}"}, client_id, owner
