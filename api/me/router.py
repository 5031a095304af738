"""HTTP endpoints for me. Thin: parse, authorize, call the service, shape the answer."""

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Query, Response

from api.common import as_utc, utcnow
from api.deps import CurrentUser, SessionDep, StateDep
from api.errors import error_responses
from api.me.phone_sender import phone_sender
from api.me.schemas import (
    ActivityPage,
    MyBuilding,
    PhoneChallenge,
    PhoneStart,
    PhoneVerified,
    PhoneVerify,
    ShareCreate,
    SharesView,
    ShareView,
)
from api.me.service import MAX_ATTEMPTS, MeService

router = APIRouter(prefix="/v1/me", tags=["me"])


async def get_me_service(session: SessionDep) -> MeService:
    return MeService(session)


MeServiceDep = Annotated[MeService, Depends(get_me_service)]


@router.get("/doors", summary="Doors I may open", responses=error_responses(401))
async def my_doors(user: CurrentUser, service: MeServiceDep) -> list[MyBuilding]:
    """Doors I may open now, and those I may open later (with the next window), grouped by
    building. Doors whose every rule has ended are not listed."""
    return await service.my_doors(user, utcnow())


@router.get("/activity", summary="My unlock history", responses=error_responses(401, 422))
async def my_activity(
    user: CurrentUser,
    service: MeServiceDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> ActivityPage:
    """My own unlock requests and their results, newest first."""
    return await service.activity(user, limit, cursor)


@router.post(
    "/shares",
    status_code=201,
    summary="Share a door with another citizen",
    responses=error_responses(401, 403, 404, 409, 422),
)
async def create_share(
    user: CurrentUser, service: MeServiceDep, body: Annotated[ShareCreate, Body()]
) -> ShareView:
    """Let another citizen open a door for a window, from one of my own shareable grants.
    The share ends when the grant it came from ends or is revoked."""
    return await service.create_share(user, body, utcnow())


@router.get("/shares", summary="Shares I gave and received", responses=error_responses(401))
async def list_shares(user: CurrentUser, service: MeServiceDep) -> SharesView:
    return await service.list_shares(user, utcnow())


@router.delete(
    "/shares/{grant_id}",
    status_code=204,
    summary="Revoke a share I gave or received",
    responses=error_responses(401, 404),
)
async def revoke_share(
    user: CurrentUser,
    service: MeServiceDep,
    grant_id: Annotated[str, Path(min_length=1, max_length=64)],
) -> Response:
    await service.revoke_share(user, grant_id, utcnow())
    return Response(status_code=204)


@router.post(
    "/phone",
    status_code=202,
    summary="Send a verification code to my phone",
    responses=error_responses(401, 422, 429, 502, 503),
)
async def start_phone_verification(
    user: CurrentUser,
    service: MeServiceDep,
    state: StateDep,
    body: Annotated[PhoneStart, Body()],
) -> PhoneChallenge:
    """Text a 6-digit code to the number; it is valid for 10 minutes and 5 attempts."""
    verification = await service.start_phone_verification(
        user, body.phone, phone_sender(state), utcnow()
    )
    return PhoneChallenge(
        phone=verification.phone,
        expires_at=as_utc(verification.expires_at),
        attempts_allowed=MAX_ATTEMPTS,
    )


@router.post(
    "/phone/verify",
    summary="Verify my phone with the code",
    responses=error_responses(401, 404, 409, 410, 422, 429),
)
async def verify_phone(
    user: CurrentUser, service: MeServiceDep, body: Annotated[PhoneVerify, Body()]
) -> PhoneVerified:
    """On the right code the number becomes mine, and grants sent to that number (for example
    by a booking system) become mine too."""
    verified, claimed = await service.verify_phone(user, body.code, utcnow())
    assert verified.phone is not None
    assert verified.phone_verified_at is not None
    return PhoneVerified(
        phone=verified.phone,
        phone_verified_at=as_utc(verified.phone_verified_at),
        claimed_grants=claimed,
    )
