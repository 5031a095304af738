"""SQL for public opening hours."""

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.access.grants_repository import keyset
from api.buildings.models import Building, Door
from api.public_access.models import PublicAccess


class PublicAccessRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def door(self, door_id: str) -> tuple[Door, Building] | None:
        statement = (
            select(Door, Building)
            .join(Building, col(Building.id) == col(Door.building_id))
            .where(col(Door.id) == door_id)
        )
        row = (await self._session.execute(statement)).first()
        return (row[0], row[1]) if row else None

    async def get(
        self, rule_id: str, *, for_update: bool = False
    ) -> tuple[PublicAccess, Building] | None:
        """The rule and the building of its door."""
        statement = (
            select(PublicAccess, Building)
            .join(Door, col(Door.id) == col(PublicAccess.door_id))
            .join(Building, col(Building.id) == col(Door.building_id))
            .where(col(PublicAccess.id) == rule_id)
        )
        if for_update:
            statement = statement.with_for_update(of=PublicAccess)
        row = (await self._session.execute(statement)).first()
        return (row[0], row[1]) if row else None

    async def for_door(
        self, door_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[PublicAccess]:
        statement = select(PublicAccess).where(col(PublicAccess.door_id) == door_id)
        statement = keyset(
            statement, col(PublicAccess.created_at), col(PublicAccess.id), after, limit
        )
        return list((await self._session.execute(statement)).scalars().all())

    def add(self, rule: PublicAccess) -> None:
        self._session.add(rule)

    async def delete(self, rule: PublicAccess) -> None:
        await self._session.delete(rule)
