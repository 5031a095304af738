"""Citizen pages under /app: my keys, opening a door, my activity, shares; the PWA files.

Thin: the same services as the JSON API (api/me, api/unlock), shaped for the page by
views.py. Every action is a plain HTML form post (303 back to the page with a flash message),
so the app works without JavaScript; static/app.js posts the same forms with fetch() and
``Accept: application/json`` for live feedback.
"""

import json
from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response

from api.buildings.repository import DoorRepository
from api.common import utcnow
from api.deps import SessionDep, SettingsDep, UnlockServiceDep
from api.me.service import MeService
from api.web.citizen.opening import open_door
from api.web.citizen.views import activity_rows, building_cards, share_rows
from api.web.session import CsrfDep, WebUserDep
from api.web.templating import WEB_DIR, render

router = APIRouter(prefix="/app", include_in_schema=False)

DoorId = Annotated[str, Path(min_length=1, max_length=64)]
_FLASH = "citizen_flash"
ACTIVITY_LIMIT = 30


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


@router.get("", response_class=HTMLResponse)
async def my_keys(request: Request, user: WebUserDep, session: SessionDep) -> HTMLResponse:
    """The doors I may open now (one big Open button each) and later, by building."""
    buildings = await MeService(session).my_doors(user, utcnow())
    flash = request.session.pop(_FLASH, None)
    return render(
        request,
        "citizen/keys.html",
        {
            "user": user,
            "buildings": building_cards(buildings),
            "flash": flash if isinstance(flash, dict) else None,
            "page": "keys",
        },
    )


@router.post("/doors/{door_id}/open", response_model=None)
async def open_door_route(
    request: Request,
    door_id: DoorId,
    user: WebUserDep,
    _csrf: CsrfDep,
    session: SessionDep,
    settings: SettingsDep,
    service: UnlockServiceDep,
) -> Response:
    """Open a door: JSON for fetch(), otherwise back to my keys with the result shown."""
    result = await open_door(session, service, user, door_id, settings.unlock_rate_per_minute)
    if _wants_json(request):
        headers = {"Cache-Control": "no-store"}
        if result.retry_after_s is not None:
            headers["Retry-After"] = str(result.retry_after_s)
        return JSONResponse(result.as_json(), result.http_status, headers=headers)
    request.session[_FLASH] = result.as_json()
    return RedirectResponse(f"/app#door-{door_id}", status_code=303)


@router.get("/activity", response_class=HTMLResponse)
async def activity(request: Request, user: WebUserDep, session: SessionDep) -> HTMLResponse:
    """My recent unlock requests and what became of them."""
    page = await MeService(session).activity(user, ACTIVITY_LIMIT, None)
    zones = await _zones(session, (item.building_id for item in page.items))
    return render(
        request,
        "citizen/activity.html",
        {"user": user, "rows": activity_rows(page.items, zones), "page": "activity"},
    )


@router.get("/shares", response_class=HTMLResponse)
async def shares(request: Request, user: WebUserDep, session: SessionDep) -> HTMLResponse:
    """Shares I gave and shares I received."""
    view = await MeService(session).list_shares(user, utcnow())
    zones = await _zones(session, (s.building_id for s in [*view.given, *view.received]))
    return render(
        request,
        "citizen/shares.html",
        {
            "user": user,
            "given": share_rows(view.given, zones, given=True),
            "received": share_rows(view.received, zones, given=False),
            "page": "shares",
        },
    )


async def _zones(session: SessionDep, building_ids: Iterable[str | None]) -> dict[str, str]:
    """Time zone of each building (the clock the citizen knows there)."""
    doors = DoorRepository(session)
    zones: dict[str, str] = {}
    for building_id in {b for b in building_ids if b}:
        building = await doors.get_building(building_id)
        if building is not None:
            zones[building_id] = building.timezone
    return zones


MANIFEST: dict[str, Any] = {
    "name": "citykey",
    "short_name": "citykey",
    "description": "Open the doors of public buildings / Åpne dørene til offentlige bygg",
    "lang": "nb",
    "start_url": "/app",
    "scope": "/app",
    "display": "standalone",
    "orientation": "portrait",
    "theme_color": "#0b3d91",
    "background_color": "#f6f7f9",
    "icons": [
        {"src": "/static/icon.svg", "sizes": "any", "type": "image/svg+xml", "purpose": "any"}
    ],
}


@router.get("/manifest.webmanifest")
async def manifest() -> Response:
    """The PWA manifest: installable from the browser's menu, opens on my keys."""
    return Response(json.dumps(MANIFEST), media_type="application/manifest+json")


@router.get("/sw.js")
async def service_worker() -> FileResponse:
    """The service worker, served under /app so that its scope covers the app's pages."""
    return FileResponse(
        WEB_DIR / "static" / "sw.js",
        media_type="text/javascript",
        headers={"Cache-Control": "no-cache", "Service-Worker-Allowed": "/app"},
    )
