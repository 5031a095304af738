"""Helpers for the tests of groups, grants and public hours: seed owners, buildings, doors and
people straight into the database (independent of the endpoints under test), read back the
audit trail, walk paginated listings."""

from dataclasses import dataclass
from datetime import date
from typing import Any

import httpx
from sqlalchemy import select
from sqlmodel import col

from api.audit.models import AuditEvent
from api.buildings.models import Building, Door, Holiday
from api.gateways.models import Gateway
from api.identity.models import Role, User
from api.owners.models import ManagerScope, Owner
from tests.conftest import ApiHarness
from tests.support import unique


@dataclass
class Site:
    """An owner with one building (doors on one gateway) and its two kinds of manager."""

    owner_id: str
    building_id: str
    gateway_id: str
    door_ids: list[str]
    owner_manager_id: str
    """Manages the whole owner: may change its groups."""
    building_manager_id: str
    """Manages the one building: may read the owner's groups, not change them."""
    timezone: str = "Europe/Oslo"

    @property
    def door_id(self) -> str:
        return self.door_ids[0]


async def add_user(
    api: ApiHarness, prefix: str, *roles: Role, birth_date: date | None = None
) -> str:
    user_id = unique(prefix)
    async with api.state.sessions() as session:
        session.add(
            User(
                id=user_id,
                display_name=f"Name of {user_id}",
                roles=[r.value for r in roles],
                birth_date=birth_date,
            )
        )
        await session.commit()
    return user_id


async def add_citizen(api: ApiHarness, birth_date: date | None = None) -> str:
    return await add_user(api, "u-cit", Role.CITIZEN, birth_date=birth_date)


async def add_admin(api: ApiHarness) -> str:
    return await add_user(api, "u-adm", Role.ADMIN)


async def add_manager(
    api: ApiHarness, *, owner_id: str | None = None, building_id: str | None = None
) -> str:
    """A manager whose scope is ``owner_id`` or ``building_id`` (or nothing at all)."""
    user_id = await add_user(api, "u-mgr", Role.MANAGER)
    if owner_id or building_id:
        await add_scope(api, user_id, owner_id=owner_id, building_id=building_id)
    return user_id


async def add_scope(
    api: ApiHarness, user_id: str, *, owner_id: str | None = None, building_id: str | None = None
) -> None:
    async with api.state.sessions() as session:
        session.add(
            ManagerScope(
                id=unique("msc"), user_id=user_id, owner_id=owner_id, building_id=building_id
            )
        )
        await session.commit()


async def add_site(api: ApiHarness, *, doors: int = 1, timezone: str = "Europe/Oslo") -> Site:
    """A new owner, building, gateway and ``doors`` doors, with an owner manager and a
    building manager."""
    owner_id = unique("own")
    async with api.state.sessions() as session:
        session.add(Owner(id=owner_id, name=f"Owner {owner_id}"))
        await session.commit()
    return await add_building(api, owner_id, doors=doors, timezone=timezone)


async def add_building(
    api: ApiHarness, owner_id: str | None, *, doors: int = 1, timezone: str = "Europe/Oslo"
) -> Site:
    """Another building (of ``owner_id``, or of no owner) with its own gateway and doors."""
    building_id = unique("bld")
    gateway_id = unique("gw")
    door_ids = [f"{gateway_id}-d{c}" for c in range(1, doors + 1)]
    async with api.state.sessions() as session:
        session.add(Building(id=building_id, name="Library", owner_id=owner_id, timezone=timezone))
        await session.flush()
        session.add(Gateway(id=gateway_id, name=gateway_id, building_id=building_id))
        await session.flush()
        for channel, door_id in enumerate(door_ids, start=1):
            session.add(
                Door(
                    id=door_id,
                    name=f"Door {channel}",
                    building_id=building_id,
                    gateway_id=gateway_id,
                    channel=channel,
                )
            )
        await session.commit()
    owner_manager = await add_manager(api, owner_id=owner_id) if owner_id else ""
    building_manager = await add_manager(api, building_id=building_id)
    return Site(
        owner_id=owner_id or "",
        building_id=building_id,
        gateway_id=gateway_id,
        door_ids=door_ids,
        owner_manager_id=owner_manager,
        building_manager_id=building_manager,
        timezone=timezone,
    )


async def add_holiday(api: ApiHarness, building_id: str, day: date) -> None:
    async with api.state.sessions() as session:
        session.add(Holiday(id=unique("hol"), building_id=building_id, date=day, name="Holiday"))
        await session.commit()


async def changes(api: ApiHarness, target_id: str) -> list[AuditEvent]:
    """Change records about ``target_id``, oldest first."""
    statement = (
        select(AuditEvent)
        .where(col(AuditEvent.detail)["target"]["id"].as_string() == target_id)
        .order_by(col(AuditEvent.id))
    )
    async with api.state.sessions() as session:
        return list((await session.execute(statement)).scalars().all())


async def every_page(
    client: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    *,
    limit: int,
    params: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """All items of a listing, following ``next_cursor``; also how many pages it took."""
    items: list[dict[str, Any]] = []
    query: dict[str, Any] = {**(params or {}), "limit": limit}
    pages = 0
    while True:
        response = await client.get(url, headers=headers, params=query)
        assert response.status_code == 200, response.text
        pages += 1
        body = response.json()
        assert len(body["items"]) <= limit
        items += body["items"]
        if body["next_cursor"] is None:
            return items, pages
        query["cursor"] = body["next_cursor"]


def code(response: httpx.Response) -> str:
    """The error code of an error answer."""
    value: str = response.json()["error"]["code"]
    return value
