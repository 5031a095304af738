"""Sign-in and sign-out of the web app.

Dev mode: pick a seeded user (the development identity provider). OpenID Connect (authorization
code + PKCE) is added by api/identity/oidc.py.
"""

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlmodel import select

from api.deps import SessionDep, StateDep
from api.errors import ApiError
from api.identity.models import User
from api.web.session import CsrfDep, sign_in, sign_out
from api.web.templating import render

router = APIRouter(prefix="/app", include_in_schema=False)


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
    return render(request, "auth/login.html", {"dev_users": dev_users, "next": safe_next(next)})


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
async def logout(request: Request, _csrf: CsrfDep) -> RedirectResponse:
    sign_out(request)
    return RedirectResponse("/app/login", status_code=303)
