"""Which failures the API reports as ``503 database_unavailable``, and which stay bugs (500).

A connection refused by a real port, a pool that has no free connection, a deadline that ran
out: 503 with Retry-After. The same exception types raised by code that is not the database
driver (a key file that cannot be read): 500, never disguised as an outage.
"""

import socket
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import exc as sa_exc

from api.db import DatabaseUnavailableError, is_database_unavailable
from api.errors import install_error_handlers


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends


async def _refused_by_driver() -> BaseException:
    try:
        await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{_closed_port()}/x", timeout=2)
    except OSError as exc:
        return exc
    raise AssertionError("nothing listens there, the connect must fail")


async def test_driver_connectivity_errors_are_database_unavailable() -> None:
    refused = await _refused_by_driver()
    assert isinstance(refused, ConnectionRefusedError)
    assert is_database_unavailable(refused)
    assert is_database_unavailable(sa_exc.TimeoutError("QueuePool limit reached"))
    assert is_database_unavailable(DatabaseUnavailableError("deadline"))


def test_the_same_types_from_elsewhere_are_not(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="missing-key") as missing:
        (tmp_path / "missing-key.pem").read_bytes()
    assert not is_database_unavailable(missing.value)
    assert not is_database_unavailable(TimeoutError())
    assert not is_database_unavailable(ValueError("bug"))
    assert not is_database_unavailable(
        sa_exc.IntegrityError("INSERT", {}, Exception("duplicate key"))
    )


@pytest.fixture
def app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/db-refused")
    async def db_refused() -> None:
        raise await _refused_by_driver()

    @app.get("/deadline")
    async def deadline() -> None:
        raise DatabaseUnavailableError("the database did not answer in time")

    @app.get("/disk")
    def disk() -> None:  # sync: FastAPI runs it in a thread
        Path("/nonexistent/citykey/key.pem").read_bytes()

    return app


async def test_handler_answers_503_with_retry_after_or_500(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for path in ("/db-refused", "/deadline"):
            response = await client.get(path)
            assert response.status_code == 503, path
            assert response.json()["error"]["code"] == "database_unavailable"
            assert response.headers["retry-after"] == "1"
        response = await client.get("/disk")
        assert response.status_code == 500
        assert response.json()["error"]["code"] == "internal_error"
