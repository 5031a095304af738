"""Helpers of the abuse-limit tests: more API instances on the same database and broker, with
their own settings and their own client address."""

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from api.main import create_app
from api.settings import Settings
from api.state import AppState


class Instance:
    """One running API instance and a way to talk to it from a given address."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.state: AppState = app.state.citykey
        self._clients: list[httpx.AsyncClient] = []

    def client(self, address: str = "127.0.0.1") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(address, 40000))
        client = httpx.AsyncClient(transport=transport, base_url="http://test")
        self._clients.append(client)
        return client

    def bearer(self, user_id: str) -> dict[str, str]:
        assert self.state.dev_identity is not None
        return {"Authorization": f"Bearer {self.state.dev_identity.issue(user_id)}"}

    async def close(self) -> None:
        for client in self._clients:
            await client.aclose()


@asynccontextmanager
async def instance(settings: Settings, **changes: Any) -> AsyncIterator[Instance]:
    """An API instance like the test's, with ``changes`` to its settings."""
    app = create_app(
        settings.model_copy(update={"instance_id": f"api-abuse-{secrets.token_hex(3)}", **changes})
    )
    async with app.router.lifespan_context(app):
        running = Instance(app)
        try:
            yield running
        finally:
            await running.close()


def fresh_address() -> str:
    """A client address of its own (IPv6 documentation prefix), so no two tests share one."""
    return f"2001:db8::{secrets.token_hex(2)}:{secrets.token_hex(2)}"
