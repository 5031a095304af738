"""HTTP endpoints for buildings, doors, holidays and door status (thin: parse, call the
service, shape the answer). Anything outside the caller's scope answers 404 exactly like a
missing object."""

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Query, Response

from api.buildings.models import Building, Door, Holiday
from api.buildings.schemas import (
    BuildingCreate,
    BuildingOut,
    BuildingUpdate,
    DoorCreate,
    DoorOut,
    DoorStatusOut,
    DoorUpdate,
    HolidayCreate,
    HolidayOut,
)
from api.buildings.service import BuildingService, DoorService
from api.deps import ManagerScopeDep, RelayDep, SessionDep
from api.errors import error_responses
from api.owners.schemas import DEFAULT_LIMIT, Cursor, Limit, Page

router = APIRouter(prefix="/v1", tags=["buildings and doors"])

BuildingId = Annotated[str, Path(min_length=1, max_length=64, examples=["bld_9a8b7c6d5e4f3a2b"])]
DoorId = Annotated[str, Path(min_length=1, max_length=64, examples=["grunerlokka-main"])]
HolidayId = Annotated[str, Path(min_length=1, max_length=64, examples=["hol_0f1e2d3c4b5a6978"])]


async def get_building_service(session: SessionDep) -> BuildingService:
    return BuildingService(session)


async def get_door_service(session: SessionDep, relay: RelayDep) -> DoorService:
    return DoorService(session, relay)


BuildingServiceDep = Annotated[BuildingService, Depends(get_building_service)]
DoorServiceDep = Annotated[DoorService, Depends(get_door_service)]


def building_out(building: Building) -> BuildingOut:
    return BuildingOut.model_validate(building, from_attributes=True)


def door_out(door: Door) -> DoorOut:
    return DoorOut.model_validate(door, from_attributes=True)


def holiday_out(holiday: Holiday) -> HolidayOut:
    return HolidayOut.model_validate(holiday, from_attributes=True)


# Buildings
@router.post(
    "/buildings",
    status_code=201,
    summary="Create a building",
    responses=error_responses(401, 403, 404, 422),
)
async def create_building(
    scope: ManagerScopeDep, service: BuildingServiceDep, body: Annotated[BuildingCreate, Body()]
) -> BuildingOut:
    """Create a building under an owner the caller manages (404 owner_not_found otherwise).
    The timezone is an IANA name; schedules of the building are in its local time."""
    return building_out(await service.create(scope, body))


@router.get("/buildings", summary="List buildings", responses=error_responses(401, 403, 422))
async def list_buildings(
    scope: ManagerScopeDep,
    service: BuildingServiceDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[BuildingOut]:
    """The buildings the caller manages, by name."""
    page = await service.page(scope, limit, cursor)
    return Page(items=[building_out(b) for b in page.items], next_cursor=page.next_cursor)


@router.get(
    "/buildings/{building_id}", summary="Get a building", responses=error_responses(401, 403, 404)
)
async def get_building(
    building_id: BuildingId, scope: ManagerScopeDep, service: BuildingServiceDep
) -> BuildingOut:
    """One building the caller manages."""
    return building_out(await service.get(scope, building_id))


@router.patch(
    "/buildings/{building_id}",
    summary="Change a building",
    responses=error_responses(401, 403, 404, 422),
)
async def update_building(
    building_id: BuildingId,
    scope: ManagerScopeDep,
    service: BuildingServiceDep,
    body: Annotated[BuildingUpdate, Body()],
) -> BuildingOut:
    """Change name or timezone; moving it to another owner is for administrators."""
    return building_out(await service.update(scope, building_id, body))


@router.delete(
    "/buildings/{building_id}",
    status_code=204,
    summary="Delete an empty building",
    responses=error_responses(401, 403, 404, 409),
)
async def delete_building(
    building_id: BuildingId, scope: ManagerScopeDep, service: BuildingServiceDep
) -> Response:
    """409 building_not_empty while doors, gateways or grants remain (listed in
    ``dependents``). Holidays and building manager scopes are removed with it."""
    await service.delete(scope, building_id)
    return Response(status_code=204)


# Doors
@router.post(
    "/buildings/{building_id}/doors",
    status_code=201,
    summary="Add a door",
    responses=error_responses(401, 403, 404, 409, 422),
)
async def create_door(
    building_id: BuildingId,
    scope: ManagerScopeDep,
    service: DoorServiceDep,
    body: Annotated[DoorCreate, Body()],
) -> DoorOut:
    """A door driven by one channel of a gateway of the same building. 409 channel_taken when
    another door uses that channel, 409 door_exists for a taken id, 422
    gateway_in_other_building for another building's gateway."""
    return door_out(await service.create(scope, building_id, body))


@router.get(
    "/buildings/{building_id}/doors",
    summary="List the doors of a building",
    responses=error_responses(401, 403, 404, 422),
)
async def list_doors(
    building_id: BuildingId,
    scope: ManagerScopeDep,
    service: DoorServiceDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[DoorOut]:
    """The building's doors, by name."""
    page = await service.page(scope, building_id, limit, cursor)
    return Page(items=[door_out(d) for d in page.items], next_cursor=page.next_cursor)


@router.get("/doors/{door_id}", summary="Get a door", responses=error_responses(401, 403, 404))
async def get_door(door_id: DoorId, scope: ManagerScopeDep, service: DoorServiceDep) -> DoorOut:
    """One door of a building the caller manages."""
    return door_out(await service.get(scope, door_id))


@router.patch(
    "/doors/{door_id}", summary="Change a door", responses=error_responses(401, 403, 404, 422)
)
async def update_door(
    door_id: DoorId,
    scope: ManagerScopeDep,
    service: DoorServiceDep,
    body: Annotated[DoorUpdate, Body()],
) -> DoorOut:
    """Change name, enabled (a disabled door opens for nobody) or the default unlock time."""
    return door_out(await service.update(scope, door_id, body))


@router.delete(
    "/doors/{door_id}",
    status_code=204,
    summary="Delete a door",
    responses=error_responses(401, 403, 404, 409),
)
async def delete_door(door_id: DoorId, scope: ManagerScopeDep, service: DoorServiceDep) -> Response:
    """409 door_in_use while grants or public-hours rules name the door."""
    await service.delete(scope, door_id)
    return Response(status_code=204)


@router.get(
    "/doors/{door_id}/status",
    summary="Health of a door",
    responses=error_responses(401, 403, 404),
)
async def door_status(
    door_id: DoorId, scope: ManagerScopeDep, service: DoorServiceDep
) -> DoorStatusOut:
    """Whether the door's gateway is connected now, and the lock state, door state, battery
    and active alarms the gateway last reported."""
    door, status, online = await service.status(scope, door_id)
    return DoorStatusOut(
        door_id=door.id,
        gateway_id=door.gateway_id,
        online=online,
        lock_state=status.lock_state if status else None,
        door_state=status.door_state if status else None,
        battery_pct=status.battery_pct if status else None,
        alarms=list(status.alarms) if status else [],
        last_event=status.last_event if status else None,
        last_event_at=status.last_event_at if status else None,
    )


# Holidays
@router.post(
    "/buildings/{building_id}/holidays",
    status_code=201,
    summary="Add a holiday",
    responses=error_responses(401, 403, 404, 409, 422),
)
async def create_holiday(
    building_id: BuildingId,
    scope: ManagerScopeDep,
    service: BuildingServiceDep,
    body: Annotated[HolidayCreate, Body()],
) -> HolidayOut:
    """The building is closed for scheduled access on this date (409 holiday_exists when
    the date already has a holiday)."""
    return holiday_out(await service.add_holiday(scope, building_id, body))


@router.get(
    "/buildings/{building_id}/holidays",
    summary="List the holidays of a building",
    responses=error_responses(401, 403, 404, 422),
)
async def list_holidays(
    building_id: BuildingId,
    scope: ManagerScopeDep,
    service: BuildingServiceDep,
    start: Annotated[date | None, Query(alias="from", description="First date, inclusive")] = None,
    end: Annotated[date | None, Query(alias="to", description="Last date, inclusive")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[HolidayOut]:
    """Holidays by date, optionally between ``from`` and ``to``."""
    page = await service.holidays(scope, building_id, start, end, limit, cursor)
    return Page(items=[holiday_out(h) for h in page.items], next_cursor=page.next_cursor)


@router.delete(
    "/holidays/{holiday_id}",
    status_code=204,
    summary="Delete a holiday",
    responses=error_responses(401, 403, 404),
)
async def delete_holiday(
    holiday_id: HolidayId, scope: ManagerScopeDep, service: BuildingServiceDep
) -> Response:
    """Remove one holiday of a building the caller manages."""
    await service.delete_holiday(scope, holiday_id)
    return Response(status_code=204)
