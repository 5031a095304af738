"""HTTP endpoints for public hours. Thin: parse, authorize, call the service, shape the answer."""

from typing import Annotated

from fastapi import APIRouter, Depends, Path, status

from api.access.schemas import DEFAULT_LIMIT, CursorQuery, LimitQuery, Page
from api.deps import ManagerScopeDep, SessionDep
from api.errors import error_responses
from api.public_access.schemas import PublicAccessCreate, PublicAccessOut, PublicAccessUpdate
from api.public_access.service import PublicAccessService

router = APIRouter(prefix="/v1", tags=["public hours"])

DoorId = Annotated[str, Path(min_length=1, max_length=64, examples=["door_3f9c2a7be01d4c55"])]
RuleId = Annotated[str, Path(min_length=1, max_length=64, examples=["pub_4e5f6a7b8c9d0e1f"])]


async def get_public_access_service(session: SessionDep) -> PublicAccessService:
    return PublicAccessService(session)


PublicAccessServiceDep = Annotated[PublicAccessService, Depends(get_public_access_service)]


@router.post(
    "/doors/{door_id}/public-access",
    status_code=status.HTTP_201_CREATED,
    summary="Add public hours to a door",
    responses=error_responses(401, 403, 404, 422),
)
async def create_public_access(
    door_id: DoorId,
    body: PublicAccessCreate,
    scope: ManagerScopeDep,
    service: PublicAccessServiceDep,
) -> PublicAccessOut:
    """Let any signed-in citizen who meets the conditions (minimum age, group) open the door
    during the schedule, in the building's local time."""
    return await service.create(scope, door_id, body)


@router.get(
    "/doors/{door_id}/public-access",
    summary="List a door's public hours",
    responses=error_responses(401, 403, 404, 422),
)
async def list_public_access(
    door_id: DoorId,
    scope: ManagerScopeDep,
    service: PublicAccessServiceDep,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[PublicAccessOut]:
    return await service.list(scope, door_id, limit, cursor)


@router.get(
    "/public-access/{rule_id}",
    summary="Get a public-hours rule",
    responses=error_responses(401, 403, 404),
)
async def get_public_access(
    rule_id: RuleId, scope: ManagerScopeDep, service: PublicAccessServiceDep
) -> PublicAccessOut:
    return await service.get(scope, rule_id)


@router.patch(
    "/public-access/{rule_id}",
    summary="Change a public-hours rule",
    responses=error_responses(401, 403, 404, 422),
)
async def update_public_access(
    rule_id: RuleId,
    body: PublicAccessUpdate,
    scope: ManagerScopeDep,
    service: PublicAccessServiceDep,
) -> PublicAccessOut:
    return await service.update(scope, rule_id, body)


@router.delete(
    "/public-access/{rule_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a public-hours rule",
    responses=error_responses(401, 403, 404),
)
async def delete_public_access(
    rule_id: RuleId, scope: ManagerScopeDep, service: PublicAccessServiceDep
) -> None:
    await service.delete(scope, rule_id)
