"""The audit log as CSV, streamed in batches (the JSON API's /v1/audit.csv and the console's)."""

import csv
import io
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.audit.repository import AuditFilter, AuditRepository
from api.audit.schemas import CSV_COLUMNS, csv_row

CSV_BATCH = 500


async def csv_lines(
    sessions: async_sessionmaker[AsyncSession],
    where: AuditFilter,
    building_ids: frozenset[str] | None,
) -> AsyncIterator[str]:
    """Every matching row, newest first, as CSV text (``csv_row`` neutralises spreadsheet
    formulas); ``building_ids`` None means every building (administrators)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def drain() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(CSV_COLUMNS)
    yield drain()
    before_id: int | None = None
    # Bounded: every batch moves before_id down, and a short batch ends the export.
    while True:
        # A short session per batch: the export holds no connection between batches.
        async with sessions() as session:
            rows = await AuditRepository(session).page(where, building_ids, before_id, CSV_BATCH)
        for row in rows:
            writer.writerow(csv_row(row))
        if rows:
            yield drain()
        if len(rows) < CSV_BATCH:
            return
        before_id = rows[-1].id
