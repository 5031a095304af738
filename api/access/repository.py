"""SQL for use-limited grants. (The facts a decision needs are loaded in one statement by
api/access/facts.py.)"""

from datetime import date, datetime, timedelta

from sqlalchemy import or_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.access.models import Grant


class AccessRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def consume_use(self, grant_id: str) -> bool:
        """Count one use of a limited grant; False when none is left (race-safe)."""
        statement = (
            update(Grant)
            .where(
                col(Grant.id) == grant_id,
                or_(col(Grant.max_uses).is_(None), col(Grant.use_count) < col(Grant.max_uses)),
            )
            .values(use_count=col(Grant.use_count) + 1)
        )
        result = await self._session.execute(statement)
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def refund_use(self, grant_id: str) -> None:
        """Give back a use whose unlock did not happen."""
        statement = (
            update(Grant)
            .where(col(Grant.id) == grant_id, col(Grant.use_count) > 0)
            .values(use_count=col(Grant.use_count) - 1)
        )
        await self._session.execute(statement)

    @staticmethod
    def horizon(now: datetime) -> tuple[date, date]:
        """Holiday dates that can matter for a decision at ``now`` (yesterday .. two weeks)."""
        today = now.date()
        return today - timedelta(days=1), today + timedelta(days=16)
