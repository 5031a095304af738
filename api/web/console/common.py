"""What every console page shares: the request context, the services, flash messages, the
303-after-post pattern and HTML answers for refusals.

Every action is a plain HTML form post answered with 303 back to a page that shows a flash
message, so the console works without JavaScript; static/console.js only adds live refresh.
A refusal from a service (ApiError) or a malformed form becomes a friendly page (GET) or a
flash message on the page the form came from (POST) instead of the JSON of the API.
"""

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from api.access.grants_service import GrantsService
from api.authz import Scope
from api.buildings.models import Building
from api.buildings.service import BuildingService, DoorService
from api.deps import SessionDep, StateDep
from api.errors import ApiError
from api.gateways.service import GatewayService
from api.groups.service import GroupService
from api.modes.publisher import ModePublisher
from api.modes.service import ModeService
from api.state import AppState
from api.web.session import WebScopeDep
from api.web.templating import render

PREFIX = "/console"
_FLASH = "console_flash"
MAX_BUILDINGS = 200
"""Buildings listed in the console's building picker (one page of the service)."""


@dataclass(slots=True)
class Console:
    """One console request: who asks (their Scope), the database session and the app state,
    with the domain services built on them. The web layer holds no SQL and no policy: every
    read and change goes through these services, which apply the scope."""

    request: Request
    session: AsyncSession
    state: AppState
    scope: Scope

    @property
    def buildings_service(self) -> BuildingService:
        return BuildingService(self.session)

    @property
    def doors(self) -> DoorService:
        return DoorService(self.session, self.state.relay)

    @property
    def gateways(self) -> GatewayService:
        return GatewayService(self.session, self.state.relay, self.state.broker_accounts)

    @property
    def grants(self) -> GrantsService:
        return GrantsService(self.session)

    @property
    def groups(self) -> GroupService:
        return GroupService(self.session)

    @property
    def modes(self) -> ModeService:
        publisher = ModePublisher(self.state.relay, self.state.keyring, self.state.settings.issuer)
        return ModeService(self.session, publisher, self.state.relay)

    async def buildings(self) -> list[Building]:
        """The buildings in scope, by name."""
        page = await self.buildings_service.page(self.scope, MAX_BUILDINGS, None)
        return list(page.items)

    async def building(self, building_id: str | None) -> Building | None:
        """The named building (404 if not in scope), or the first one in scope (None if the
        manager has none): the pages that are about one building default to the first."""
        if building_id:
            return await self.buildings_service.get(self.scope, building_id)
        buildings = await self.buildings()
        return buildings[0] if buildings else None

    def page(
        self, template: str, context: dict[str, Any] | None = None, *, status_code: int = 200
    ) -> HTMLResponse:
        """Render a console page with the flash messages and the signed-in manager."""
        return render_page(self.request, template, context, status_code=status_code)

    def fragment(self, template: str, context: dict[str, Any]) -> HTMLResponse:
        """Render a piece of a page for console.js to swap in (never cached, and it leaves
        the flash messages for the next full page)."""
        response = render(self.request, template, context)
        response.headers["Cache-Control"] = "no-store"
        return response


async def get_console(
    request: Request, session: SessionDep, state: StateDep, scope: WebScopeDep
) -> Console:
    return Console(request, session, state, scope)


ConsoleDep = Annotated[Console, Depends(get_console)]


def render_page(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
) -> HTMLResponse:
    """Render ``template`` with the pending flash messages (shown once)."""
    messages = request.session.pop(_FLASH, [])
    return render(
        request,
        template,
        {"flashes": messages, "path": request.url.path, **(context or {})},
        status_code=status_code,
    )


def flash(request: Request, message: str, kind: str = "ok") -> None:
    """Queue a message for the next page (kind: ok or bad)."""
    queued = list(request.session.get(_FLASH, []))
    queued.append({"kind": kind, "message": message})
    request.session[_FLASH] = queued[-5:]


def see_other(url: str) -> RedirectResponse:
    """The answer to a successful form post: back to a page, with GET."""
    return RedirectResponse(url, status_code=303)


def back_to(request: Request, fallback: str = "/console") -> str:
    """Where a refused form goes back to: the page it came from if that is a console page of
    this site, else ``fallback``."""
    referer = urlsplit(request.headers.get("referer", ""))
    same_site = not referer.netloc or referer.netloc == request.url.netloc
    if same_site and referer.path.startswith("/console") and not referer.path.endswith(".csv"):
        return referer.path + (f"?{referer.query}" if referer.query else "")
    return fallback


def _validation_message(exc: RequestValidationError | ValidationError) -> str:
    fields = []
    for error in exc.errors():
        location = [str(p) for p in error.get("loc", ()) if p not in ("body", "query")]
        fields.append(f"{'.'.join(location) or 'input'}: {error.get('msg', 'invalid')}")
    return "Please check the form: " + "; ".join(fields[:5])


def _refusal(request: Request, status: int, code: str, message: str) -> Response:
    if request.method == "POST" and code != "csrf_failed" and status not in (401, 403):
        flash(request, message, "bad")
        return see_other(back_to(request))
    response = render_page(
        request,
        "console/error.html",
        {"status": status, "code": code, "message": message},
        status_code=status,
    )
    response.headers["Cache-Control"] = "no-store"
    return response


class ConsoleRoute(APIRoute):
    """A console route: refusals become HTML (see the module docstring). The database
    session has already been rolled back when the error reaches this handler."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except ApiError as exc:
                return _refusal(request, exc.status, exc.code, exc.message)
            except (RequestValidationError, ValidationError) as exc:
                return _refusal(request, 422, "invalid_input", _validation_message(exc))

        return handle
