"""Test data straight into the database (independent of the endpoints under test), shared by
the citizen and booking tests."""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlmodel import col

from api.access import policy
from api.access.models import Grant
from api.access.service import AccessService
from api.audit.models import AuditEvent
from api.buildings.models import Building, Door
from api.gateways.models import Gateway
from api.groups.models import Group, GroupMember
from api.identity.models import Role, User
from api.owners.models import ManagerScope, Owner
from tests.conftest import ApiHarness
from tests.support import unique


async def add_user(
    api: ApiHarness, prefix: str = "u-cit", *roles: Role, phone: str | None = None
) -> str:
    user_id = unique(prefix)
    async with api.state.sessions() as session:
        session.add(
            User(
                id=user_id,
                display_name=prefix,
                roles=[r.value for r in roles or (Role.CITIZEN,)],
                phone=phone,
                phone_verified_at=datetime.now(UTC) if phone else None,
            )
        )
        await session.commit()
    return user_id


async def add_owner(api: ApiHarness) -> str:
    owner_id = unique("own")
    async with api.state.sessions() as session:
        session.add(Owner(id=owner_id, name=owner_id))
        await session.commit()
    return owner_id


async def add_manager(api: ApiHarness, owner_id: str) -> str:
    """A manager of the whole owner."""
    user_id = await add_user(api, "u-mgr", Role.MANAGER)
    async with api.state.sessions() as session:
        session.add(ManagerScope(id=unique("ms"), user_id=user_id, owner_id=owner_id))
        await session.commit()
    return user_id


async def add_building(
    api: ApiHarness,
    owner_id: str | None = None,
    *,
    doors: int = 1,
    name: str | None = None,
    lockdown: bool = False,
) -> tuple[str, list[str]]:
    """A building with a gateway row and ``doors`` doors (no running gateway)."""
    building_id = unique("bld")
    gateway_id = unique("gw")
    door_ids = [f"{building_id}-d{c}" for c in range(1, doors + 1)]
    async with api.state.sessions() as session:
        session.add(
            Building(
                id=building_id,
                name=name or building_id,
                owner_id=owner_id,
                lockdown_since=datetime.now(UTC) if lockdown else None,
            )
        )
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
    return building_id, door_ids


async def add_grant(api: ApiHarness, **fields: Any) -> str:
    grant_id = unique("grt")
    async with api.state.sessions() as session:
        session.add(Grant(id=grant_id, **fields))
        await session.commit()
    return grant_id


async def add_group_with(api: ApiHarness, owner_id: str, user_id: str) -> str:
    group_id = unique("grp")
    async with api.state.sessions() as session:
        session.add(Group(id=group_id, owner_id=owner_id, name=group_id))
        await session.flush()
        session.add(GroupMember(group_id=group_id, user_id=user_id))
        await session.commit()
    return group_id


async def get_grant(api: ApiHarness, grant_id: str) -> Grant:
    async with api.state.sessions() as session:
        grant = await session.get(Grant, grant_id)
        assert grant is not None
        return grant


async def grants_where(api: ApiHarness, **equal: Any) -> list[Grant]:
    async with api.state.sessions() as session:
        statement = (
            select(Grant)
            .where(*(getattr(Grant, k) == v for k, v in equal.items()))
            .order_by(col(Grant.id))
        )
        return list((await session.execute(statement)).scalars().all())


async def revoke(api: ApiHarness, grant_id: str) -> None:
    async with api.state.sessions() as session:
        grant = await session.get(Grant, grant_id)
        assert grant is not None
        grant.revoked_at = datetime.now(UTC)
        grant.revoked_by = "test"
        await session.commit()


async def decide(api: ApiHarness, user_id: str, door_id: str) -> policy.Decision:
    """The access decision the unlock endpoint would make now."""
    async with api.state.sessions() as session:
        user = await session.get(User, user_id)
        assert user is not None
        found = await AccessService(session).decide(user, door_id, datetime.now(UTC))
        assert found is not None
        return found[-1]


async def audit_count(api: ApiHarness, target_id: str) -> int:
    """Audit rows about one target (change records keep it in detail.target.id)."""
    async with api.state.sessions() as session:
        statement = select(func.count()).where(
            col(AuditEvent.detail)["target"]["id"].as_string() == target_id
        )
        return int((await session.execute(statement)).scalar_one())


async def audit_actions(api: ApiHarness, target_id: str) -> list[tuple[str | None, str]]:
    """(actor, action) of the audit rows about one target, oldest first."""
    async with api.state.sessions() as session:
        statement = (
            select(col(AuditEvent.actor), col(AuditEvent.action))
            .where(col(AuditEvent.detail)["target"]["id"].as_string() == target_id)
            .order_by(col(AuditEvent.id))
        )
        return [(a, b) for a, b in (await session.execute(statement)).all()]


def error_code(response: Any) -> str:
    code: str = response.json()["error"]["code"]
    return code
