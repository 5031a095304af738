"""Opening a door from the web app: the same rate limit and unlock service as the JSON API,
with the answer turned into what the citizen reads.

The limit uses the same counter as ``POST /v1/doors/{door_id}/unlock`` (api/limits/doors.py:
key ``unlock:<user>:<door>``), so switching between the app and the API buys no extra tries.
It is checked here, not as a router dependency, so that a refused form post can be answered
with a page instead of JSON.
"""

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from api.buildings.repository import DoorRepository
from api.errors import ApiError
from api.identity.models import User
from api.limits.doors import MAX_ID_LENGTH
from api.limits.store import RateLimitStore
from api.limits.window import Limit
from api.unlock.service import UnlockService
from api.web.i18n import UNLOCKED_UNTIL, refusal

_store = RateLimitStore()


@dataclass(frozen=True, slots=True)
class OpenResult:
    """What happened when the citizen pressed Open."""

    door_id: str
    status: str
    """``unlocked`` or ``refused``."""
    http_status: int
    code: str | None = None
    message_nb: str = ""
    message_en: str = ""
    unlocked_until: datetime | None = None
    local_time: str | None = None
    """``unlocked_until`` as hh:mm:ss in the building's time zone."""
    seconds: int | None = None
    """How long the door stays unlocked from now (for the countdown; no clock skew)."""
    retry_after_s: int | None = None

    def as_json(self) -> dict[str, Any]:
        """The body answered to fetch() (static/app.js)."""
        return {
            "status": self.status,
            "door_id": self.door_id,
            "unlocked_until": self.unlocked_until.isoformat() if self.unlocked_until else None,
            "unlocked_until_local": self.local_time,
            "seconds": self.seconds,
            "code": self.code,
            "message_nb": self.message_nb,
            "message_en": self.message_en,
            "retry_after_s": self.retry_after_s,
        }


async def check_unlock_limit(
    session: AsyncSession, user: User, door_id: str, per_minute: int
) -> None:
    """Raise ApiError 429 (``rate_limited``) when ``user`` asked to open ``door_id`` too often
    in the last minute (CITYKEY_UNLOCK_RATE_PER_MINUTE; 0: no limit)."""
    if per_minute <= 0 or len(door_id) > MAX_ID_LENGTH:
        return
    verdict = await _store.hit(
        session, f"unlock:{user.id}:{door_id}", Limit(per_minute, 60.0), time.time()
    )
    if not verdict.allowed:
        raise ApiError(
            429,
            "rate_limited",
            f"too many requests for this door; try again in {verdict.retry_after_header} s",
            door_id=door_id,
            retry_after_s=int(verdict.retry_after_header),
        )


async def open_door(
    session: AsyncSession,
    service: UnlockService,
    user: User,
    door_id: str,
    per_minute: int,
) -> OpenResult:
    """Open ``door_id`` for ``user``; a refusal is a result, never an exception (except a
    database outage, which the app answers with 503 like the API)."""
    try:
        await check_unlock_limit(session, user, door_id, per_minute)
        outcome = await service.unlock(user, door_id, None)
    except ApiError as exc:
        text = refusal(exc.code)
        retry = exc.details.get("retry_after_s")
        return OpenResult(
            door_id=door_id,
            status="refused",
            http_status=exc.status,
            code=exc.code,
            message_nb=text.nb,
            message_en=text.en,
            retry_after_s=retry if isinstance(retry, int) else None,
        )
    local = outcome.unlocked_until.astimezone(await _door_zone(session, door_id))
    stamp = local.strftime("%H:%M:%S")
    return OpenResult(
        door_id=door_id,
        status="unlocked",
        http_status=200,
        message_nb=UNLOCKED_UNTIL.nb.format(time=stamp),
        message_en=UNLOCKED_UNTIL.en.format(time=stamp),
        unlocked_until=outcome.unlocked_until,
        local_time=stamp,
        seconds=max(0, round((outcome.unlocked_until - datetime.now(UTC)).total_seconds())),
    )


async def _door_zone(session: AsyncSession, door_id: str) -> ZoneInfo:
    """The time zone of the door's building (the clock the citizen sees at the door)."""
    doors = DoorRepository(session)
    door = await doors.get(door_id)
    building = await doors.get_building(door.building_id) if door else None
    return ZoneInfo(building.timezone if building else "UTC")
