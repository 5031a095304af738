"""The unlock endpoint. Thin: parse, call the service, shape the answer."""

from datetime import datetime
from typing import Annotated

import orjson
from fastapi import APIRouter, Body, Path, Response
from pydantic import BaseModel, Field

from api.deps import CurrentPrincipal, UnlockServiceDep, unknown_user
from api.errors import error_responses
from api.unlock.service import UnknownCallerError

router = APIRouter(prefix="/v1", tags=["unlock"])

DoorId = Annotated[str, Path(min_length=1, max_length=64, examples=["door_3f9c2a7be01d4c55"])]


class UnlockRequest(BaseModel):
    """Optional body. Without it the door opens for its default time."""

    seconds: int | None = Field(
        default=None,
        ge=1,
        le=3600,
        description="How long to unlock; at most the door's default",
        examples=[5],
    )


class UnlockResponse(BaseModel):
    status: str = Field(examples=["unlocked"])
    door_id: str
    command_id: str
    unlocked_until: datetime
    latency_ms: float


@router.post(
    "/doors/{door_id}/unlock",
    summary="Open a door",
    response_model=UnlockResponse,
    responses=error_responses(401, 403, 404, 409, 422, 502, 503, 504),
)
async def unlock_door(
    door_id: DoorId,
    principal: CurrentPrincipal,
    service: UnlockServiceDep,
    body: Annotated[UnlockRequest | None, Body()] = None,
) -> Response:
    """Authorize the caller, send a signed, single-use command to the door's gateway and
    answer when the lock has opened (or why it did not)."""
    # The user row is read with the decision's facts (one round trip), not by a dependency.
    try:
        outcome = await service.unlock_for(principal, door_id, body.seconds if body else None)
    except UnknownCallerError:
        raise unknown_user() from None
    # Serialized directly (orjson, the same JSON as UnlockResponse gives): validating the
    # answer we just built through the response model costs more than the whole encoding.
    return Response(
        orjson.dumps(
            {
                "status": "unlocked",
                "door_id": outcome.door_id,
                "command_id": outcome.command_id,
                "unlocked_until": outcome.unlocked_until,
                "latency_ms": outcome.latency_ms,
            },
            option=orjson.OPT_UTC_Z,
        ),
        media_type="application/json",
    )
