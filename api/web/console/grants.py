"""Grants (list, create for a citizen or a group, revoke) and groups with their members."""

from collections.abc import Iterable
from typing import Annotated

from fastapi import APIRouter, Form
from fastapi.responses import HTMLResponse, RedirectResponse

from api.access.grants_repository import GrantFilters
from api.access.schemas import GrantCreate, GrantOut, SubjectIn, TargetIn
from api.buildings.models import Building, Door
from api.errors import ApiError
from api.groups.schemas import GroupCreate, GroupOut
from api.web.console import forms
from api.web.console.common import PREFIX, ConsoleDep, ConsoleRoute, flash, see_other
from api.web.console.reads import display_names, doors_by_building, user_by_phone
from api.web.session import CsrfDep

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute)

PAGE = 50
MAX_GROUPS = 200

OptionalText = Annotated[str | None, Form(max_length=200)]


@router.get("/grants", response_class=HTMLResponse)
async def grants_page(
    console: ConsoleDep,
    door_id: str | None = None,
    building_id: str | None = None,
    user_id: str | None = None,
    include_revoked: bool = False,
    cursor: str | None = None,
) -> HTMLResponse:
    """Grants in scope with filters, and the form to grant access."""
    filters = GrantFilters(
        forms.blank_to_none(door_id),
        forms.blank_to_none(building_id),
        forms.blank_to_none(user_id),
        None,
        include_revoked,
    )
    page = await console.grants.list(console.scope, filters, PAGE, forms.blank_to_none(cursor))
    buildings = await console.buildings()
    groups = await console.groups.list(console.scope, None, MAX_GROUPS, None)
    targets = await doors_by_building(console, buildings)
    names = await names_for(console, page.items, targets, groups.items)
    return console.page(
        "console/grants.html",
        {
            "names": names,
            "grants": page.items,
            "next_cursor": page.next_cursor,
            "filters": filters,
            "targets": targets,
            "groups": groups.items,
            "weekdays": forms.WEEKDAYS,
        },
    )


async def names_for(
    console: ConsoleDep,
    grants: Iterable[GrantOut],
    targets: list[tuple[Building, list[Door]]],
    groups: Iterable[GroupOut],
) -> dict[str, str]:
    """id -> name of the users, groups, buildings and doors a grants table shows."""
    names = await display_names(console, (g.subject.user_id for g in grants))
    names |= {g.id: g.name for g in groups}
    names |= {b.id: b.name for b, _ in targets}
    names |= {d.id: d.name for _, doors in targets for d in doors}
    return names


@router.post("/grants")
async def create_grant(
    console: ConsoleDep,
    _csrf: CsrfDep,
    target: Annotated[str, Form(max_length=140)],
    subject: OptionalText = None,
    group_id: OptionalText = None,
    valid_from: OptionalText = None,
    valid_until: OptionalText = None,
    days: Annotated[list[int] | None, Form()] = None,
    start: OptionalText = None,
    end: OptionalText = None,
    note: Annotated[str, Form(max_length=500)] = "",
) -> RedirectResponse:
    """Grant a citizen (by user id or verified phone number) or a group access to a door or
    every door of a building; window and weekly hours are optional."""
    door_id, building_id = forms.target(target)
    building = await building_of_target(console, door_id, building_id)
    subject_in = await subject_of(
        console, forms.blank_to_none(subject), forms.blank_to_none(group_id)
    )
    body = GrantCreate(
        subject=subject_in,
        target=TargetIn(door_id=door_id, building_id=building_id),
        valid_from=forms.local_datetime(valid_from, "valid_from"),
        valid_until=forms.local_datetime(valid_until, "valid_until"),
        timezone=building.timezone,
        schedule=forms.weekly_schedule(days or [], start, end),
        note=note.strip(),
    )
    grant = await console.grants.create(console.scope, body)
    if subject_in.group_id is not None:
        who = (await console.groups.get(console.scope, subject_in.group_id)).name
    else:
        assert subject_in.user_id is not None  # SubjectIn holds exactly one
        names = await display_names(console, [subject_in.user_id])
        who = names.get(subject_in.user_id, subject_in.user_id)
    flash(console.request, f"Access granted to {who} ({grant.id}).")
    return see_other("/console/grants")


@router.post("/grants/{grant_id}/revoke")
async def revoke_grant(grant_id: str, console: ConsoleDep, _csrf: CsrfDep) -> RedirectResponse:
    """Revoke a grant (and the shares made from it)."""
    await console.grants.revoke(console.scope, grant_id)
    flash(console.request, f"Grant {grant_id} revoked.")
    return see_other("/console/grants")


async def building_of_target(
    console: ConsoleDep, door_id: str | None, building_id: str | None
) -> Building:
    """The building a door/building target lies in (404 when out of scope): its timezone
    is the local time of the form's dates."""
    if door_id is not None:
        door = await console.doors.get(console.scope, door_id)
        building_id = door.building_id
    assert building_id is not None
    return await console.buildings_service.get(console.scope, building_id)


async def subject_of(console: ConsoleDep, subject: str | None, group_id: str | None) -> SubjectIn:
    """A citizen (user id, or a phone number some citizen verified) or a group."""
    if (subject is None) == (group_id is None):
        raise ApiError(422, "invalid_subject", "give either a citizen or a group, not both")
    if subject is not None and subject.startswith("+"):
        user_id = await user_by_phone(console, subject.replace(" ", ""))
        if user_id is None:
            raise ApiError(
                404, "user_not_found", f"no citizen has verified the phone number {subject}"
            )
        return SubjectIn(user_id=user_id)
    return SubjectIn(user_id=subject, group_id=group_id)


# Groups


@router.get("/groups", response_class=HTMLResponse)
async def groups_page(console: ConsoleDep) -> HTMLResponse:
    """Groups the manager can see, and the form to create one."""
    groups = await console.groups.list(console.scope, None, MAX_GROUPS, None)
    owners = sorted({b.owner_id for b in await console.buildings() if b.owner_id})
    writable = [o for o in owners if console.scope.has_owner(o)]
    return console.page("console/groups.html", {"groups": groups.items, "owners": writable})


@router.post("/groups")
async def create_group(
    console: ConsoleDep,
    _csrf: CsrfDep,
    owner_id: Annotated[str, Form(max_length=64)],
    name: Annotated[str, Form(max_length=200)],
    description: Annotated[str, Form(max_length=2000)] = "",
) -> RedirectResponse:
    group = await console.groups.create(
        console.scope, GroupCreate(owner_id=owner_id, name=name, description=description)
    )
    flash(console.request, f"Group {group.name!r} created.")
    return see_other(f"/console/groups/{group.id}")


@router.get("/groups/{group_id}", response_class=HTMLResponse)
async def group_page(group_id: str, console: ConsoleDep) -> HTMLResponse:
    group = await console.groups.get(console.scope, group_id)
    members = await console.groups.members(console.scope, group_id, MAX_GROUPS, None)
    return console.page("console/group.html", {"group": group, "members": members.items})


@router.post("/groups/{group_id}/members")
async def add_member(
    group_id: str,
    console: ConsoleDep,
    _csrf: CsrfDep,
    user_id: Annotated[str, Form(min_length=1, max_length=64)],
) -> RedirectResponse:
    added = await console.groups.add_member(console.scope, group_id, user_id.strip())
    message = "added" if added.created else "was already a member"
    flash(console.request, f"{added.member.display_name} {message}.")
    return see_other(f"/console/groups/{group_id}")


@router.post("/groups/{group_id}/members/{user_id}/remove")
async def remove_member(
    group_id: str, user_id: str, console: ConsoleDep, _csrf: CsrfDep
) -> RedirectResponse:
    await console.groups.remove_member(console.scope, group_id, user_id)
    flash(console.request, f"{user_id} removed from the group.")
    return see_other(f"/console/groups/{group_id}")
