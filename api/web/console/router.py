"""Manager console pages (placeholder until the console lands)."""

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from api.web.session import WebScopeDep, WebUserDep
from api.web.templating import render

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("", response_class=HTMLResponse)
async def overview(request: Request, user: WebUserDep, scope: WebScopeDep) -> HTMLResponse:
    return render(request, "console/placeholder.html", {"user": user})
