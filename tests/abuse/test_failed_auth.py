"""Failed-authentication limit per client address, through the real API on PostgreSQL: every
kind of credential, shared across instances, X-Forwarded-For believed only from a trusted
proxy. Each test uses client addresses of its own."""

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from api.limits.auth import FailedAuthLimit
from api.limits.clients import client_address, parse_networks
from api.limits.window import Limit
from api.settings import Settings
from tests.abuse.support import fresh_address, instance
from tests.bookings.support import form
from tests.conftest import ApiHarness
from tests.support import World

LIMITED = {"auth_failure_limit": 5, "auth_failure_window_s": 60.0}
BAD = {"Authorization": "Bearer not-a-token"}


def code(response: httpx.Response) -> str:
    value: str = response.json()["error"]["code"]
    return value


async def test_after_five_failures_the_client_gets_429_even_with_a_valid_token(
    world: World, settings: Settings
) -> None:
    async with instance(settings, **LIMITED) as api:
        client = api.client(fresh_address())
        good = api.bearer(world.citizen_id)
        # No credentials at all is not a failed attempt.
        for _ in range(8):
            assert code(await client.get("/v1/me/doors")) == "unauthorized"
        assert (await client.get("/v1/me/doors", headers=good)).status_code == 200

        failures = [await client.get("/v1/me/doors", headers=BAD) for _ in range(5)]
        assert [(r.status_code, code(r)) for r in failures] == [(401, "invalid_token")] * 5
        blocked = await client.get("/v1/me/doors", headers=good)
        assert blocked.status_code == 429, blocked.text
        assert code(blocked) == "too_many_failed_logins"
        retry_after = int(blocked.headers["Retry-After"])
        assert 1 <= retry_after <= 60
        # X-Forwarded-For from an untrusted peer changes nothing.
        spoofed = await client.get(
            "/v1/me/doors", headers={**good, "X-Forwarded-For": "192.0.2.99"}
        )
        assert spoofed.status_code == 429
        assert (await client.get("/healthz")).status_code == 200
        # Another client is not affected.
        other = api.client(fresh_address())
        assert (await other.get("/v1/me/doors", headers=good)).status_code == 200
    print(
        f"\nfailed authentication: 5 failures -> the 6th request (valid token) gets 429 "
        f"too_many_failed_logins, Retry-After {retry_after} s; 8 requests without credentials "
        "not counted; other clients unaffected"
    )


async def test_a_second_instance_learns_the_block_at_the_next_failure(
    world: World, settings: Settings
) -> None:
    address = fresh_address()
    async with instance(settings, **LIMITED) as first, instance(settings, **LIMITED) as second:
        one, two = first.client(address), second.client(address)
        good = first.bearer(world.citizen_id)
        for client in (one, two, one, two, one):  # five failures, shared across instances
            assert (await client.get("/v1/me/doors", headers=BAD)).status_code == 401
        assert (await one.get("/v1/me/doors", headers=good)).status_code == 429
        # The second instance has not seen the block yet: one more failure, then it knows.
        assert (await two.get("/v1/me/doors", headers=good)).status_code == 200
        assert (await two.get("/v1/me/doors", headers=BAD)).status_code == 401
        assert (await two.get("/v1/me/doors", headers=good)).status_code == 429


async def test_booking_client_credentials_count_too(api: ApiHarness, settings: Settings) -> None:
    async with instance(settings, **LIMITED) as limited:
        client = limited.client(fresh_address())
        wrong = form(grant_type="client_credentials", client_id="bc-nobody", client_secret="x")
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        answers = [
            await client.post("/v1/oauth/token", content=wrong, headers=headers) for _ in range(6)
        ]
        assert [r.status_code for r in answers] == [401] * 5 + [429]
        assert code(answers[-1]) == "too_many_failed_logins"


async def test_behind_a_trusted_proxy_the_forwarded_address_is_the_client(
    world: World, settings: Settings
) -> None:
    async with instance(settings, **LIMITED, trusted_proxies="10.0.0.0/8") as api:
        proxy = api.client("10.1.2.3")
        good = api.bearer(world.citizen_id)
        attacker, neighbour = fresh_address(), fresh_address()
        for i in range(5):
            # Whatever the attacker writes on the left, the proxy appends the real address.
            forwarded = {"X-Forwarded-For": f"198.51.100.{i}, {attacker}"}
            assert (
                await proxy.get("/v1/me/doors", headers={**BAD, **forwarded})
            ).status_code == 401
        as_attacker = {**good, "X-Forwarded-For": attacker}
        assert (await proxy.get("/v1/me/doors", headers=as_attacker)).status_code == 429
        as_neighbour = {**good, "X-Forwarded-For": neighbour}
        assert (await proxy.get("/v1/me/doors", headers=as_neighbour)).status_code == 200


async def test_the_block_ends_when_the_window_has_room(api: ApiHarness) -> None:
    """With a fake clock: 3 failures in 10 s block until the first leaves the window."""
    now = [1_950_000_000.0]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        failed = scope["path"] == "/bad"
        body = b'{"error": {"code": "invalid_token", "message": "no"}}' if failed else b"{}"
        await send({"type": "http.response.start", "status": 401 if failed else 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    limited = FailedAuthLimit(
        app,
        limit=Limit(3, 10.0),
        proxies=(),
        sessions=lambda: api.state.sessions,
        clock=lambda: now[0],
    )
    transport = httpx.ASGITransport(app=limited, client=(fresh_address(), 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for step in (0.0, 1.0, 2.0):
            now[0] += step
            assert (await client.get("/bad")).status_code == 401
        now[0] += 5.0  # 8 s after the first failure
        blocked = await client.get("/ok")
        assert (blocked.status_code, blocked.headers["Retry-After"]) == (429, "2")
        now[0] += 2.0  # the first failure has left the window
        assert (await client.get("/ok")).status_code == 200


def test_client_address_rules() -> None:
    proxies = parse_networks("10.0.0.0/8, 2001:db8:ffff::/48")
    cases = [
        ("203.0.113.9", ["198.51.100.1"], (), "203.0.113.9"),  # no proxy configured
        ("203.0.113.9", ["198.51.100.1"], proxies, "203.0.113.9"),  # peer not trusted
        ("10.0.0.2", ["198.51.100.1"], proxies, "198.51.100.1"),
        ("10.0.0.2", ["6.6.6.6, 198.51.100.1, 10.0.0.7"], proxies, "198.51.100.1"),
        ("10.0.0.2", ["6.6.6.6", "198.51.100.1"], proxies, "198.51.100.1"),  # two headers
        ("10.0.0.2", ["10.9.9.9"], proxies, "10.9.9.9"),  # only proxies: the leftmost
        ("10.0.0.2", ["unknown"], proxies, "10.0.0.2"),  # garbage: the last readable address
        ("10.0.0.2", [], proxies, "10.0.0.2"),
        (None, [], proxies, "unknown"),
    ]
    for peer, forwarded, trusted, expected in cases:
        assert client_address(peer, forwarded, trusted) == expected, (peer, forwarded)


def test_a_bad_proxy_setting_stops_the_start() -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        Settings(trusted_proxies="10.0.0.0/8, proxy.example.org")
