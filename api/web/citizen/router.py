"""Citizen pages (placeholder until the citizen app lands)."""

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from api.web.session import WebUserDep
from api.web.templating import render

router = APIRouter(prefix="/app", include_in_schema=False)


@router.get("", response_class=HTMLResponse)
async def my_keys(request: Request, user: WebUserDep) -> HTMLResponse:
    return render(request, "citizen/placeholder.html", {"user": user})
