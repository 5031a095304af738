"""SQL for the audit log (insert-only) and its queries."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.audit import chain
from api.audit.models import AuditEvent


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """What GET /audit and /audit.csv select; None means "any". ``start`` is inclusive,
    ``end`` exclusive."""

    door_id: str | None = None
    building_id: str | None = None
    actor: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    decision: str | None = None
    action: str | None = None


class AuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    def add(self, event: AuditEvent) -> None:
        """Queue ``event`` for insertion with the session's transaction (into the hash chain)."""
        chain.append(self._session, event)

    async def page(
        self,
        where: AuditFilter,
        building_ids: frozenset[str] | None,
        before_id: int | None,
        limit: int,
    ) -> Sequence[AuditEvent]:
        """Matching rows, newest id first, below ``before_id``. ``building_ids`` None means
        every row; otherwise only rows of those buildings (never rows without a building)."""
        statement = select(AuditEvent).order_by(col(AuditEvent.id).desc()).limit(limit)
        if building_ids is not None:
            statement = statement.where(col(AuditEvent.building_id).in_(building_ids))
        if before_id is not None:
            statement = statement.where(col(AuditEvent.id) < before_id)
        for column, value in (
            (col(AuditEvent.door_id), where.door_id),
            (col(AuditEvent.building_id), where.building_id),
            (col(AuditEvent.actor), where.actor),
            (col(AuditEvent.decision), where.decision),
            (col(AuditEvent.action), where.action),
        ):
            if value is not None:
                statement = statement.where(column == value)
        if where.start is not None:
            statement = statement.where(col(AuditEvent.ts) >= where.start)
        if where.end is not None:
            statement = statement.where(col(AuditEvent.ts) < where.end)
        return (await self._session.execute(statement)).scalars().all()
