"""Reads the console needs that no service offers in one call: the live status of every door
of a building at once (one query, not one per door, because the overview polls it every few
seconds). Scope checks stay in the services: the doors come from DoorService.page."""

from collections.abc import Iterable
from dataclasses import dataclass

from api.bookings.models import Booking, BookingClient
from api.bookings.repository import BookingRepository
from api.buildings.models import Building, Door, DoorStatus
from api.buildings.repository import DoorRepository
from api.web.console.common import Console

MAX_DOORS = 200
"""Doors shown per building (one page of the service)."""


@dataclass(frozen=True, slots=True)
class DoorRow:
    """One door with its last reported state and whether its gateway is connected now."""

    door: Door
    status: DoorStatus | None
    online: bool

    @property
    def alarms(self) -> list[str]:
        return list(self.status.alarms) if self.status else []


async def door_rows(console: Console, building: Building) -> list[DoorRow]:
    """Every door of ``building`` (in scope, else 404) with its live state."""
    page = await console.doors.page(console.scope, building.id, MAX_DOORS, None)
    doors = list(page.items)
    statuses = await DoorRepository(console.session).statuses([d.id for d in doors])
    relay = console.state.relay
    return [DoorRow(d, statuses.get(d.id), relay.gateway_online(d.gateway_id)) for d in doors]


async def user_by_phone(console: Console, phone: str) -> str | None:
    """The id of the citizen who verified ``phone`` (E.164), if any."""
    found = await BookingRepository(console.session).users_by_phone([phone])
    return found.get(phone)


async def doors_by_building(
    console: Console, buildings: list[Building]
) -> list[tuple[Building, list[Door]]]:
    """The doors of each building, for the target pickers of the forms."""
    result = []
    for building in buildings:
        page = await console.doors.page(console.scope, building.id, MAX_DOORS, None)
        result.append((building, list(page.items)))
    return result


async def recent_bookings(console: Console, limit: int) -> list[tuple[Booking, BookingClient]]:
    """Bookings pushed by the booking systems of the owners whose buildings the manager
    sees (the same owners whose groups they may read)."""
    owners = await console.groups.readable_owner_ids(console.scope)
    return list(await BookingRepository(console.session).recent_of_owners(owners, limit))


async def display_names(console: Console, user_ids: Iterable[str | None]) -> dict[str, str]:
    """user id -> display name for the users a page lists (a page holds at most a few
    dozen distinct users; the session's identity map answers repeats)."""
    names: dict[str, str] = {}
    for user_id in {u for u in user_ids if u}:
        user = await console.grants.repository.user(user_id)
        if user is not None:
            names[user_id] = user.display_name
    return names
