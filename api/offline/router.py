"""HTTP endpoints for offline tokens. Thin: parse, call the service, shape the answer."""

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Request

from api.deps import CurrentUser, SessionDep, StateDep
from api.errors import error_responses
from api.offline.revocations import RevocationPublisher
from api.offline.schemas import OfflineTokenIssued, OfflineTokenRequest, OfflineTokenView
from api.offline.service import OfflineTokenService

router = APIRouter(prefix="/v1", tags=["offline unlock"])

DoorId = Annotated[str, Path(min_length=1, max_length=64, examples=["door_3f9c2a7be01d4c55"])]
TokenId = Annotated[str, Path(min_length=1, max_length=64)]


def get_offline_service(
    request: Request, state: StateDep, session: SessionDep
) -> OfflineTokenService:
    settings = state.settings
    publisher: RevocationPublisher = request.app.state.offline_revocations  # api/main.py
    return OfflineTokenService(
        session,
        state.keyring,
        publisher,
        issuer=settings.issuer,
        lifetime_s=settings.offline_token_lifetime_s,
    )


OfflineServiceDep = Annotated[OfflineTokenService, Depends(get_offline_service)]


@router.post(
    "/doors/{door_id}/tokens",
    status_code=201,
    summary="Get an offline token for a door",
    responses=error_responses(401, 403, 404, 422),
)
async def issue_offline_token(
    door_id: DoorId,
    user: CurrentUser,
    service: OfflineServiceDep,
    body: Annotated[OfflineTokenRequest, Body()],
) -> OfflineTokenIssued:
    """A short-lived token that opens this door through its gateway's local endpoint when the
    building is cut off from the API, bound to the app's key: the gateway demands a fresh proof
    signed by that key with every use. Decided like an unlock (404/403 with the same codes);
    access limited to a number of uses is refused (403 offline_not_available); a public key
    that is not an EC P-256 public JWK is 422 bad_public_key."""
    return await service.issue(user, door_id, body.public_key)


@router.get("/me/offline-tokens", summary="My offline tokens", responses=error_responses(401))
async def my_offline_tokens(
    user: CurrentUser, service: OfflineServiceDep
) -> list[OfflineTokenView]:
    """My offline tokens that have not expired, revoked ones included, newest first."""
    return await service.mine(user)


@router.delete(
    "/me/offline-tokens/{jti}",
    summary="Revoke one of my offline tokens",
    responses=error_responses(401, 404, 422),
)
async def revoke_offline_token(
    jti: TokenId, user: CurrentUser, service: OfflineServiceDep
) -> OfflineTokenView:
    """Revoke the token (say, the phone was lost): its gateway's signed revocation list is
    updated and published; the gateway refuses the token (``revoked``) once the list reaches
    it. Revoking again, or an expired token, changes nothing. 404 offline_token_not_found for
    a token that is not mine."""
    return await service.revoke(user, jti)
