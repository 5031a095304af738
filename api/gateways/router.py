"""HTTP endpoints for gateways. Thin: parse, call the service, shape the answer. Anything
outside the caller's scope answers 404 exactly like a missing object."""

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Response

from api.deps import ManagerScopeDep, RelayDep, SessionDep, StateDep
from api.errors import error_responses
from api.gateways.models import Gateway
from api.gateways.schemas import (
    GatewayCreate,
    GatewayCreated,
    GatewayCredential,
    GatewayOut,
    GatewayUpdate,
)
from api.gateways.service import GatewayService, clock_ok
from api.owners.schemas import DEFAULT_LIMIT, Cursor, Limit, Page

router = APIRouter(prefix="/v1", tags=["gateways"])

BuildingId = Annotated[str, Path(min_length=1, max_length=64, examples=["bld_9a8b7c6d5e4f3a2b"])]
GatewayId = Annotated[str, Path(min_length=1, max_length=64, examples=["gw-grunerlokka-1"])]

# The password must not linger in caches or proxies.
_NO_STORE = {"Cache-Control": "no-store"}


async def get_gateway_service(
    session: SessionDep, relay: RelayDep, state: StateDep
) -> GatewayService:
    return GatewayService(session, relay, state.broker_accounts)


GatewayServiceDep = Annotated[GatewayService, Depends(get_gateway_service)]


def gateway_out(service: GatewayService, gateway: Gateway) -> GatewayOut:
    live = service.live(gateway)
    return GatewayOut(
        id=gateway.id,
        name=gateway.name,
        building_id=gateway.building_id,
        online=live.online,
        recorded_online=gateway.online,
        last_seen=gateway.last_seen,
        software=live.software,
        mode_version=gateway.mode_version,
        has_credential=gateway.credential_hash is not None,
        created_at=gateway.created_at,
        keyset_version=live.keyset_version,
        clock_offset_s=gateway.clock_offset_s,
        clock_ok=clock_ok(gateway.clock_offset_s),
    )


@router.post(
    "/buildings/{building_id}/gateways",
    status_code=201,
    summary="Register a gateway",
    responses=error_responses(401, 403, 404, 409, 422, 503),
)
async def create_gateway(
    building_id: BuildingId,
    scope: ManagerScopeDep,
    service: GatewayServiceDep,
    body: Annotated[GatewayCreate, Body()],
    response: Response,
) -> GatewayCreated:
    """Register a gateway in a building and create its broker login (user name = gateway
    id). The password is in this answer only; store it on the device."""
    gateway, password = await service.create(scope, building_id, body)
    response.headers.update(_NO_STORE)
    return GatewayCreated(
        gateway=gateway_out(service, gateway),
        credential=GatewayCredential(username=gateway.id, password=password),
    )


@router.get(
    "/buildings/{building_id}/gateways",
    summary="List the gateways of a building",
    responses=error_responses(401, 403, 404, 422),
)
async def list_gateways(
    building_id: BuildingId,
    scope: ManagerScopeDep,
    service: GatewayServiceDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[GatewayOut]:
    """The building's gateways by name, each with its live online state."""
    page = await service.page(scope, building_id, limit, cursor)
    return Page(items=[gateway_out(service, g) for g in page.items], next_cursor=page.next_cursor)


@router.get(
    "/gateways/{gateway_id}", summary="Get a gateway", responses=error_responses(401, 403, 404)
)
async def get_gateway(
    gateway_id: GatewayId, scope: ManagerScopeDep, service: GatewayServiceDep
) -> GatewayOut:
    """One gateway: recorded state from the database, live state from the broker."""
    return gateway_out(service, await service.get(scope, gateway_id))


@router.patch(
    "/gateways/{gateway_id}",
    summary="Rename a gateway",
    responses=error_responses(401, 403, 404, 422),
)
async def update_gateway(
    gateway_id: GatewayId,
    scope: ManagerScopeDep,
    service: GatewayServiceDep,
    body: Annotated[GatewayUpdate, Body()],
) -> GatewayOut:
    """Change the gateway's display name (its id is its broker identity and never changes)."""
    return gateway_out(service, await service.update(scope, gateway_id, body))


@router.post(
    "/gateways/{gateway_id}/credential",
    summary="Rotate a gateway's broker password",
    responses=error_responses(401, 403, 404, 409, 503),
)
async def rotate_credential(
    gateway_id: GatewayId, scope: ManagerScopeDep, service: GatewayServiceDep, response: Response
) -> GatewayCredential:
    """A new broker password, in this answer only; the previous one stops being valid."""
    gateway, password = await service.rotate_credential(scope, gateway_id)
    response.headers.update(_NO_STORE)
    return GatewayCredential(username=gateway.id, password=password)


@router.delete(
    "/gateways/{gateway_id}",
    status_code=204,
    summary="Delete a gateway",
    responses=error_responses(401, 403, 404, 409, 503),
)
async def delete_gateway(
    gateway_id: GatewayId, scope: ManagerScopeDep, service: GatewayServiceDep
) -> Response:
    """409 gateway_in_use while doors use the gateway."""
    await service.delete(scope, gateway_id)
    return Response(status_code=204)
