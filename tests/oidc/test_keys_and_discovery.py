"""The provider's keys (cached, refetched on rotation, never hammered) and start-up discovery
(refused when unreachable or inconsistent)."""

from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from api.identity.jwks import AsyncJwksSource
from api.identity.oidc import OidcClient, OidcConfigurationError
from api.identity.verifier import IdentityTokenError
from api.settings import Settings
from tests.oidc.conftest import CALLBACK, oidc_settings, start_api
from tests.oidc.provider import (
    ProviderHandle,
    free_port,
    new_signing_key,
    running_provider,
    tokens_for,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_rotated_provider_key_is_accepted_after_a_refetch(
    settings: Settings, tmp_path: Path
) -> None:
    """The provider restarts with a new signing key (the old one still published): the API,
    which cached the old set, refetches on the unknown kid and accepts the new tokens."""
    old, new = new_signing_key(), new_signing_key()
    port = free_port()
    async with AsyncExitStack() as stack:
        with running_provider([CALLBACK], keys=[old], port=port, workdir=tmp_path) as first:
            api = await start_api(stack, oidc_settings(settings, first, oidc_jwks_min_refetch_s=0))
            tokens = await tokens_for(first, "kari", CALLBACK)
            assert api.state.oidc is not None
            fetches = api.state.oidc.jwks.fetches
            ok = await api.client.get("/v1/me/doors", headers=_bearer(tokens["access_token"]))
            assert ok.status_code == 200
            assert api.state.oidc.jwks.fetches == fetches  # served from the cache
        with running_provider(
            [CALLBACK],
            keys=[new, old],
            port=port,
            client_secret=first.client_secret,
            workdir=tmp_path,
        ) as rotated:
            tokens = await tokens_for(rotated, "kari", CALLBACK)
            response = await api.client.get("/v1/me/doors", headers=_bearer(tokens["access_token"]))
            assert response.status_code == 200, response.text
            assert api.state.oidc.jwks.fetches == fetches + 1


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_unknown_kids_refetch_at_most_once_per_interval(
    oidc_provider: ProviderHandle,
) -> None:
    clock = FakeClock()
    async with httpx.AsyncClient(timeout=5) as http:
        source = AsyncJwksSource(
            http,
            f"{oidc_provider.issuer}/jwks",
            cache_s=86_400,
            min_refetch_s=60,
            clock=clock,
        )
        known = oidc_provider.keys[0]["kid"]
        assert await source.key_for(known) is not None
        assert source.fetches == 1
        for i in range(50):  # a flood of forged kids
            with pytest.raises(IdentityTokenError):
                await source.key_for(f"forged-{i}")
        assert source.fetches == 1  # within the interval: no refetch at all
        clock.now += 60
        for i in range(50):
            with pytest.raises(IdentityTokenError):
                await source.key_for(f"forged-again-{i}")
        assert source.fetches == 2  # one per interval
        assert await source.key_for(known) is not None
        clock.now += 86_400  # the cache expires: fetched again
        assert await source.key_for(known) is not None
        assert source.fetches == 3


async def test_keys_stay_usable_when_the_provider_is_down(tmp_path: Path) -> None:
    clock = FakeClock()
    key = new_signing_key()
    async with httpx.AsyncClient(timeout=2) as http:
        with running_provider([CALLBACK], keys=[key], workdir=tmp_path) as handle:
            source = AsyncJwksSource(
                http, f"{handle.issuer}/jwks", cache_s=600, min_refetch_s=10, clock=clock
            )
            assert await source.key_for(key["kid"]) is not None
        clock.now += 600  # expired, and the provider is gone
        assert await source.key_for(key["kid"]) is not None
        assert source.fetches == 2


async def test_discovery_of_an_unreachable_provider_stops_the_start(settings: Settings) -> None:
    handle = ProviderHandle(
        issuer=f"http://127.0.0.1:{free_port()}",
        client_id="c",
        client_secret="s",
        keys=[],
        port=0,
    )
    with pytest.raises(OidcConfigurationError, match="discovery"):
        await OidcClient.start(oidc_settings(settings, handle, oidc_timeout_s=1))


async def test_discovery_naming_another_issuer_stops_the_start(
    settings: Settings, oidc_provider: ProviderHandle
) -> None:
    # The same server under another name (localhost, not 127.0.0.1): its discovery names
    # the issuer it was configured with, which is not ours.
    handle = ProviderHandle(
        issuer=f"http://localhost:{oidc_provider.port}",
        client_id=oidc_provider.client_id,
        client_secret=oidc_provider.client_secret,
        keys=[],
        port=oidc_provider.port,
    )
    with pytest.raises(OidcConfigurationError, match="says its issuer is"):
        await OidcClient.start(oidc_settings(settings, handle))
