"""Lockdown: a building's state and gateway acknowledgements (polled live), a confirmation
step before locking down, and lifting it.

Starting a lockdown is one click away from refusing every unlock in a building, so the button
only leads to a confirmation page; the post that applies it needs the reason typed there and
the explicit ``confirm`` field.
"""

from typing import Annotated

from fastapi import APIRouter, Form
from fastapi.responses import HTMLResponse, RedirectResponse

from api.errors import ApiError
from api.modes.schemas import LockdownRequest
from api.web.console import forms
from api.web.console.common import PREFIX, ConsoleDep, ConsoleRoute, flash, see_other
from api.web.session import CsrfDep

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute)


@router.get("/lockdown", response_class=HTMLResponse)
async def lockdown_page(console: ConsoleDep, building: str | None = None) -> HTMLResponse:
    """A building's lockdown state with each gateway's acknowledgement."""
    chosen = await console.building(forms.blank_to_none(building))
    view = await console.modes.lockdown_view(console.scope, chosen.id) if chosen else None
    return console.page(
        "console/lockdown.html",
        {"building": chosen, "buildings": await console.buildings(), "view": view},
    )


@router.get("/lockdown/{building_id}/acks.part", response_class=HTMLResponse)
async def acks_part(building_id: str, console: ConsoleDep) -> HTMLResponse:
    """The acknowledgement panel alone, for console.js to poll."""
    view = await console.modes.lockdown_view(console.scope, building_id)
    return console.fragment("console/_acks.html", {"view": view})


@router.get("/lockdown/{building_id}/confirm", response_class=HTMLResponse)
async def confirm_page(building_id: str, console: ConsoleDep) -> HTMLResponse:
    """ "Lock down <building>?" with the reason to give and an explicit confirm button."""
    building = await console.buildings_service.get(console.scope, building_id)
    gateways = await console.gateways.page(console.scope, building.id, 200, None)
    return console.page(
        "console/lockdown_confirm.html", {"building": building, "gateways": gateways.items}
    )


@router.post("/lockdown/{building_id}")
async def start_lockdown(
    building_id: str,
    console: ConsoleDep,
    _csrf: CsrfDep,
    reason: Annotated[str, Form(max_length=500)] = "",
    confirm: Annotated[str, Form(max_length=16)] = "",
) -> RedirectResponse:
    """Apply the lockdown (only with ``confirm=yes`` from the confirmation page)."""
    if confirm != "yes":
        raise ApiError(
            422, "confirmation_required", "confirm the lockdown on the confirmation page"
        )
    body = LockdownRequest(reason=reason)
    view = await console.modes.start_lockdown(console.scope, building_id, body.reason)
    acked = sum(1 for g in view.gateways if g.acknowledged)
    flash(
        console.request,
        f"Lockdown started. {acked} of {len(view.gateways)} gateways have acknowledged it.",
    )
    return see_other(f"/console/lockdown?building={building_id}")


@router.post("/lockdown/{building_id}/lift")
async def lift_lockdown(building_id: str, console: ConsoleDep, _csrf: CsrfDep) -> RedirectResponse:
    """End the lockdown: grants and public hours apply again."""
    await console.modes.lift_lockdown(console.scope, building_id)
    flash(console.request, "Lockdown lifted; doors follow their usual rules again.")
    return see_other(f"/console/lockdown?building={building_id}")
