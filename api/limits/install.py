"""Wiring the abuse limits into the application (called once by api/main.py)."""

from typing import Any

from fastapi import Depends, FastAPI

from api.errors import error_responses
from api.limits.auth import FailedAuthLimit
from api.limits.body import BodySizeLimit
from api.limits.clients import parse_networks
from api.limits.doors import door_rate_limit
from api.limits.text import TextFilter
from api.limits.text import install_handler as install_text_handler
from api.limits.window import Limit
from api.settings import Settings


def door_limit(kind: str) -> dict[str, Any]:
    """``app.include_router(router, **door_limit("unlock"))``: the per-citizen, per-door rate
    limit on a router's routes that have a ``door_id`` path parameter (the others are not
    limited; every route of the router must authenticate a user)."""
    return {"dependencies": [Depends(door_rate_limit(kind))], "responses": error_responses(429)}


def install_limits(app: FastAPI, settings: Settings) -> None:
    """Add the failed-authentication, text and body-size middlewares to ``app``."""
    limit = (
        Limit(settings.auth_failure_limit, settings.auth_failure_window_s)
        if settings.auth_failure_limit > 0
        else None
    )
    app.add_middleware(
        FailedAuthLimit,
        limit=limit,
        proxies=parse_networks(settings.trusted_proxies),
        sessions=lambda: app.state.citykey.sessions,
    )
    app.add_middleware(TextFilter)
    install_text_handler(app)
    # Added last, so it is the outermost: an oversized body is refused before anything else.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
