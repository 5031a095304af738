"""HTTP endpoints for audit. Thin: parse, authorize, query, shape the answer.

Managers see the rows of the buildings in their scope; rows without a building (owner-level
changes, for example) are for administrators only.
"""

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from api.audit.export import csv_lines
from api.audit.repository import AuditFilter, AuditRepository
from api.audit.schemas import AuditEventOut, event_out
from api.common import as_utc
from api.deps import ManagerScopeDep, SessionDep, StateDep
from api.errors import ApiError, error_responses
from api.owners.schemas import DEFAULT_LIMIT, Cursor, Limit, Page, decode_cursor, encode_cursor

router = APIRouter(prefix="/v1", tags=["audit"])

"""Rows per query while streaming CSV: memory stays flat however long the export."""

Id = Annotated[str | None, Query(min_length=1, max_length=64)]


async def audit_filter(
    door_id: Id = None,
    building_id: Id = None,
    actor: Annotated[
        str | None, Query(min_length=1, max_length=64, description="User id of the actor")
    ] = None,
    start: Annotated[
        datetime | None,
        Query(alias="from", description="From this instant, inclusive (ISO 8601; UTC if naive)"),
    ] = None,
    end: Annotated[
        datetime | None,
        Query(alias="to", description="Until this instant, exclusive (ISO 8601; UTC if naive)"),
    ] = None,
    decision: Annotated[Literal["allow", "deny"] | None, Query()] = None,
    action: Annotated[
        str | None, Query(min_length=1, max_length=64, examples=["unlock.requested"])
    ] = None,
) -> AuditFilter:
    """The filters shared by the JSON and the CSV query."""
    start = as_utc(start) if start else None
    end = as_utc(end) if end else None
    if start is not None and end is not None and start > end:
        raise ApiError(422, "invalid_range", "'from' must not be after 'to'")
    return AuditFilter(
        door_id=door_id,
        building_id=building_id,
        actor=actor,
        start=start,
        end=end,
        decision=decision,
        action=action,
    )


AuditFilterDep = Annotated[AuditFilter, Depends(audit_filter)]


def _before_id(cursor: str | None) -> int | None:
    if not cursor:
        return None
    value = decode_cursor(cursor, 1)[0]
    if not value.isdigit():
        raise ApiError(422, "invalid_cursor", "the cursor is not one this listing gave out")
    return int(value)


@router.get("/audit", summary="Query the audit trail", responses=error_responses(401, 403, 422))
async def query_audit(
    scope: ManagerScopeDep,
    session: SessionDep,
    where: AuditFilterDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[AuditEventOut]:
    """Audit rows newest first (by id, so pages stay stable while rows are added)."""
    rows = await AuditRepository(session).page(
        where, scope.visible_buildings, _before_id(cursor), limit + 1
    )
    items = [event_out(r) for r in rows[:limit]]
    next_cursor = encode_cursor(str(items[-1].id)) if len(rows) > limit else None
    return Page(items=items, next_cursor=next_cursor)


@router.get(
    "/audit.csv",
    summary="Export the audit trail as CSV",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/csv": {}}, "description": "CSV with a header row"},
        **error_responses(401, 403, 422),
    },
)
async def export_audit(
    scope: ManagerScopeDep, state: StateDep, where: AuditFilterDep
) -> StreamingResponse:
    """Every matching row, newest first, streamed as CSV (columns: id, ts, actor, action,
    building_id, door_id, gateway_id, decision, reason, result, command_id, latency_ms,
    detail as JSON)."""
    return StreamingResponse(
        csv_lines(state.sessions, where, scope.visible_buildings),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="audit.csv"'},
    )
