"""Liveness and readiness for orchestrators.

``/healthz`` says only that the process serves HTTP: restarting the API does not bring back a
database or a broker, so their failures never fail liveness. ``/readyz`` says whether this
instance can serve an unlock right now, and why not; it answers within ``READY_CHECK_TIMEOUT_S``
even when the database accepts connections and then never answers (a partition).
"""

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import StateDep
from api.state import AppState

router = APIRouter(tags=["health"])

READY_CHECK_TIMEOUT_S = 0.5
"""Bound of the database check: a readiness probe that hangs is a probe that lies."""


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    """Always 200 while the process serves HTTP."""
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: database and broker reachable")
async def readyz(state: StateDep) -> JSONResponse:
    """200 when the database answers and the broker session is up, else 503 with the check
    that failed: ``"error: <ExceptionType>"``, ``"timeout"`` or ``"disconnected"``."""
    checks: dict[str, Any] = {"database": await _database(state)}
    checks["broker"] = "ok" if state.relay.connected else "disconnected"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks}, 200 if ready else 503
    )


async def _database(state: AppState) -> str:
    try:
        async with asyncio.timeout(READY_CHECK_TIMEOUT_S):
            async with state.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    except TimeoutError:
        return "timeout"
    except Exception as exc:  # any failure means "not ready"; say which
        return f"error: {type(exc).__name__}"
    return "ok"
