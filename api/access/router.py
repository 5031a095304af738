"""HTTP endpoints for grants. Thin: parse, authorize, call the service, shape the answer."""

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, status

from api.access.grants_repository import GrantFilters
from api.access.grants_service import GrantsService
from api.access.schemas import (
    DEFAULT_LIMIT,
    CursorQuery,
    GrantCreate,
    GrantOut,
    GrantUpdate,
    LimitQuery,
    Page,
)
from api.deps import ManagerScopeDep, SessionDep
from api.errors import error_responses

router = APIRouter(prefix="/v1", tags=["grants"])

GrantId = Annotated[str, Path(min_length=1, max_length=64, examples=["grt_0c1d2e3f4a5b6c7d"])]
FilterId = Annotated[str | None, Query(min_length=1, max_length=64)]


async def get_grants_service(session: SessionDep) -> GrantsService:
    return GrantsService(session)


GrantsServiceDep = Annotated[GrantsService, Depends(get_grants_service)]


@router.post(
    "/grants",
    status_code=status.HTTP_201_CREATED,
    summary="Grant access",
    responses=error_responses(401, 403, 404, 422),
)
async def create_grant(
    body: GrantCreate, scope: ManagerScopeDep, service: GrantsServiceDep
) -> GrantOut:
    """Let a citizen or a group open a door or every door of a building, within an optional
    window (datetimes with an offset, or local ones with ``timezone``), weekly schedule in
    the building's local time and use limit."""
    return await service.create(scope, body)


@router.get("/grants", summary="List grants", responses=error_responses(401, 403, 422))
async def list_grants(
    scope: ManagerScopeDep,
    service: GrantsServiceDep,
    door_id: FilterId = None,
    building_id: FilterId = None,
    user_id: FilterId = None,
    group_id: FilterId = None,
    include_revoked: bool = False,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[GrantOut]:
    """Grants in your buildings. ``door_id``: grants on that door; ``building_id``: grants on
    the building or any of its doors; ``user_id``/``group_id``: the direct subject. Revoked
    grants only with ``include_revoked=true``."""
    filters = GrantFilters(door_id, building_id, user_id, group_id, include_revoked)
    return await service.list(scope, filters, limit, cursor)


@router.get("/grants/{grant_id}", summary="Get a grant", responses=error_responses(401, 403, 404))
async def get_grant(
    grant_id: GrantId, scope: ManagerScopeDep, service: GrantsServiceDep
) -> GrantOut:
    return await service.get(scope, grant_id)


@router.patch(
    "/grants/{grant_id}",
    summary="Change a grant",
    responses=error_responses(401, 403, 404, 409, 422),
)
async def update_grant(
    grant_id: GrantId, body: GrantUpdate, scope: ManagerScopeDep, service: GrantsServiceDep
) -> GrantOut:
    """Change window, schedule, use limit, holidays rule, shareability or note. ``null``
    clears a field (no start, no end, always, unlimited)."""
    return await service.update(scope, grant_id, body)


@router.delete(
    "/grants/{grant_id}", summary="Revoke a grant", responses=error_responses(401, 403, 404)
)
async def revoke_grant(
    grant_id: GrantId, scope: ManagerScopeDep, service: GrantsServiceDep
) -> GrantOut:
    """Revoke the grant and the shares made from it, effective for the next unlock. The row
    stays as history and is returned; revoking again is harmless."""
    return await service.revoke(scope, grant_id)
