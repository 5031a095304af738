"""SQL for managing grants (the decision's own queries live in api/access/repository.py)."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.access.models import Grant
from api.buildings.models import Building, Door
from api.groups.models import Group
from api.identity.models import User

SelectT = TypeVar("SelectT", bound=Select[*tuple[Any, ...]])


def keyset(
    statement: SelectT,
    created: Any,
    key: Any,
    after: tuple[datetime, str] | None,
    limit: int,
) -> SelectT:
    """Order by (``created``, ``key``), start after the cursor position, fetch one row more
    than the page so the caller knows whether another page follows. Shared by the
    management listings (groups, members, grants, public hours)."""
    if after is not None:
        at, last = after
        statement = statement.where(or_(created > at, and_(created == at, key > last)))
    return statement.order_by(created, key).limit(limit + 1)


@dataclass(frozen=True, slots=True)
class GrantFilters:
    door_id: str | None = None
    building_id: str | None = None
    user_id: str | None = None
    group_id: str | None = None
    include_revoked: bool = False


def _target_building() -> ColumnElement[str]:
    """The building a grant's target lies in: its own building, or its door's."""
    return func.coalesce(col(Grant.building_id), col(Door.building_id))


class GrantsRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, grant_id: str, *, for_update: bool = False) -> tuple[Grant, str] | None:
        """The grant and the building its target lies in. ``for_update`` locks the row so
        concurrent changes and revocations serialize."""
        statement = (
            select(Grant, _target_building())
            .outerjoin(Door, col(Door.id) == col(Grant.door_id))
            .where(col(Grant.id) == grant_id)
        )
        if for_update:
            statement = statement.with_for_update(of=Grant)
        row = (await self._session.execute(statement)).first()
        return (row[0], row[1]) if row else None

    async def door(self, door_id: str) -> Door | None:
        return await self._session.get(Door, door_id)

    async def building(self, building_id: str) -> Building | None:
        return await self._session.get(Building, building_id)

    async def user(self, user_id: str) -> User | None:
        return await self._session.get(User, user_id)

    async def group(self, group_id: str) -> Group | None:
        return await self._session.get(Group, group_id)

    def add(self, grant: Grant) -> None:
        self._session.add(grant)

    async def flush(self) -> None:
        await self._session.flush()

    async def find(
        self,
        building_ids: frozenset[str] | None,
        filters: GrantFilters,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[tuple[Grant, str]]:
        """Grants matching ``filters`` whose target lies in ``building_ids`` (None: any)."""
        if building_ids is not None and not building_ids:
            return []
        statement = select(Grant, _target_building()).outerjoin(
            Door, col(Door.id) == col(Grant.door_id)
        )
        # Each side of the OR can use its own index (grants.building_id, doors.building_id),
        # which COALESCE(...) IN (...) could not.
        if building_ids is not None:
            statement = statement.where(
                or_(
                    col(Grant.building_id).in_(building_ids),
                    col(Door.building_id).in_(building_ids),
                )
            )
        if filters.door_id is not None:
            statement = statement.where(col(Grant.door_id) == filters.door_id)
        if filters.building_id is not None:
            statement = statement.where(
                or_(
                    col(Grant.building_id) == filters.building_id,
                    col(Door.building_id) == filters.building_id,
                )
            )
        if filters.user_id is not None:
            statement = statement.where(col(Grant.user_id) == filters.user_id)
        if filters.group_id is not None:
            statement = statement.where(col(Grant.group_id) == filters.group_id)
        if not filters.include_revoked:
            statement = statement.where(col(Grant.revoked_at).is_(None))
        statement = keyset(statement, col(Grant.created_at), col(Grant.id), after, limit)
        return [(g, b) for g, b in (await self._session.execute(statement)).all()]

    async def shares_of(self, grant_ids: Sequence[str]) -> Sequence[Grant]:
        """Grants shared from any of ``grant_ids`` (revoked or not), locked for update."""
        if not grant_ids:
            return []
        statement = select(Grant).where(col(Grant.parent_grant_id).in_(grant_ids)).with_for_update()
        return (await self._session.execute(statement)).scalars().all()
