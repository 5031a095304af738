"""SQL for journaled gateway events and the gaps in their sequence numbers."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, exists, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlmodel import col

from api.buildings.models import Door
from api.events.models import GatewayEventGap, GatewayEventRecord
from api.gateways.models import Gateway

LOOKUP_CHUNK = 500
"""Numbers per ``IN (...)`` look-up (well under every driver's parameter limit)."""

_EVENTS: Table = GatewayEventRecord.__table__  # type: ignore[attr-defined]
_GAPS: Table = GatewayEventGap.__table__  # type: ignore[attr-defined]
_GATEWAYS: Table = Gateway.__table__  # type: ignore[attr-defined]
_SET_LAST_SEQ = (
    update(_GATEWAYS)
    .where(_GATEWAYS.c.id == bindparam("b_id"))
    .values(last_seq=bindparam("b_last"))
)
"""One gateway's prefix; executed with many parameter sets (executemany)."""


@dataclass(frozen=True, slots=True)
class GatewayHead:
    """What the ingest needs of a gateway row (locked for the transaction)."""

    id: str
    building_id: str | None
    last_seq: int
    max_seq: int | None
    """The highest sequence number stored; None when nothing is."""
    open_gaps: int


class EventRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def lock_gateway(self, gateway_id: str) -> GatewayHead | None:
        """The gateway's row, locked until the transaction ends (PostgreSQL: FOR UPDATE), so
        that API instances storing events of the same gateway take turns; with the highest
        stored number and the count of open gaps, in the same round trip. None if unknown."""
        return (await self.lock_gateways([gateway_id])).get(gateway_id)

    async def lock_gateways(
        self, gateway_ids: Sequence[str], *, skip_locked: bool = False
    ) -> dict[str, GatewayHead]:
        """``lock_gateway`` for several gateways in one round trip, rows locked in id order
        (two API instances locking overlapping sets cannot deadlock). ``skip_locked``: a row
        another transaction holds is left out instead of waited for, like an unknown one
        (``known_gateways`` tells them apart)."""
        if not gateway_ids:
            return {}
        gateway = _GATEWAYS
        highest = (
            select(func.max(_EVENTS.c.seq))
            .where(_EVENTS.c.gateway_id == gateway.c.id)
            .correlate(gateway)
            .scalar_subquery()
        )
        gap_count = (
            select(func.count())
            .select_from(_GAPS)
            .where(_GAPS.c.gateway_id == gateway.c.id, _GAPS.c.closed_at.is_(None))
            .correlate(gateway)
            .scalar_subquery()
        )
        rows = await self._session.execute(
            select(gateway.c.id, gateway.c.building_id, gateway.c.last_seq, highest, gap_count)
            .where(gateway.c.id.in_(sorted(set(gateway_ids))))
            .order_by(gateway.c.id)
            .with_for_update(of=gateway, skip_locked=skip_locked)
        )
        return {
            row[0]: GatewayHead(
                row[0], row[1], int(row[2]), None if row[3] is None else int(row[3]), int(row[4])
            )
            for row in rows.all()
        }

    async def known_gateways(self, gateway_ids: Iterable[str]) -> set[str]:
        """Which of ``gateway_ids`` exist (no lock)."""
        wanted = sorted(set(gateway_ids))
        if not wanted:
            return set()
        rows = await self._session.execute(select(_GATEWAYS.c.id).where(_GATEWAYS.c.id.in_(wanted)))
        return set(rows.scalars().all())

    async def set_last_seq(self, gateway_id: str, last_seq: int) -> None:
        await self.set_last_seqs({gateway_id: last_seq})

    async def set_last_seqs(self, last_seqs: dict[str, int]) -> None:
        """Move several gateways' contiguous prefix: one executemany UPDATE."""
        if last_seqs:
            await self._session.execute(
                _SET_LAST_SEQ, [{"b_id": gid, "b_last": seq} for gid, seq in last_seqs.items()]
            )

    async def door_buildings(self, gateway_id: str) -> dict[str, str]:
        """Door id -> building id, for the doors of this gateway."""
        return (await self.doors_of([gateway_id])).get(gateway_id, {})

    async def doors_of(self, gateway_ids: Iterable[str]) -> dict[str, dict[str, str]]:
        """Gateway id -> (door id -> building id), for the doors of these gateways."""
        wanted = sorted(set(gateway_ids))
        if not wanted:
            return {}
        rows = await self._session.execute(
            select(col(Door.gateway_id), col(Door.id), col(Door.building_id)).where(
                col(Door.gateway_id).in_(wanted)
            )
        )
        found: dict[str, dict[str, str]] = {}
        for gateway_id, door, building in rows.all():
            found.setdefault(gateway_id, {})[door] = building
        return found

    async def insert_events(self, rows: list[dict[str, Any]]) -> set[tuple[str, int]]:
        """Insert each row unless its (gateway_id, seq) is stored already; the (gateway_id,
        seq) pairs inserted (rows of several gateways may go together).

        INSERT ... ON CONFLICT DO NOTHING RETURNING seq, on PostgreSQL and SQLite alike: a
        burst of thousands of events costs a few statements, and a duplicate is skipped by
        the database, not by a racy look-up first."""
        if not rows:
            return set()
        dialect = self._session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = (
            insert(_EVENTS)
            .on_conflict_do_nothing(index_elements=["gateway_id", "seq"])
            .returning(_EVENTS.c.gateway_id, _EVENTS.c.seq)
        )
        # executemany with RETURNING: SQLAlchemy's "insertmanyvalues" sends it as multi-row
        # INSERTs of up to a thousand rows each, from one cached compiled statement.
        result = await self._session.execute(statement, rows)
        return {(gateway_id, int(seq)) for gateway_id, seq in result.all()}

    async def fingerprints(
        self, gateway_id: str, seqs: Iterable[int]
    ) -> dict[int, tuple[str, datetime]]:
        """(kind, ts) of stored events, to tell a redelivery from a different event that
        claims the same number."""
        wanted = sorted(seqs)
        found: dict[int, tuple[str, datetime]] = {}
        for start in range(0, len(wanted), LOOKUP_CHUNK):
            rows = await self._session.execute(
                select(
                    col(GatewayEventRecord.seq),
                    col(GatewayEventRecord.kind),
                    col(GatewayEventRecord.ts),
                ).where(
                    col(GatewayEventRecord.gateway_id) == gateway_id,
                    col(GatewayEventRecord.seq).in_(wanted[start : start + LOOKUP_CHUNK]),
                )
            )
            found.update({int(seq): (kind, ts) for seq, kind, ts in rows.all()})
        return found

    async def open_gaps(self, gateway_id: str) -> Sequence[GatewayEventGap]:
        """The gateway's open gaps, lowest first."""
        rows = await self._session.execute(
            select(GatewayEventGap)
            .where(
                col(GatewayEventGap.gateway_id) == gateway_id,
                col(GatewayEventGap.closed_at).is_(None),
            )
            .order_by(col(GatewayEventGap.from_seq))
        )
        return rows.scalars().all()

    def add_gap(self, gap: GatewayEventGap) -> None:
        self._session.add(gap)

    async def count_between(self, gateway_id: str, low: int, high: int) -> int:
        """How many of the numbers low..high (inclusive) are stored."""
        return int(
            (
                await self._session.execute(
                    select(func.count()).where(
                        col(GatewayEventRecord.gateway_id) == gateway_id,
                        col(GatewayEventRecord.seq).between(low, high),
                    )
                )
            ).scalar_one()
        )

    async def first_missing(self, gateway_id: str, low: int, high: int) -> int | None:
        """The lowest number in low..high (inclusive) that is not stored; None if all are."""
        if low > high:
            return None
        stored = col(GatewayEventRecord.seq)
        first = await self._session.execute(
            select(stored).where(col(GatewayEventRecord.gateway_id) == gateway_id, stored == low)
        )
        if first.first() is None:
            return low
        following = aliased(GatewayEventRecord)
        # The lowest stored number whose successor is missing; both look-ups use the unique
        # (gateway_id, seq) index.
        before_hole = (
            await self._session.execute(
                select(func.min(stored)).where(
                    col(GatewayEventRecord.gateway_id) == gateway_id,
                    stored.between(low, high - 1),
                    ~exists().where(
                        col(following.gateway_id) == gateway_id,
                        col(following.seq) == stored + 1,
                    ),
                )
            )
        ).scalar()
        return None if before_hole is None else int(before_hole) + 1

    async def page_events(
        self,
        gateway_id: str,
        before_seq: int | None,
        limit: int,
        kind: str | None = None,
        door_id: str | None = None,
    ) -> Sequence[GatewayEventRecord]:
        """Stored events of a gateway, highest sequence number first, below ``before_seq``."""
        statement = (
            select(GatewayEventRecord)
            .where(col(GatewayEventRecord.gateway_id) == gateway_id)
            .order_by(col(GatewayEventRecord.seq).desc())
            .limit(limit)
        )
        if before_seq is not None:
            statement = statement.where(col(GatewayEventRecord.seq) < before_seq)
        if kind is not None:
            statement = statement.where(col(GatewayEventRecord.kind) == kind)
        if door_id is not None:
            statement = statement.where(col(GatewayEventRecord.door_id) == door_id)
        return (await self._session.execute(statement)).scalars().all()

    async def page_gaps(
        self, gateway_id: str, before_id: int | None, limit: int, state: str | None = None
    ) -> Sequence[GatewayEventGap]:
        """Gaps of a gateway, newest first; ``state`` "open" or "closed" filters."""
        statement = (
            select(GatewayEventGap)
            .where(col(GatewayEventGap.gateway_id) == gateway_id)
            .order_by(col(GatewayEventGap.id).desc())
            .limit(limit)
        )
        if before_id is not None:
            statement = statement.where(col(GatewayEventGap.id) < before_id)
        if state == "open":
            statement = statement.where(col(GatewayEventGap.closed_at).is_(None))
        elif state == "closed":
            statement = statement.where(col(GatewayEventGap.closed_at).is_not(None))
        return (await self._session.execute(statement)).scalars().all()
