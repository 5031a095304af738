"""Shared helpers for the management tests: seed organisations straight into the database
(fast, and independent of the endpoints under test) and sign in as their people."""

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
class Org:
    """An owner with one building, a gateway, a door and a holiday, and its people."""

    owner_id: str
    building_id: str
    gateway_id: str
    door_id: str
    holiday_id: str
    manager_id: str
    """Manages the whole owner."""
    building_manager_id: str
    """Manages the one building only."""


async def add_user(api: ApiHarness, prefix: str, *roles: Role) -> str:
    user_id = unique(prefix)
    async with api.state.sessions() as session:
        session.add(User(id=user_id, display_name=prefix, roles=[r.value for r in roles]))
        await session.commit()
    return user_id


async def add_admin(api: ApiHarness) -> str:
    return await add_user(api, "u-adm", Role.ADMIN)


async def add_citizen(api: ApiHarness) -> str:
    return await add_user(api, "u-cit", Role.CITIZEN)


async def seed_org(api: ApiHarness) -> Org:
    """A complete organisation with unique ids."""
    org = Org(
        owner_id=unique("own"),
        building_id=unique("bld"),
        gateway_id=unique("gw"),
        door_id=unique("door"),
        holiday_id=unique("hol"),
        manager_id=unique("u-mgr"),
        building_manager_id=unique("u-bmgr"),
    )
    async with api.state.sessions() as session:
        session.add(Owner(id=org.owner_id, name=f"Owner {org.owner_id}"))
        for user_id in (org.manager_id, org.building_manager_id):
            session.add(User(id=user_id, display_name=user_id, roles=[Role.MANAGER.value]))
        await session.flush()
        session.add(Building(id=org.building_id, name="Library", owner_id=org.owner_id))
        await session.flush()
        session.add(Gateway(id=org.gateway_id, name="Gateway", building_id=org.building_id))
        session.add(
            Holiday(
                id=org.holiday_id, building_id=org.building_id, date=date(2030, 5, 17), name="17."
            )
        )
        session.add(ManagerScope(id=unique("msc"), user_id=org.manager_id, owner_id=org.owner_id))
        session.add(
            ManagerScope(
                id=unique("msc"), user_id=org.building_manager_id, building_id=org.building_id
            )
        )
        await session.flush()
        session.add(
            Door(
                id=org.door_id,
                name="Main entrance",
                building_id=org.building_id,
                gateway_id=org.gateway_id,
                channel=1,
            )
        )
        await session.commit()
    return org


async def add_building(api: ApiHarness, owner_id: str, name: str = "Annex") -> str:
    building_id = unique("bld")
    async with api.state.sessions() as session:
        session.add(Building(id=building_id, name=name, owner_id=owner_id))
        await session.commit()
    return building_id


async def add_gateway(api: ApiHarness, building_id: str) -> str:
    gateway_id = unique("gw")
    async with api.state.sessions() as session:
        session.add(Gateway(id=gateway_id, name=gateway_id, building_id=building_id))
        await session.commit()
    return gateway_id


async def audit_for(api: ApiHarness, target_id: str) -> list[AuditEvent]:
    """Change records whose target is ``target_id``, oldest first."""
    statement = (
        select(AuditEvent)
        .where(col(AuditEvent.detail)["target"]["id"].as_string() == target_id)
        .order_by(col(AuditEvent.id))
    )
    async with api.state.sessions() as session:
        return list((await session.execute(statement)).scalars().all())


async def all_pages(
    client: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    limit: int = 200,
    params: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Follow next_cursor to the end of a listing."""
    items: list[dict[str, Any]] = []
    params = {**(params or {}), "limit": limit}
    while True:
        response = await client.get(url, headers=headers, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["items"]
        if body["next_cursor"] is None:
            return items
        params["cursor"] = body["next_cursor"]


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


async def audit_actions(api: ApiHarness, actor: str) -> list[AuditEvent]:
    """Audit rows written by ``actor``, oldest first."""
    statement = (
        select(AuditEvent).where(col(AuditEvent.actor) == actor).order_by(col(AuditEvent.id))
    )
    async with api.state.sessions() as session:
        return list((await session.execute(statement)).scalars().all())
