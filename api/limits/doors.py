"""Per-citizen, per-door rate limit for requests that open a door (or mint what opens one).

A FastAPI dependency, attached to the router by api/main.py so the endpoint code does not
change: after the bearer token is verified, before the unlock service. It runs in the
request's session, so the counted event commits with the request's first commit (the audit
record) and is rolled back with it (an unknown door, for instance, leaves no row behind).
"""

import time
from collections.abc import Awaitable, Callable

from fastapi import Request

from api.deps import CurrentPrincipal, SessionDep, SettingsDep
from api.errors import ApiError
from api.limits.store import RateLimitStore
from api.limits.window import Limit

_store = RateLimitStore()
MAX_ID_LENGTH = 64
"""Door and user ids are at most 64 characters, so a key fits its 200-character column."""


def door_rate_limit(kind: str) -> Callable[..., Awaitable[None]]:
    """A dependency limiting ``kind`` (e.g. ``unlock``) per user and ``door_id`` path
    parameter to CITYKEY_UNLOCK_RATE_PER_MINUTE (0: no limit)."""

    async def enforce(
        request: Request, principal: CurrentPrincipal, session: SessionDep, settings: SettingsDep
    ) -> None:
        per_minute = settings.unlock_rate_per_minute
        door_id = request.path_params.get("door_id")
        if per_minute <= 0 or not isinstance(door_id, str) or len(door_id) > MAX_ID_LENGTH:
            return  # an overlong id is refused by the endpoint's validation (422)
        # The token's subject is the user id; an unknown subject is refused (401) later in
        # the same request, which rolls this event back with it.
        key = f"{kind}:{principal.subject}:{door_id}"
        verdict = await _store.hit(session, key, Limit(per_minute, 60.0), time.time())
        if not verdict.allowed:
            raise ApiError(
                429,
                "rate_limited",
                f"too many requests for this door; try again in {verdict.retry_after_header} s",
                headers={"Retry-After": verdict.retry_after_header},
                door_id=door_id,
                retry_after_s=int(verdict.retry_after_header),
            )

    enforce.__name__ = f"{kind}_rate_limit"
    return enforce
