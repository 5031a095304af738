"""Jinja2 templates of the web app, with the globals every page needs."""

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from api.web.session import csrf_token, signed_in_user_id

WEB_DIR = Path(__file__).parent
templates = Jinja2Templates(directory=WEB_DIR / "templates")
templates.env.globals["csrf_token"] = csrf_token
templates.env.globals["signed_in_user_id"] = signed_in_user_id


def render(
    request: Request, name: str, context: dict[str, Any] | None = None, *, status_code: int = 200
) -> HTMLResponse:
    """Render template ``name`` with ``context`` (``request`` is always available to it)."""
    return templates.TemplateResponse(request, name, context or {}, status_code=status_code)
