"""Web sessions: who is signed in to the web app, and the CSRF token of their forms.

The session lives in a signed cookie (Starlette's SessionMiddleware, itsdangerous): it holds the
citykey user id and a per-session CSRF token, never a national id or a provider token. The
cookie is HttpOnly and SameSite=Lax; every state-changing request must also carry the CSRF token
(form field ``csrf_token`` or header ``X-CSRF-Token``), so a cross-site form post is refused.
"""

import hmac
import secrets
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from api.authz import Scope, load_scope
from api.deps import SessionDep
from api.errors import ApiError
from api.identity.models import User
from api.settings import Settings

SESSION_COOKIE = "citykey_session"
SESSION_KEY_FILE = "web-session.key"
_USER = "uid"
_CSRF = "csrf"
_VIA = "via"


class CsrfFailedError(ApiError):
    """A state-changing request without the session's CSRF token (a stale or forged form)."""

    def __init__(self) -> None:
        super().__init__(403, "csrf_failed", "the form has expired; reload the page and try again")


class SignInRequiredError(Exception):
    """Raised by web dependencies when nobody is signed in; answered with a redirect to the
    sign-in page (or 401 for fetch/htmx requests). See api/web/install.py."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def session_secret(settings: Settings) -> str:
    """The cookie-signing secret: configured, or (dev) a random one kept in the key directory."""
    configured = settings.session_secret.get_secret_value()
    if configured:
        return configured
    path: Path = settings.key_dir / SESSION_KEY_FILE
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    path.write_text(secret)
    path.chmod(0o600)
    return secret


def sign_in(request: Request, user_id: str, *, via: str) -> None:
    """Start a fresh session for ``user_id`` (``via``: "oidc" or "dev"). A new CSRF token is
    issued, so a token seen before sign-in is useless afterwards."""
    request.session.clear()
    request.session[_USER] = user_id
    request.session[_VIA] = via
    request.session[_CSRF] = secrets.token_urlsafe(32)


def sign_out(request: Request) -> None:
    """Forget the session."""
    request.session.clear()


def signed_in_user_id(request: Request) -> str | None:
    """The user id of the session, if any."""
    value = request.session.get(_USER)
    return value if isinstance(value, str) else None


def csrf_token(request: Request) -> str:
    """The session's CSRF token (created on first use, also for anonymous sessions)."""
    token = request.session.get(_CSRF)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session[_CSRF] = token
    return token


async def require_csrf(request: Request) -> None:
    """Refuse a state-changing request without the session's CSRF token."""
    expected = request.session.get(_CSRF)
    supplied = request.headers.get("x-csrf-token")
    if supplied is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get("csrf_token")
        supplied = value if isinstance(value, str) else None
    if not isinstance(expected, str) or not supplied or not hmac.compare_digest(expected, supplied):
        raise CsrfFailedError


CsrfDep = Annotated[None, Depends(require_csrf)]


async def get_web_user(request: Request, session: SessionDep) -> User:
    """The signed-in user of the web app; otherwise off to the sign-in page."""
    user_id = signed_in_user_id(request)
    user = await session.get(User, user_id) if user_id else None
    if user is None:
        sign_out(request)
        next_path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequiredError(next_path)
    return user


WebUserDep = Annotated[User, Depends(get_web_user)]


async def get_web_scope(session: SessionDep, user: WebUserDep) -> Scope:
    """The signed-in manager's scope (403 unless manager or admin), as for the JSON API."""
    return await load_scope(session, user)


WebScopeDep = Annotated[Scope, Depends(get_web_scope)]

__all__ = [
    "SESSION_COOKIE",
    "CsrfDep",
    "SignInRequiredError",
    "WebScopeDep",
    "WebUserDep",
    "csrf_token",
    "session_secret",
    "sign_in",
    "sign_out",
    "signed_in_user_id",
]
