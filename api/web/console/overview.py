"""The overview: every building in scope with its doors and their live status, and a door's
detail page. The door table is also served alone (``doors.part``) for console.js to poll."""

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from api.audit.repository import AuditFilter, AuditRepository
from api.web.console.common import PREFIX, ConsoleDep, ConsoleRoute
from api.web.console.reads import door_rows

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute)

RECENT_EVENTS = 20


@router.get("", response_class=HTMLResponse)
async def overview(console: ConsoleDep) -> HTMLResponse:
    """Buildings and their doors with live status badges."""
    buildings = await console.buildings()
    sections = [(b, await door_rows(console, b)) for b in buildings]
    return console.page("console/overview.html", {"sections": sections})


@router.get("/buildings/{building_id}/doors.part", response_class=HTMLResponse)
async def doors_part(building_id: str, console: ConsoleDep) -> HTMLResponse:
    """The door rows of one building alone: what console.js polls for live status."""
    building = await console.buildings_service.get(console.scope, building_id)
    rows = await door_rows(console, building)
    return console.fragment("console/_door_rows.html", {"building": building, "rows": rows})


@router.get("/doors/{door_id}", response_class=HTMLResponse)
async def door_detail(door_id: str, console: ConsoleDep) -> HTMLResponse:
    """One door: its state, its gateway and its latest audit rows."""
    door, status, online = await console.doors.status(console.scope, door_id)
    building = await console.buildings_service.get(console.scope, door.building_id)
    events = await AuditRepository(console.session).page(
        AuditFilter(door_id=door.id), frozenset({building.id}), None, RECENT_EVENTS
    )
    return console.page(
        "console/door.html",
        {"door": door, "status": status, "online": online, "building": building, "events": events},
    )
