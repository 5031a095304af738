"""HTTP endpoints for owners and manager scopes. Thin: parse, call the service, shape the
answer. Anything outside the caller's scope answers 404 exactly like a missing object."""

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Response

from api.deps import ManagerScopeDep, SessionDep
from api.errors import error_responses
from api.identity.models import User
from api.owners.models import ManagerScope, Owner
from api.owners.schemas import (
    DEFAULT_LIMIT,
    Cursor,
    Limit,
    ManagerAdd,
    ManagerOut,
    OwnerCreate,
    OwnerOut,
    OwnerUpdate,
    Page,
)
from api.owners.service import OwnerService

router = APIRouter(prefix="/v1", tags=["owners"])

OwnerId = Annotated[str, Path(min_length=1, max_length=64, examples=["own_5d1c0e2f9a3b4c7d"])]
BuildingId = Annotated[str, Path(min_length=1, max_length=64, examples=["bld_9a8b7c6d5e4f3a2b"])]
UserId = Annotated[str, Path(min_length=1, max_length=64, examples=["u_manager_demo"])]


async def get_owner_service(session: SessionDep) -> OwnerService:
    return OwnerService(session)


OwnerServiceDep = Annotated[OwnerService, Depends(get_owner_service)]


def owner_out(owner: Owner) -> OwnerOut:
    return OwnerOut(id=owner.id, name=owner.name, created_at=owner.created_at)


def manager_out(row: tuple[ManagerScope, User]) -> ManagerOut:
    scope, user = row
    return ManagerOut(
        user_id=user.id,
        display_name=user.display_name,
        owner_id=scope.owner_id,
        building_id=scope.building_id,
        created_at=scope.created_at,
    )


@router.post(
    "/owners",
    status_code=201,
    summary="Create an owner (administrators)",
    responses=error_responses(401, 403, 422),
)
async def create_owner(
    scope: ManagerScopeDep, service: OwnerServiceDep, body: Annotated[OwnerCreate, Body()]
) -> OwnerOut:
    """Create an owner, such as a city district, that buildings and groups belong to."""
    return owner_out(await service.create(scope, body))


@router.get("/owners", summary="List owners", responses=error_responses(401, 403, 422))
async def list_owners(
    scope: ManagerScopeDep,
    service: OwnerServiceDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[OwnerOut]:
    """The owners the caller manages (every owner for an administrator), by name."""
    page = await service.page(scope, limit, cursor)
    return Page(items=[owner_out(o) for o in page.items], next_cursor=page.next_cursor)


@router.get("/owners/{owner_id}", summary="Get an owner", responses=error_responses(401, 403, 404))
async def get_owner(
    owner_id: OwnerId, scope: ManagerScopeDep, service: OwnerServiceDep
) -> OwnerOut:
    """One owner the caller manages."""
    return owner_out(await service.get(scope, owner_id))


@router.patch(
    "/owners/{owner_id}", summary="Rename an owner", responses=error_responses(401, 403, 404, 422)
)
async def update_owner(
    owner_id: OwnerId,
    scope: ManagerScopeDep,
    service: OwnerServiceDep,
    body: Annotated[OwnerUpdate, Body()],
) -> OwnerOut:
    """Change an owner's name (its managers or an administrator)."""
    return owner_out(await service.update(scope, owner_id, body))


@router.delete(
    "/owners/{owner_id}",
    status_code=204,
    summary="Delete an empty owner (administrators)",
    responses=error_responses(401, 403, 404, 409),
)
async def delete_owner(
    owner_id: OwnerId, scope: ManagerScopeDep, service: OwnerServiceDep
) -> Response:
    """Delete an owner without buildings, groups or booking clients; 409 owner_not_empty
    otherwise. Its manager scopes are removed with it."""
    await service.delete(scope, owner_id)
    return Response(status_code=204)


@router.get(
    "/owners/{owner_id}/managers",
    summary="List the managers of an owner",
    responses=error_responses(401, 403, 404, 422),
)
async def list_owner_managers(
    owner_id: OwnerId,
    scope: ManagerScopeDep,
    service: OwnerServiceDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[ManagerOut]:
    """Users who manage every building of the owner, by user id."""
    page = await service.managers(scope, owner_id=owner_id, limit=limit, cursor=cursor)
    return Page(items=[manager_out(r) for r in page.items], next_cursor=page.next_cursor)


@router.post(
    "/owners/{owner_id}/managers",
    status_code=201,
    summary="Make a user manager of an owner (administrators)",
    responses=error_responses(401, 403, 404, 409, 422),
)
async def add_owner_manager(
    owner_id: OwnerId,
    scope: ManagerScopeDep,
    service: OwnerServiceDep,
    body: Annotated[ManagerAdd, Body()],
) -> ManagerOut:
    """The user manages every building of the owner from now on and gets the manager role
    if they lack it. 409 manager_exists when they already manage the owner."""
    return manager_out(await service.add_owner_manager(scope, owner_id, body))


@router.delete(
    "/owners/{owner_id}/managers/{user_id}",
    status_code=204,
    summary="End a user's management of an owner (administrators)",
    responses=error_responses(401, 403, 404),
)
async def remove_owner_manager(
    owner_id: OwnerId, user_id: UserId, scope: ManagerScopeDep, service: OwnerServiceDep
) -> Response:
    """Remove the manager scope; the user keeps scopes they hold elsewhere."""
    await service.remove_owner_manager(scope, owner_id, user_id)
    return Response(status_code=204)


@router.get(
    "/buildings/{building_id}/managers",
    summary="List the managers of a building",
    responses=error_responses(401, 403, 404, 422),
)
async def list_building_managers(
    building_id: BuildingId,
    scope: ManagerScopeDep,
    service: OwnerServiceDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[ManagerOut]:
    """Users named manager of this one building (managers of its owner are listed under
    the owner), by user id."""
    page = await service.managers(scope, building_id=building_id, limit=limit, cursor=cursor)
    return Page(items=[manager_out(r) for r in page.items], next_cursor=page.next_cursor)


@router.post(
    "/buildings/{building_id}/managers",
    status_code=201,
    summary="Make a user manager of a building",
    responses=error_responses(401, 403, 404, 409, 422),
)
async def add_building_manager(
    building_id: BuildingId,
    scope: ManagerScopeDep,
    service: OwnerServiceDep,
    body: Annotated[ManagerAdd, Body()],
) -> ManagerOut:
    """Administrators and managers of the building's owner may name building managers
    (403 owner_manager_only for a manager of the building alone)."""
    return manager_out(await service.add_building_manager(scope, building_id, body))


@router.delete(
    "/buildings/{building_id}/managers/{user_id}",
    status_code=204,
    summary="End a user's management of a building",
    responses=error_responses(401, 403, 404),
)
async def remove_building_manager(
    building_id: BuildingId, user_id: UserId, scope: ManagerScopeDep, service: OwnerServiceDep
) -> Response:
    """Remove the building manager scope (administrators, managers of the owner)."""
    await service.remove_building_manager(scope, building_id, user_id)
    return Response(status_code=204)
