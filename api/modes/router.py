"""HTTP endpoints for lockdown and passage mode (thin: parse, authorize, call the service)."""

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path

from api.deps import ManagerScopeDep, SessionDep, StateDep
from api.errors import error_responses
from api.modes.publisher import ModePublisher
from api.modes.schemas import (
    LockdownRequest,
    LockdownView,
    PassageScheduleRequest,
    PassageScheduleView,
)
from api.modes.service import ModeService

router = APIRouter(prefix="/v1", tags=["lockdown and passage"])

BuildingId = Annotated[str, Path(min_length=1, max_length=64, examples=["bld_9a8b7c6d5e4f3a2b"])]
DoorId = Annotated[str, Path(min_length=1, max_length=64, examples=["grunerlokka-main"])]


async def get_mode_service(state: StateDep, session: SessionDep) -> ModeService:
    publisher = ModePublisher(state.relay, state.keyring, state.settings.issuer)
    return ModeService(session, publisher, state.relay)


ModeServiceDep = Annotated[ModeService, Depends(get_mode_service)]


@router.post(
    "/buildings/{building_id}/lockdown",
    summary="Lock a building down",
    responses=error_responses(401, 403, 404, 409, 422),
)
async def start_lockdown(
    building_id: BuildingId,
    scope: ManagerScopeDep,
    service: ModeServiceDep,
    body: Annotated[LockdownRequest, Body()],
) -> LockdownView:
    """Suspend every grant and public hour of the building and tell each of its gateways to
    lock every door and refuse every unlock. Answers once the online gateways have
    acknowledged (or after about two seconds), with each gateway's acknowledgement so far.
    409 already_in_lockdown when it is."""
    return await service.start_lockdown(scope, building_id, body.reason)


@router.delete(
    "/buildings/{building_id}/lockdown",
    summary="Lift a building's lockdown",
    responses=error_responses(401, 403, 404, 409, 422),
)
async def lift_lockdown(
    building_id: BuildingId, scope: ManagerScopeDep, service: ModeServiceDep
) -> LockdownView:
    """End the lockdown: grants and public hours apply again, gateways accept unlocks, and
    doors in a passage window are held unlocked again. 409 not_in_lockdown when it is not."""
    return await service.lift_lockdown(scope, building_id)


@router.get(
    "/buildings/{building_id}/lockdown",
    summary="A building's lockdown state",
    responses=error_responses(401, 403, 404, 422),
)
async def get_lockdown(
    building_id: BuildingId, scope: ManagerScopeDep, service: ModeServiceDep
) -> LockdownView:
    """Whether the building is in lockdown, since when, by whom and why, and for each gateway
    whether it has applied the building's current mode, when, and whether it is online."""
    return await service.lockdown_view(scope, building_id)


@router.put(
    "/doors/{door_id}/passage-schedule",
    summary="Set a door's passage schedule",
    responses=error_responses(401, 403, 404, 422),
)
async def set_passage_schedule(
    door_id: DoorId,
    scope: ManagerScopeDep,
    service: ModeServiceDep,
    body: Annotated[PassageScheduleRequest, Body()],
) -> PassageScheduleView:
    """During the schedule's windows (building local time, holidays respected) the door's
    gateway holds it unlocked and relocks it at each window's end by itself. ``null``
    removes passage mode. Lockdown overrides it. Takes effect within 15 seconds."""
    return await service.set_passage_schedule(scope, door_id, body.schedule)
