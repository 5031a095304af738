"""The published key set verifies the tokens the API signs."""

import jwt

from citykey_protocol.claims import UNLOCK_TOKEN_TYPE
from lock_gateway.keys import KeySet
from tests.conftest import ApiHarness


async def test_jwks_publishes_the_active_key_and_it_verifies_tokens(api: ApiHarness) -> None:
    response = await api.client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    document = response.json()
    kid = api.state.keyring.active.kid
    assert [k["kid"] for k in document["keys"]] == [kid]
    assert all("d" not in k for k in document["keys"])  # never the private part

    token, _ = api.state.minter.mint(gateway_id="gw-1", door_id="d-1", subject="u", seconds=3)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "ES256", "kid": kid, "typ": UNLOCK_TOKEN_TYPE}
    key = KeySet.from_jwks(document).get(kid)
    assert key is not None
    claims = jwt.decode(
        token, key, algorithms=["ES256"], audience="gw-1", issuer=api.state.settings.issuer
    )
    assert set(claims) == {"iss", "aud", "sub", "door", "dur", "jti", "iat", "nbf", "exp"}
    assert claims["exp"] - claims["iat"] == api.state.settings.token_lifetime_s


async def test_health_endpoints(api: ApiHarness) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}


async def test_identity_tokens_cannot_be_used_as_unlock_tokens_and_vice_versa(
    api: ApiHarness,
) -> None:
    unlock_token, _ = api.state.minter.mint(gateway_id="g", door_id="d", subject="u", seconds=3)
    response = await api.client.post(
        "/v1/doors/d/unlock", headers={"Authorization": f"Bearer {unlock_token}"}
    )
    assert response.status_code == 401
