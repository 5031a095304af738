"""Bookings: those pushed by the owners' booking systems, and booking a door by hand.

Bookings proper arrive from booking systems through /v1/bookings (machine credentials,
versioned, one grant per recipient and door). A manager booking a room by hand needs none of
that machinery: a manual booking is a grant with a start and an end (and the note saying what
it is for), made through the grants service like any other grant and listed here while it has
not ended.
"""

from datetime import date, datetime, time
from typing import Annotated

from fastapi import APIRouter, Form
from fastapi.responses import HTMLResponse, RedirectResponse

from api.access.grants_repository import GrantFilters
from api.access.schemas import GrantCreate, TargetIn
from api.common import as_utc, utcnow
from api.errors import ApiError
from api.web.console import forms
from api.web.console.common import PREFIX, ConsoleDep, ConsoleRoute, flash, see_other
from api.web.console.grants import building_of_target, names_for, subject_of
from api.web.console.reads import doors_by_building, recent_bookings
from api.web.session import CsrfDep

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute)

MAX_ROWS = 200
MANUAL_PREFIX = "Booking: "


@router.get("/bookings", response_class=HTMLResponse)
async def bookings_page(console: ConsoleDep) -> HTMLResponse:
    """Manual bookings not yet ended, booking-system bookings, and the booking form."""
    grants = await console.grants.list(
        console.scope, GrantFilters(None, None, None, None, False), MAX_ROWS, None
    )
    now = utcnow()
    manual = [
        g
        for g in grants.items
        if g.valid_until is not None and as_utc(g.valid_until) > now and g.booking_id is None
    ]
    manual.sort(key=lambda g: g.valid_from or g.created_at)
    targets = await doors_by_building(console, await console.buildings())
    return console.page(
        "console/bookings.html",
        {
            "manual": manual,
            "names": await names_for(console, manual, targets, []),
            "pushed": await recent_bookings(console, MAX_ROWS),
            "targets": targets,
            "today": date.today(),
        },
    )


@router.post("/bookings")
async def create_booking(
    console: ConsoleDep,
    _csrf: CsrfDep,
    subject: Annotated[str, Form(min_length=1, max_length=64)],
    target: Annotated[str, Form(max_length=140)],
    day: Annotated[date, Form(alias="date")],
    start: Annotated[time, Form()],
    end: Annotated[time, Form()],
    purpose: Annotated[str, Form(max_length=400)] = "",
) -> RedirectResponse:
    """Book a door (or a building) for a citizen on one day, from ``start`` to ``end`` in the
    building's local time."""
    if end <= start:
        raise ApiError(422, "invalid_window", "the booking must end after it starts")
    door_id, building_id = forms.target(target)
    building = await building_of_target(console, door_id, building_id)
    subject_in = await subject_of(console, subject.strip(), None)
    grant = await console.grants.create(
        console.scope,
        GrantCreate(
            subject=subject_in,
            target=TargetIn(door_id=door_id, building_id=building_id),
            valid_from=datetime.combine(day, start),
            valid_until=datetime.combine(day, end),
            timezone=building.timezone,
            note=(MANUAL_PREFIX + purpose.strip()).strip(),
        ),
    )
    flash(console.request, f"Booked for {subject_in.user_id} on {day.isoformat()} ({grant.id}).")
    return see_other("/console/bookings")
