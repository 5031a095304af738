"""FastAPI dependencies as Annotated aliases: one place that says how a request gets what it
needs. The request owns the session: committed when the handler returns, rolled back when it
raises."""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from api.authz import Scope, load_scope
from api.db import session_scope
from api.errors import ApiError
from api.identity.models import User
from api.identity.repository import ensure_user
from api.identity.verifier import IdentityTokenError, Principal
from api.keys.keyring import KeyRing
from api.relay.mqtt import MqttRelay
from api.settings import Settings
from api.state import AppState
from api.unlock.service import UnlockService


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.citykey
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_settings_dep(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    async for session in session_scope(state.sessions):
        yield session


# scope="function": commit (or roll back) BEFORE the response is sent. With the default
# scope FastAPI finishes a yield dependency after the response, so a failed commit would
# follow a 2xx the client already has.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def get_keyring(state: StateDep) -> KeyRing:
    return state.keyring


KeyRingDep = Annotated[KeyRing, Depends(get_keyring)]


async def get_relay(state: StateDep) -> MqttRelay:
    return state.relay


RelayDep = Annotated[MqttRelay, Depends(get_relay)]

BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def unknown_user() -> ApiError:
    """The 401 for a valid token whose subject is not a citykey user."""
    return ApiError(
        401,
        "unknown_user",
        "the token's subject is not a citykey user",
        headers=BEARER_CHALLENGE,
    )


_bearer = HTTPBearer(auto_error=False, description="An identity token from the identity provider")


async def get_principal(
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The verified caller of the bearer token (signature and claims); no database work."""
    if credentials is None:
        raise ApiError(401, "unauthorized", "a bearer token is required", headers=BEARER_CHALLENGE)
    try:
        return await state.verifier.verify(credentials.credentials)
    except IdentityTokenError as exc:
        raise ApiError(
            401, exc.code, "the bearer token is not valid", headers=BEARER_CHALLENGE
        ) from None


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
"""The verified bearer token only: for routes that look the user up themselves in the same
round trip as their own facts (the unlock path: api/access/facts.py)."""


async def get_current_user(session: SessionDep, principal: CurrentPrincipal) -> User:
    """The signed-in user: bearer token verified by signature and claims, user known to us."""
    if principal.provisioned_name is not None:
        # A person the OpenID Connect provider vouches for: a citizen from the first request.
        user: User | None = await ensure_user(
            session, principal.subject, principal.provisioned_name
        )
    else:
        user = await session.get(User, principal.subject)
    if user is None:
        raise unknown_user()
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_scope(session: SessionDep, user: CurrentUser) -> Scope:
    """The caller's management scope; 403 unless manager or admin."""
    return await load_scope(session, user)


ManagerScopeDep = Annotated[Scope, Depends(get_scope)]


async def get_unlock_service(state: StateDep, session: SessionDep) -> UnlockService:
    return UnlockService(session, state.relay, state.minter, state.settings.unlock_timeout_s)


UnlockServiceDep = Annotated[UnlockService, Depends(get_unlock_service)]
