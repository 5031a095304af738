"""Request body size limit: a declared Content-Length over the limit and a chunked body that
grows past it are both refused with 413 payload_too_large, in the API's error shape, before
any endpoint sees them; through the ASGI interface and over a real socket (uvicorn)."""

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import httpx
import uvicorn

from api.settings import Settings
from tests.abuse.support import Instance, instance
from tests.support import World

LIMIT = 2048


async def chunks(total: int, size: int = 500) -> AsyncIterator[bytes]:
    """A JSON-ish body of ``total`` bytes sent without Content-Length."""
    sent = 0
    while sent < total:
        piece = b" " * min(size, total - sent)
        sent += len(piece)
        yield piece


def padded(total: int) -> bytes:
    body = json.dumps({"name": "Annex", "timezone": "Europe/Oslo", "pad": ""}).encode()
    return body[:-2] + b"x" * (total - len(body)) + b'"}'


def assert_too_large(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "payload_too_large"


async def refusals(api: Instance, client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    json_type = {"Content-Type": "application/json", **admin}
    assert_too_large(
        await client.post("/v1/buildings", content=padded(LIMIT + 1), headers=json_type)
    )
    # Not authenticated either: the size is checked first, the body is never read.
    assert_too_large(await client.post("/v1/buildings", content=padded(LIMIT * 50)))
    streamed = await client.post("/v1/buildings", content=chunks(LIMIT * 3), headers=json_type)
    assert "content-length" not in streamed.request.headers
    assert_too_large(streamed)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert_too_large(await client.post("/v1/oauth/token", content=chunks(LIMIT + 1), headers=form))
    # At the limit, the request goes through to the endpoint (which judges it on its merits).
    at_limit = await client.post("/v1/buildings", content=padded(LIMIT), headers=json_type)
    assert at_limit.status_code != 413, at_limit.text
    small = await client.post("/v1/buildings", content=chunks(100), headers=json_type)
    assert small.status_code == 422  # spaces only: malformed JSON, not too large


async def test_oversized_bodies_are_refused_through_asgi(world: World, settings: Settings) -> None:
    admin_id = await _admin(world)
    async with instance(settings, max_body_bytes=LIMIT) as api:
        await refusals(api, api.client(), api.bearer(admin_id))


async def test_oversized_bodies_are_refused_over_a_real_socket(
    world: World, settings: Settings
) -> None:
    admin_id = await _admin(world)
    async with instance(settings, max_body_bytes=LIMIT) as api:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(api.app, host="127.0.0.1", port=port, lifespan="off", log_level="error")
        )
        task = asyncio.create_task(server.serve())
        try:
            async with asyncio.timeout(10):
                while not server.started:
                    await asyncio.sleep(0.02)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                await refusals(api, client, api.bearer(admin_id))
                # A large refused body does not spoil the connection for the next request.
                response = await client.post("/v1/buildings", content=chunks(LIMIT * 200))
                assert_too_large(response)
                assert (await client.get("/healthz")).status_code == 200
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 10)
    print(f"\nbody limit {LIMIT} B: declared and chunked bodies over it -> 413 (ASGI, socket)")


async def _admin(world: World) -> str:
    from api.identity.models import Role, User
    from tests.support import unique

    admin_id = unique("u-adm")
    async with world.state.sessions() as session:
        session.add(User(id=admin_id, display_name="Admin", roles=[Role.ADMIN]))
        await session.commit()
    return admin_id
