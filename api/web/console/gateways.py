"""Gateways of a building with their live state, and provisioning a new one.

The broker password exists in the answer to the provisioning post only (the service stores a
hash): that answer is the credential page itself, not a redirect to a page that could show it
again, and it is marked ``Cache-Control: no-store`` so neither the browser's history nor a
proxy keeps it.
"""

from typing import Annotated

from fastapi import APIRouter, Form
from fastapi.responses import HTMLResponse

from api.gateways.schemas import GatewayCreate
from api.gateways.service import clock_ok
from api.web.console import forms
from api.web.console.common import PREFIX, ConsoleDep, ConsoleRoute
from api.web.session import CsrfDep

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute)

MAX_GATEWAYS = 200


@router.get("/gateways", response_class=HTMLResponse)
async def gateways_page(console: ConsoleDep, building: str | None = None) -> HTMLResponse:
    """The building's gateways and the provisioning form."""
    chosen = await console.building(forms.blank_to_none(building))
    rows = []
    if chosen is not None:
        service = console.gateways
        page = await service.page(console.scope, chosen.id, MAX_GATEWAYS, None)
        rows = [(g, service.live(g), clock_ok(g.clock_offset_s)) for g in page.items]
    return console.page(
        "console/gateways.html",
        {"building": chosen, "buildings": await console.buildings(), "rows": rows},
    )


@router.post("/gateways", response_class=HTMLResponse)
async def provision_gateway(
    console: ConsoleDep,
    _csrf: CsrfDep,
    building_id: Annotated[str, Form(max_length=64)],
    name: Annotated[str, Form(max_length=200)],
    gateway_id: Annotated[str | None, Form(max_length=64)] = None,
) -> HTMLResponse:
    """Register a gateway and show its broker credential, once."""
    body = GatewayCreate(id=forms.blank_to_none(gateway_id), name=name)
    gateway, password = await console.gateways.create(console.scope, building_id, body)
    building = await console.buildings_service.get(console.scope, building_id)
    response = console.page(
        "console/gateway_credential.html",
        {
            "gateway": gateway,
            "password": password,
            "building": building,
        },
        status_code=201,
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response
