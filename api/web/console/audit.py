"""The audit log: filters, newest-first pages, and the CSV export of the same selection.

The CSV is streamed in batches with a short database session per batch (memory and
connections stay flat however long the export); its cells go through the audit package's
``csv_row``, which neutralises spreadsheet formulas (a leading = + - @ gets an apostrophe).
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, StreamingResponse

from api.audit.export import csv_lines
from api.audit.repository import AuditFilter, AuditRepository
from api.errors import ApiError
from api.web.console import forms
from api.web.console.common import PREFIX, ConsoleDep, ConsoleRoute

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute)

PAGE = 50
DECISIONS = ("allow", "deny")


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """The filter form as typed (for re-displaying it) and what it selects."""

    fields: dict[str, str]
    where: AuditFilter

    def query_string(self, **extra: str) -> str:
        present = {k: v for k, v in self.fields.items() if v}
        return urlencode({**present, **extra})


def _instant(value: str | None, field: str) -> datetime | None:
    """A datetime-local field, read as UTC (the page says so)."""
    parsed = forms.local_datetime(value, field)
    return parsed.replace(tzinfo=UTC) if parsed else None


def audit_query(
    door_id: str | None = None,
    building_id: str | None = None,
    actor: str | None = None,
    decision: str | None = None,
    action: str | None = None,
    start: str | None = None,
    end: str | None = None,
) -> AuditQuery:
    """Parse the filter form; blank fields mean "any"."""
    fields = {
        "door_id": (door_id or "").strip()[:64],
        "building_id": (building_id or "").strip()[:64],
        "actor": (actor or "").strip()[:64],
        "decision": (decision or "").strip(),
        "action": (action or "").strip()[:64],
        "start": (start or "").strip()[:32],
        "end": (end or "").strip()[:32],
    }
    if fields["decision"] and fields["decision"] not in DECISIONS:
        raise ApiError(422, "invalid_decision", "decision is allow or deny")
    begin, finish = _instant(fields["start"], "from"), _instant(fields["end"], "to")
    if begin is not None and finish is not None and begin > finish:
        raise ApiError(422, "invalid_range", "'from' must not be after 'to'")
    where = AuditFilter(
        door_id=fields["door_id"] or None,
        building_id=fields["building_id"] or None,
        actor=fields["actor"] or None,
        start=begin,
        end=finish,
        decision=fields["decision"] or None,
        action=fields["action"] or None,
    )
    return AuditQuery(fields, where)


AuditQueryDep = Annotated[AuditQuery, Depends(audit_query)]
"""The filter form of a request's query string (the page and its CSV export share it)."""


@router.get("/audit", response_class=HTMLResponse)
async def audit_page(
    console: ConsoleDep, query: AuditQueryDep, before: int | None = None
) -> HTMLResponse:
    """One page of matching rows, newest first; ``before`` is the id the page starts below."""
    rows = await AuditRepository(console.session).page(
        query.where, console.scope.visible_buildings, before, PAGE + 1
    )
    events = list(rows[:PAGE])
    more = len(rows) > PAGE and events[-1].id is not None
    return console.page(
        "console/audit.html",
        {
            "events": events,
            "query": query,
            "next_url": f"?{query.query_string(before=str(events[-1].id))}" if more else None,
            "csv_url": f"/console/audit.csv?{query.query_string()}",
            "buildings": await console.buildings(),
        },
    )


@router.get("/audit.csv")
async def audit_csv(console: ConsoleDep, query: AuditQueryDep) -> StreamingResponse:
    """Every matching row as CSV (the columns of GET /v1/audit.csv), streamed."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(
        csv_lines(console.state.sessions, query.where, console.scope.visible_buildings),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="citykey-audit-{stamp}.csv"',
            "Cache-Control": "no-store",
        },
    )
