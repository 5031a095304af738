"""Opening hours of a building as a weekly calendar (7 columns by 48 half-hours), and its
holidays.

The blocks come from the weekly schedules that open the building's doors: public hours of
each door, scheduled grants on the building or its doors, and passage schedules. A range that
crosses midnight is drawn as two blocks (to midnight, then from midnight on the next day).
Blocks are snapped to half-hours for drawing; their titles give the exact times.
"""

from dataclasses import dataclass
from datetime import date, time
from typing import Annotated

from fastapi import APIRouter, Form
from fastapi.responses import HTMLResponse, RedirectResponse

from api.access.grants_repository import GrantFilters
from api.buildings.schemas import HolidayCreate
from api.public_access.service import PublicAccessService
from api.schedules import Schedule
from api.web.console import forms
from api.web.console.common import PREFIX, ConsoleDep, ConsoleRoute, flash, see_other
from api.web.session import CsrfDep

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute)

SLOTS = 48
"""Half-hours per day: the rows of the calendar grid."""
MAX_RULES = 200


@dataclass(frozen=True, slots=True)
class Block:
    """One drawn opening: rows ``start``..``end`` (half-hour slots, end exclusive) of a day."""

    weekday: int
    start: int
    end: int
    label: str
    kind: str
    """public, grant or passage: picks the colour."""
    title: str


def _slot(at: time, *, rounding_up: bool) -> int:
    minutes = at.hour * 60 + at.minute
    slot, rest = divmod(minutes, 30)
    return slot + (1 if rounding_up and rest else 0)


def blocks_of(schedule: Schedule, label: str, kind: str) -> list[Block]:
    """The calendar blocks of one schedule's weekly ranges."""
    blocks = []
    for rng in schedule.weekly:
        title = f"{label}: {rng.start.strftime('%H:%M')}–{rng.end.strftime('%H:%M')}"
        start = _slot(rng.start, rounding_up=False)
        end = _slot(rng.end, rounding_up=True)
        if rng.end > rng.start:
            blocks.append(Block(rng.weekday, start, max(end, start + 1), label, kind, title))
            continue
        # Crosses midnight (end <= start): to the end of this day, then on into the next.
        blocks.append(Block(rng.weekday, start, SLOTS, label, kind, title))
        if end > 0:
            blocks.append(Block((rng.weekday + 1) % 7, 0, end, label, kind, title))
    return blocks


def by_day(blocks: list[Block]) -> list[list[Block]]:
    """Blocks per weekday (Monday first), earliest first."""
    days: list[list[Block]] = [[] for _ in range(7)]
    for block in sorted(blocks, key=lambda b: (b.start, b.end)):
        days[block.weekday].append(block)
    return days


@router.get("/hours", response_class=HTMLResponse)
async def hours_page(console: ConsoleDep, building: str | None = None) -> HTMLResponse:
    """The weekly calendar and the holidays of one building."""
    chosen = await console.building(forms.blank_to_none(building))
    blocks: list[Block] = []
    holidays = []
    if chosen is not None:
        blocks = await _blocks(console, chosen.id)
        page = await console.buildings_service.holidays(
            console.scope, chosen.id, None, None, MAX_RULES, None
        )
        holidays = page.items
    return console.page(
        "console/hours.html",
        {
            "building": chosen,
            "buildings": await console.buildings(),
            "days": by_day(blocks),
            "weekdays": forms.WEEKDAYS,
            "holidays": holidays,
            "today": date.today(),
        },
    )


async def _blocks(console: ConsoleDep, building_id: str) -> list[Block]:
    blocks: list[Block] = []
    building = await console.buildings_service.get(console.scope, building_id)
    doors = await console.doors.page(console.scope, building.id, MAX_RULES, None)
    public = PublicAccessService(console.session)
    for door in doors.items:
        rules = await public.list(console.scope, door.id, MAX_RULES, None)
        for rule in rules.items:
            if rule.enabled:
                age = f", {rule.min_age}+" if rule.min_age else ""
                blocks += blocks_of(rule.schedule, f"Public hours · {door.name}{age}", "public")
        if door.passage_schedule:
            schedule = Schedule.model_validate(door.passage_schedule)
            blocks += blocks_of(schedule, f"Passage · {door.name}", "passage")
    grants = await console.grants.list(
        console.scope, GrantFilters(None, building.id, None, None, False), MAX_RULES, None
    )
    door_names = {d.id: d.name for d in doors.items}
    groups = await console.groups.list(console.scope, None, MAX_RULES, None)
    group_names = {g.id: g.name for g in groups.items}
    for grant in grants.items:
        if grant.schedule is not None:
            subject = grant.subject
            who = group_names.get(subject.group_id or "") or subject.user_id or subject.phone
            where = door_names.get(grant.target.door_id or "", "all doors")
            blocks += blocks_of(grant.schedule, f"{who} · {where}", "grant")
    return blocks


@router.post("/hours/holidays")
async def add_holiday(
    console: ConsoleDep,
    _csrf: CsrfDep,
    building_id: Annotated[str, Form(max_length=64)],
    day: Annotated[date, Form(alias="date")],
    name: Annotated[str, Form(min_length=1, max_length=200)],
) -> RedirectResponse:
    """Close the building for scheduled access on a date."""
    holiday = await console.buildings_service.add_holiday(
        console.scope, building_id, HolidayCreate(date=day, name=name)
    )
    flash(console.request, f"Holiday {holiday.name!r} on {holiday.date.isoformat()} added.")
    return see_other(f"/console/hours?building={building_id}")


@router.post("/hours/holidays/{holiday_id}/delete")
async def delete_holiday(
    holiday_id: str,
    console: ConsoleDep,
    _csrf: CsrfDep,
    building_id: Annotated[str, Form(max_length=64)],
) -> RedirectResponse:
    await console.buildings_service.delete_holiday(console.scope, holiday_id)
    flash(console.request, "Holiday removed.")
    return see_other(f"/console/hours?building={building_id}")
