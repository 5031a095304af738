"""SQL for the audit log (insert-only)."""

from sqlalchemy.ext.asyncio import AsyncSession

from api.audit.models import AuditEvent


class AuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    def add(self, event: AuditEvent) -> None:
        """Queue ``event`` for insertion with the session's transaction."""
        self._session.add(event)
