"""Recording changes: every permission change is audited with who, what, before and after."""

from typing import Any

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel

from api.audit import chain
from api.audit.models import AuditEvent


def snapshot(obj: SQLModel | BaseModel | None) -> dict[str, Any] | None:
    """A JSON-safe picture of a row or model, for the before/after of an audit record."""
    if obj is None:
        return None
    return obj.model_dump(mode="json")


def record_change(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    target_type: str,
    target_id: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    building_id: str | None = None,
    door_id: str | None = None,
) -> AuditEvent:
    """Add an audit row for a change; it commits with the request's transaction."""
    event = AuditEvent(
        actor=actor,
        action=action,
        building_id=building_id,
        door_id=door_id,
        detail={"target": {"type": target_type, "id": target_id}, "before": before, "after": after},
    )
    return chain.append(session, event)
