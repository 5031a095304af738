"""HTTP endpoints for groups. Thin: parse, authorize, call the service, shape the answer."""

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response, status

from api.access.schemas import DEFAULT_LIMIT, CursorQuery, LimitQuery, Page
from api.deps import ManagerScopeDep, SessionDep
from api.errors import error_responses
from api.groups.schemas import GroupCreate, GroupOut, GroupUpdate, MemberOut
from api.groups.service import GroupService

router = APIRouter(prefix="/v1", tags=["groups"])

GroupId = Annotated[str, Path(min_length=1, max_length=64, examples=["grp_8b1e0c9d2a4f6e71"])]
UserId = Annotated[str, Path(min_length=1, max_length=64, examples=["u_3f9c2a7be01d4c55"])]


async def get_group_service(session: SessionDep) -> GroupService:
    return GroupService(session)


GroupServiceDep = Annotated[GroupService, Depends(get_group_service)]


@router.post(
    "/groups",
    status_code=status.HTTP_201_CREATED,
    summary="Create a group",
    responses=error_responses(401, 403, 404, 409, 422),
)
async def create_group(
    body: GroupCreate, scope: ManagerScopeDep, service: GroupServiceDep
) -> GroupOut:
    """Create a group of citizens for an owner you manage."""
    return await service.create(scope, body)


@router.get("/groups", summary="List groups", responses=error_responses(401, 403, 422))
async def list_groups(
    scope: ManagerScopeDep,
    service: GroupServiceDep,
    owner_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[GroupOut]:
    """Groups you may read (your owners', and those of your buildings' owners)."""
    return await service.list(scope, owner_id, limit, cursor)


@router.get("/groups/{group_id}", summary="Get a group", responses=error_responses(401, 403, 404))
async def get_group(
    group_id: GroupId, scope: ManagerScopeDep, service: GroupServiceDep
) -> GroupOut:
    return await service.get(scope, group_id)


@router.patch(
    "/groups/{group_id}",
    summary="Rename or describe a group",
    responses=error_responses(401, 403, 404, 409, 422),
)
async def update_group(
    group_id: GroupId, body: GroupUpdate, scope: ManagerScopeDep, service: GroupServiceDep
) -> GroupOut:
    return await service.update(scope, group_id, body)


@router.delete(
    "/groups/{group_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a group",
    responses=error_responses(401, 403, 404, 409),
)
async def delete_group(group_id: GroupId, scope: ManagerScopeDep, service: GroupServiceDep) -> None:
    """Delete a group and its memberships; 409 ``group_in_use`` while grants or public-hours
    rules refer to it."""
    await service.delete(scope, group_id)


@router.get(
    "/groups/{group_id}/members",
    summary="List a group's members",
    responses=error_responses(401, 403, 404, 422),
)
async def list_members(
    group_id: GroupId,
    scope: ManagerScopeDep,
    service: GroupServiceDep,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[MemberOut]:
    return await service.members(scope, group_id, limit, cursor)


@router.put(
    "/groups/{group_id}/members/{user_id}",
    summary="Add a member (idempotent)",
    responses={
        201: {"model": MemberOut, "description": "Added"},
        **error_responses(401, 403, 404),
    },
)
async def add_member(
    group_id: GroupId,
    user_id: UserId,
    scope: ManagerScopeDep,
    service: GroupServiceDep,
    response: Response,
) -> MemberOut:
    """Add a citizen to the group: 201 when added, 200 when already a member."""
    added = await service.add_member(scope, group_id, user_id)
    response.status_code = status.HTTP_201_CREATED if added.created else status.HTTP_200_OK
    return added.member


@router.delete(
    "/groups/{group_id}/members/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a member",
    responses=error_responses(401, 403, 404),
)
async def remove_member(
    group_id: GroupId, user_id: UserId, scope: ManagerScopeDep, service: GroupServiceDep
) -> None:
    await service.remove_member(scope, group_id, user_id)
