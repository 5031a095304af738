"""The API accepts the provider's access tokens as bearer tokens (what a phone app sends), and
refuses everything else with stable codes."""

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from api.identity.models import Role, User
from tests.conftest import ApiHarness
from tests.oidc.conftest import CALLBACK
from tests.oidc.provider import ACCOUNTS, AUDIENCE, ProviderHandle, tokens_for


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def refusal(api: ApiHarness, token: str) -> tuple[int, str]:
    response = await api.client.get("/v1/me/doors", headers=bearer(token))
    return response.status_code, response.json()["error"]["code"]


def access_claims(handle: ProviderHandle, **overrides: Any) -> dict[str, Any]:
    """Claims like the provider's access tokens (for tokens signed with its own key)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": handle.issuer,
        "aud": AUDIENCE,
        "sub": "kari",
        "pid": ACCOUNTS["kari"],
        "client_id": handle.client_id,
        "iat": now,
        "exp": now + 300,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


async def test_the_providers_access_token_is_accepted(
    oidc_api: ApiHarness, oidc_provider: ProviderHandle
) -> None:
    tokens = await tokens_for(oidc_provider, "ola", CALLBACK)
    response = await oidc_api.client.get("/v1/me/doors", headers=bearer(tokens["access_token"]))
    assert response.status_code == 200, response.text
    # First use creates the citizen under the pseudonymous id; the pid is not in the row.
    assert oidc_api.state.oidc is not None
    user_id = oidc_api.state.oidc.pseudonym(ACCOUNTS["ola"])
    async with oidc_api.state.sessions() as session:
        user = await session.get(User, user_id)
    assert user is not None
    assert user.roles == [Role.CITIZEN.value]
    assert ACCOUNTS["ola"] not in repr(user.model_dump())


async def test_dev_tokens_still_work_beside_the_provider(oidc_api: ApiHarness) -> None:
    async with oidc_api.state.sessions() as session:
        session.add(User(id="u-dev-oidc", display_name="Dev", roles=[Role.CITIZEN.value]))
        await session.commit()
    response = await oidc_api.client.get("/v1/me/doors", headers=oidc_api.token_for("u-dev-oidc"))
    assert response.status_code == 200


async def test_an_access_token_without_a_pid_is_refused(
    oidc_api: ApiHarness, oidc_provider: ProviderHandle
) -> None:
    tokens = await tokens_for(oidc_provider, "nopid", CALLBACK)
    assert "pid" not in jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert await refusal(oidc_api, tokens["access_token"]) == (401, "token_missing_pid")


async def test_the_id_token_is_not_an_access_token(
    oidc_api: ApiHarness, oidc_provider: ProviderHandle
) -> None:
    """The ID token's audience is our client id, not the API: refused."""
    tokens = await tokens_for(oidc_provider, "kari", CALLBACK)
    assert await refusal(oidc_api, tokens["id_token"]) == (401, "invalid_token")


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, "token_expired"),
        ({"aud": "some-other-api"}, "invalid_token"),
        ({"iss": "https://other-issuer.example"}, "invalid_token"),
        ({"exp": None}, "invalid_token"),
    ],
    ids=["expired", "audience", "issuer", "no-exp"],
)
async def test_bad_claims_are_refused(
    oidc_api: ApiHarness, oidc_provider: ProviderHandle, overrides: dict[str, Any], code: str
) -> None:
    token = oidc_provider.sign(access_claims(oidc_provider, **overrides))
    assert await refusal(oidc_api, token) == (401, code)


async def test_a_token_signed_with_the_providers_key_but_valid_is_accepted(
    oidc_api: ApiHarness, oidc_provider: ProviderHandle
) -> None:
    """The control of the test above: the same construction, good claims, is accepted."""
    token = oidc_provider.sign(access_claims(oidc_provider))
    assert (await oidc_api.client.get("/v1/me/doors", headers=bearer(token))).status_code == 200


async def test_forged_tokens_are_refused(
    oidc_api: ApiHarness, oidc_provider: ProviderHandle
) -> None:
    claims = access_claims(oidc_provider)
    rogue = ec.generate_private_key(ec.SECP256R1())
    kid = oidc_provider.keys[0]["kid"]
    # The provider's kid, someone else's key.
    forged = jwt.encode(claims, rogue, algorithm="ES256", headers={"kid": kid})
    assert await refusal(oidc_api, forged) == (401, "invalid_token")
    # A kid the provider never had.
    unknown = jwt.encode(claims, rogue, algorithm="ES256", headers={"kid": "k-nope"})
    assert await refusal(oidc_api, unknown) == (401, "invalid_token")
    # alg none, and a symmetric token keyed with the provider's public key.
    unsigned = jwt.encode(claims, "", algorithm="none", headers={"kid": kid})
    assert await refusal(oidc_api, unsigned) == (401, "invalid_token")
    hmac_token = jwt.encode(claims, "x" * 32, algorithm="HS256", headers={"kid": kid})
    assert await refusal(oidc_api, hmac_token) == (401, "invalid_token")
