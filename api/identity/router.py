"""The development identity provider's endpoints (mounted in dev mode only)."""

from typing import Annotated

from fastapi import APIRouter, Body
from pydantic import BaseModel, Field
from sqlmodel import select

from api.deps import SessionDep, StateDep
from api.errors import ApiError, error_responses
from api.identity.models import User

router = APIRouter(prefix="/dev", tags=["dev identity"])


class DevTokenRequest(BaseModel):
    user_id: str = Field(min_length=1, max_length=64, examples=["u_citizen_demo"])


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "Bearer"
    expires_in: int


class DevUser(BaseModel):
    id: str
    display_name: str
    roles: list[str]


@router.post(
    "/token", summary="Sign in as a seeded user (dev only)", responses=error_responses(404, 422)
)
async def dev_token(
    state: StateDep, session: SessionDep, body: Annotated[DevTokenRequest, Body()]
) -> TokenResponse:
    provider = state.dev_identity
    assert provider is not None  # the router is only mounted with a provider
    if await session.get(User, body.user_id) is None:
        raise ApiError(404, "user_not_found", f"no user {body.user_id!r}")
    return TokenResponse(access_token=provider.issue(body.user_id), expires_in=12 * 3600)


@router.get("/users", summary="Seeded users to sign in as (dev only)")
async def dev_users(session: SessionDep) -> list[DevUser]:
    users = (await session.execute(select(User).order_by(User.id))).scalars().all()
    return [DevUser(id=u.id, display_name=u.display_name, roles=u.roles) for u in users]
