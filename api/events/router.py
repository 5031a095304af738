"""HTTP endpoints for journaled gateway events. Thin: parse, authorize, query, shape.

A manager sees the events of gateways in buildings in their scope; any other gateway answers
404 gateway_not_found, like a missing one."""

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from api.deps import ManagerScopeDep, SessionDep
from api.errors import error_responses
from api.events.schemas import EventGapsPage, GatewayEventOut
from api.events.service import EventQueryService
from api.owners.schemas import DEFAULT_LIMIT, Cursor, Limit, Page

router = APIRouter(prefix="/v1", tags=["events"])

GatewayId = Annotated[str, Path(min_length=1, max_length=64, examples=["gw-grunerlokka-1"])]


@router.get(
    "/gateways/{gateway_id}/events",
    summary="List a gateway's journaled events",
    responses=error_responses(401, 403, 404, 422),
)
async def list_events(
    gateway_id: GatewayId,
    scope: ManagerScopeDep,
    session: SessionDep,
    kind: Annotated[
        str | None, Query(min_length=1, max_length=64, examples=["door_forced_open"])
    ] = None,
    door_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[GatewayEventOut]:
    """Events as the gateway journaled them, highest sequence number first (stable pages
    while events arrive)."""
    return await EventQueryService(session).events(
        scope, gateway_id, limit, cursor, kind=kind, door_id=door_id
    )


@router.get(
    "/gateways/{gateway_id}/event-gaps",
    summary="List gaps in a gateway's event sequence",
    responses=error_responses(401, 403, 404, 422),
)
async def list_event_gaps(
    gateway_id: GatewayId,
    scope: ManagerScopeDep,
    session: SessionDep,
    state: Annotated[Literal["open", "closed"] | None, Query()] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> EventGapsPage:
    """Ranges of sequence numbers the API found missing, newest first, with how many are
    still missing; ``last_seq`` says up to where the journal is complete."""
    return await EventQueryService(session).gaps(scope, gateway_id, limit, cursor, state)
