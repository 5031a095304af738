"""SQL for grants."""

from collections.abc import Sequence

from sqlalchemy import or_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api.access.models import Grant


class GrantRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def for_user_and_door(
        self, user_id: str, door_id: str, building_id: str
    ) -> Sequence[Grant]:
        """Every grant of ``user_id`` that targets the door or its building, revoked or not."""
        statement = select(Grant).where(
            Grant.user_id == user_id,
            or_(col(Grant.door_id) == door_id, col(Grant.building_id) == building_id),
        )
        return (await self._session.execute(statement)).scalars().all()
