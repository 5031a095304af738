"""Sign-in and sign-out of the web app.

Dev mode: pick a seeded user (the development identity provider). OpenID Connect: the
authorization code flow with PKCE (api/identity/oidc.py); the flow's state, nonce and PKCE
verifier wait in the session between the redirect and the callback. The session then holds the
pseudonymous user id only, never the pid or a provider token.
"""

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlmodel import select

from api.deps import SessionDep, StateDep
from api.errors import ApiError
from api.identity.models import User
from api.identity.oidc import FlowState, OidcError
from api.identity.repository import ensure_user
from api.web.session import CsrfDep, sign_in, sign_out
from api.web.templating import render

router = APIRouter(prefix="/app", include_in_schema=False)

_FLOW = "oidc_flow"
_VIA = "via"  # api/web/session.py keeps how the session signed in under this key


def safe_next(next_path: str | None) -> str:
    """Only same-site paths: an open redirect would let a phishing link borrow our sign-in."""
    if next_path and next_path.startswith("/") and not next_path.startswith("//"):
        return next_path
    return "/app"


@router.get("/login", response_class=HTMLResponse)
async def login_page(
    request: Request, state: StateDep, session: SessionDep, next: str | None = None
) -> HTMLResponse:
    dev_users: list[User] = []
    if state.dev_identity is not None:
        dev_users = list((await session.execute(select(User).order_by(User.id))).scalars())
    context = {
        "dev_users": dev_users,
        "next": safe_next(next),
        "oidc_enabled": state.oidc is not None,
        "oidc_name": state.oidc.display_name if state.oidc is not None else None,
    }
    return render(request, "auth/login.html", context)


def _sign_in_failed(request: Request, code: str, message: str) -> HTMLResponse:
    return render(request, "auth/error.html", {"code": code, "message": message}, status_code=400)


@router.get("/login/oidc", response_model=None)
async def oidc_login(
    request: Request, state: StateDep, next: str | None = None
) -> RedirectResponse | HTMLResponse:
    """Off to the provider; the flow (state, nonce, PKCE verifier) waits in the session."""
    if state.oidc is None:
        return _sign_in_failed(request, "oidc_not_configured", "no identity provider is set up")
    url, flow = state.oidc.begin(safe_next(next))
    request.session[_FLOW] = flow.to_session()
    return RedirectResponse(url, status_code=303)


@router.get("/auth/callback", response_model=None)
async def oidc_callback(
    request: Request, state: StateDep, session: SessionDep
) -> RedirectResponse | HTMLResponse:
    """The provider's answer: check it, create the citizen on first sign-in, sign in."""
    if state.oidc is None:
        return _sign_in_failed(request, "oidc_not_configured", "no identity provider is set up")
    # Taken out of the session first: a flow is good for one callback only.
    flow = FlowState.from_session(request.session.pop(_FLOW, None))
    try:
        person = await state.oidc.complete(dict(request.query_params), flow)
    except OidcError as exc:
        return _sign_in_failed(request, exc.code, exc.message)
    await ensure_user(session, person.user_id, person.display_name, rename=person.named)
    sign_in(request, person.user_id, via="oidc")
    assert flow is not None  # complete() refuses a missing flow
    return RedirectResponse(safe_next(flow.next_path), status_code=303)


@router.post("/login/dev")
async def dev_login(
    request: Request,
    state: StateDep,
    session: SessionDep,
    _csrf: CsrfDep,
    user_id: Annotated[str, Form(max_length=64)],
    next: Annotated[str, Form()] = "/app",
) -> RedirectResponse:
    if state.dev_identity is None:
        raise ApiError(404, "not_found", "the development sign-in is off")
    if await session.get(User, user_id) is None:
        raise ApiError(404, "user_not_found", f"no user {user_id!r}")
    sign_in(request, user_id, via="dev")
    return RedirectResponse(safe_next(next), status_code=303)


@router.post("/logout")
async def logout(request: Request, state: StateDep, _csrf: CsrfDep) -> RedirectResponse:
    """End the session; after an OpenID Connect sign-in also the provider's (RP-initiated
    logout, when its discovery offers an end_session_endpoint)."""
    via = request.session.get(_VIA)
    sign_out(request)
    if via == "oidc" and state.oidc is not None:
        back = state.settings.issuer.rstrip("/") + "/app/login"
        url = state.oidc.logout_url(back)
        if url is not None:
            return RedirectResponse(url, status_code=303)
    return RedirectResponse("/app/login", status_code=303)
