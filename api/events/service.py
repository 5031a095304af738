"""Journaled gateway events: stored exactly once per (gateway, seq), gaps flagged and closed,
security-relevant events written to the audit log; and read back for managers.

How the sequence is followed, per gateway (``gateways.last_seq`` is the contiguous prefix:
every number up to it is stored):

- A batch is stored with INSERT ... ON CONFLICT DO NOTHING: a number stored before is a
  duplicate (a resend, or another API instance was first) and changes nothing. A duplicate
  whose kind or time differs from the stored event is a *conflict*: two different events
  claim one number (a gateway whose journal restarted below its old numbers). It is logged and
  audited, never stored over the first.
- A number above the highest stored one plus one opens a gap (``gateway_event_gaps``) for the
  numbers in between. A gap is closed when every number in it has arrived.
- A ``journal_started`` event starts a new sequence: the numbers between the old prefix and it
  are not a gap (a new journal starts at the clock in milliseconds, see
  lock_gateway/journal.py), and the prefix continues from it. The audit row says which prefix
  the API had, so a replaced journal is on record. The first event ever stored for a gateway
  starts its sequence the same way.
- The acknowledgement carries the new prefix, and ``resend`` when events above it are stored
  while some below them are missing.

Rows are locked per gateway (SELECT ... FOR UPDATE on the gateway), so several API instances
receiving the same events take turns and only the one that inserts an event audits it.
"""

import json
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from api.audit.models import AuditEvent
from api.audit.repository import AuditRepository
from api.authz import Scope, not_found
from api.buildings.status import LOW_BATTERY_PCT
from api.common import as_utc, utcnow
from api.errors import ApiError
from api.events.models import GatewayEventGap
from api.events.repository import EventRepository, GatewayHead
from api.events.schemas import EventGapOut, EventGapsPage, GatewayEventOut
from api.gateways.repository import GatewayRepository
from api.owners.schemas import Page, decode_cursor, encode_cursor
from citykey_protocol.messages import (
    JOURNAL_STARTED_EVENT,
    UNLOCK_DENIED_EVENT,
    UNLOCK_EVENT,
    GatewayEvent,
)

log = logging.getLogger(__name__)

MAX_SEQ = 2**62
"""Numbers beyond this are refused (the column is a signed 64-bit integer)."""
MAX_DATA_BYTES = 8192
"""Event data larger than this (as JSON) is stored as a note saying so."""
ROUTINE_KINDS = frozenset({"unlocked", "locked", "door_opened", "door_closed"})
"""Event kinds that are not audited (plain state changes; door_status has them). Every other
kind is audited, unknown ones included: a kind someone adds later is on record by default."""
CONFLICT_AUDIT = "gateway.seq_conflict"
TS_TOLERANCE_S = 0.002


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What storing one batch did, and what to acknowledge."""

    up_to_seq: int
    resend: bool
    inserted: int = 0
    duplicates: int = 0
    conflicts: int = 0
    gaps_opened: int = 0
    gaps_closed: int = 0


@dataclass(frozen=True, slots=True)
class SliceResult:
    """What storing several gateways' batches did (``EventStore.record_batches``)."""

    outcomes: dict[str, BatchOutcome]
    """Per gateway stored (or found stored): what to acknowledge."""
    skipped: frozenset[str]
    """Known gateways whose row another transaction held (``skip_locked``): nothing of
    theirs was stored; try again after it committed. Gateways in neither are unknown."""


def is_audited(kind: str, data: dict[str, Any]) -> bool:
    """Whether an event of ``kind`` goes into the audit log (battery: only when low)."""
    if kind in ROUTINE_KINDS:
        return False
    if kind == "battery":
        pct = data.get("pct")
        return isinstance(pct, int) and not isinstance(pct, bool) and pct < LOW_BATTERY_PCT
    return True


def _event_time(ts: float, fallback: datetime) -> datetime:
    try:
        return datetime.fromtimestamp(ts, UTC)
    except (OverflowError, OSError, ValueError):
        return fallback


def _safe_data(data: dict[str, Any]) -> dict[str, Any]:
    try:
        size = len(json.dumps(data, allow_nan=False))
    except (TypeError, ValueError):
        return {"unstorable": True}
    return data if size <= MAX_DATA_BYTES else {"truncated": True, "bytes": size}


def _text(value: object, limit: int) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


class EventStore:
    """Stores batches of one gateway's journaled events (the ingest's use case)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self._repo = EventRepository(session)
        self._audit = AuditRepository(session)

    async def record_batch(
        self, gateway_id: str, events: Sequence[GatewayEvent], now: datetime | None = None
    ) -> BatchOutcome | None:
        """Store ``events`` of ``gateway_id`` in the session's transaction (the caller
        commits). None when the gateway is unknown: nothing stored, nothing to acknowledge."""
        result = await self.record_batches({gateway_id: events}, now)
        return result.outcomes.get(gateway_id)

    async def record_batches(
        self,
        batches: Mapping[str, Sequence[GatewayEvent]],
        now: datetime | None = None,
        *,
        skip_locked: Collection[str] = (),
    ) -> SliceResult:
        """Store the batches of several gateways in the session's transaction (the caller
        commits): every gateway row locked in one statement, every event inserted in one,
        every prefix moved in one; the rest (duplicates, gaps, audit) only where needed.

        ``skip_locked``: gateways whose row, when another transaction holds it (another API
        instance storing the same events), is not waited for but reported in ``skipped``;
        nothing of theirs is stored here. The others' rows are waited for."""
        skip = [gateway_id for gateway_id in batches if gateway_id in skip_locked]
        wait = [gateway_id for gateway_id in batches if gateway_id not in skip_locked]
        heads = await self._repo.lock_gateways(wait)
        heads.update(await self._repo.lock_gateways(skip, skip_locked=True))
        missing = [gateway_id for gateway_id in batches if gateway_id not in heads]
        # Only a row that may be skipped can be missing for another reason than not existing.
        maybe_held = [gateway_id for gateway_id in missing if gateway_id in skip_locked]
        known = await self._repo.known_gateways(maybe_held) if maybe_held else set()
        for gateway_id in missing:
            if gateway_id not in known:
                log.warning("events from unknown gateway %r not stored", gateway_id)
        now = now or utcnow()
        valid: dict[str, dict[int, GatewayEvent]] = {}
        rows: dict[str, dict[int, dict[str, Any]]] = {}
        for gateway_id in heads:
            mine: dict[int, GatewayEvent] = {}
            for event in batches[gateway_id]:
                seq = event.seq
                if seq is not None and event.gateway_id == gateway_id and 1 <= seq <= MAX_SEQ:
                    mine.setdefault(seq, event)
            valid[gateway_id] = mine
            rows[gateway_id] = {seq: self._row(gateway_id, e, now) for seq, e in mine.items()}
        fresh = await self._repo.insert_events(
            [row for gateway_rows in rows.values() for row in gateway_rows.values()]
        )
        inserted: dict[str, list[int]] = {gateway_id: [] for gateway_id in heads}
        for gateway_id, seq in fresh:
            inserted[gateway_id].append(seq)
        audited = [
            gateway_id
            for gateway_id, seqs in inserted.items()
            if any(is_audited(valid[gateway_id][s].kind, valid[gateway_id][s].data) for s in seqs)
        ]
        doors = await self._repo.doors_of(audited) if audited else {}
        outcomes: dict[str, BatchOutcome] = {}
        prefixes: dict[str, int] = {}
        for gateway_id, head in heads.items():
            outcome = await self._follow(
                head,
                valid[gateway_id],
                rows[gateway_id],
                sorted(inserted[gateway_id]),
                doors.get(gateway_id, {}),
                now,
            )
            outcomes[gateway_id] = outcome
            if outcome.up_to_seq != head.last_seq:
                prefixes[gateway_id] = outcome.up_to_seq
        await self._repo.set_last_seqs(prefixes)
        return SliceResult(outcomes, frozenset(known))

    async def _follow(
        self,
        head: GatewayHead,
        valid: dict[int, GatewayEvent],
        rows: dict[int, dict[str, Any]],
        inserted: list[int],
        doors: dict[str, str],
        now: datetime,
    ) -> BatchOutcome:
        """One gateway's sequence after its events were inserted: conflicts, gaps, the new
        prefix (returned, not written) and the audit rows (``doors``: door id -> building id of
        the gateway's doors, needed when something is audited). No statement in the common case
        (contiguous numbers, no duplicates, no open gaps, nothing audited)."""
        gateway_id = head.id
        stored_max = head.max_seq
        last_seq = head.last_seq
        high = max(last_seq, stored_max or 0)
        if not valid:
            return BatchOutcome(last_seq, high > last_seq)
        fresh = set(inserted)
        duplicates = [seq for seq in valid if seq not in fresh]
        conflicts = await self._conflicts(gateway_id, duplicates, rows)

        # Where sequences start: journal_started, or the first event ever stored.
        starts = {s for s in inserted if valid[s].kind == JOURNAL_STARTED_EVENT and s > last_seq}
        if stored_max is None and inserted:
            starts.add(inserted[0])
        previous: dict[int, int] = {}
        for start in sorted(starts):
            if start <= high:
                conflicts.append(start)  # a journal began below numbers already stored
            elif start > last_seq + 1:
                previous[start] = last_seq
                last_seq = start - 1

        new_gaps: list[tuple[int, int]] = []
        for seq in inserted:
            if seq > high:
                if seq > high + 1 and seq not in starts:
                    new_gaps.append((high + 1, seq - 1))
                high = seq
        open_gaps = list(await self._repo.open_gaps(gateway_id)) if head.open_gaps else []
        closed = await self._close_filled_gaps(gateway_id, open_gaps, inserted, now)
        for low, top in new_gaps:
            self._repo.add_gap(
                GatewayEventGap(gateway_id=gateway_id, from_seq=low, to_seq=top, detected_at=now)
            )
            log.warning("gateway %s: events %d..%d missing", gateway_id, low, top)
        still_open = [(g.from_seq, g.to_seq) for g in open_gaps if g.closed_at is None]
        prefix = await self._prefix(gateway_id, last_seq, high, still_open + new_gaps)

        audited = [seq for seq in inserted if is_audited(valid[seq].kind, valid[seq].data)]
        for seq in audited:
            self._audit_event(head.building_id, doors, valid[seq], rows[seq], previous.get(seq))
        if conflicts:
            self._audit_conflicts(head.building_id, gateway_id, conflicts)
        return BatchOutcome(
            up_to_seq=prefix,
            resend=high > prefix,
            inserted=len(inserted),
            duplicates=len(duplicates),
            conflicts=len(conflicts),
            gaps_opened=len(new_gaps),
            gaps_closed=closed,
        )

    @staticmethod
    def _row(gateway_id: str, event: GatewayEvent, now: datetime) -> dict[str, Any]:
        door = event.door if event.door is not None and len(event.door) <= 64 else None
        return {
            "gateway_id": gateway_id,
            "seq": event.seq,
            "kind": event.kind[:64],
            "door_id": door,
            "ts": _event_time(event.ts, now),
            "received_at": now,
            "data": _safe_data(event.data),
        }

    async def _conflicts(
        self, gateway_id: str, duplicates: list[int], rows: dict[int, dict[str, Any]]
    ) -> list[int]:
        if not duplicates:
            return []
        stored = await self._repo.fingerprints(gateway_id, duplicates)
        conflicts = []
        for seq in duplicates:
            kind, ts = stored.get(seq, (None, None))
            row = rows[seq]
            if (
                kind != row["kind"]
                or ts is None
                or abs((as_utc(ts) - row["ts"]).total_seconds()) > TS_TOLERANCE_S
            ):
                conflicts.append(seq)
        if conflicts:
            log.error(
                "gateway %s: %d events reuse stored sequence numbers (e.g. %d); kept the first",
                gateway_id,
                len(conflicts),
                conflicts[0],
            )
        return conflicts

    async def _close_filled_gaps(
        self, gateway_id: str, open_gaps: list[GatewayEventGap], inserted: list[int], now: datetime
    ) -> int:
        if not inserted:
            return 0
        closed = 0
        for gap in open_gaps:
            if not any(gap.from_seq <= seq <= gap.to_seq for seq in inserted):
                continue
            size = gap.to_seq - gap.from_seq + 1
            if await self._repo.count_between(gateway_id, gap.from_seq, gap.to_seq) == size:
                gap.closed_at = now
                closed += 1
                log.info("gateway %s: gap %d..%d closed", gateway_id, gap.from_seq, gap.to_seq)
        return closed

    async def _prefix(
        self, gateway_id: str, last_seq: int, high: int, gaps: list[tuple[int, int]]
    ) -> int:
        """The new contiguous prefix: every missing number above ``last_seq`` lies in an open
        gap (``gaps``), so only the gaps need looking at."""
        for low, top in sorted(gaps):
            if top <= last_seq:
                continue  # a gap of an earlier journal, below where this sequence began
            missing = await self._repo.first_missing(gateway_id, max(low, last_seq + 1), top)
            if missing is not None:
                return max(last_seq, missing - 1)
        return high

    def _audit_event(
        self,
        building_id: str | None,
        doors: dict[str, str],
        event: GatewayEvent,
        row: dict[str, Any],
        previous_last_seq: int | None,
    ) -> None:
        data: dict[str, Any] = row["data"]
        door = row["door_id"] if row["door_id"] in doors else None
        decision = None
        if event.kind == UNLOCK_DENIED_EVENT:
            decision = "deny"
        elif event.kind == UNLOCK_EVENT:
            decision = "allow"
        detail: dict[str, Any] = {
            "seq": event.seq,
            "event_ts": as_utc(row["ts"]).isoformat(),
            "data": data,
        }
        if door is None and row["door_id"] is not None:
            detail["reported_door"] = row["door_id"]
        if previous_last_seq is not None:
            detail["previous_last_seq"] = previous_last_seq
        self._audit.add(
            AuditEvent(
                actor=_text(data.get("sub"), 64),
                action=f"gateway.{event.kind}"[:64],
                building_id=doors.get(door, building_id) if door else building_id,
                door_id=door,
                gateway_id=row["gateway_id"],
                decision=decision,
                reason=_text(data.get("reason"), 64),
                # Not in the command_id column: that pairs the API's own two rows of an
                # unlock (requested, completed); the gateway's confirmation has it in detail.
                result=_text(data.get("result"), 32),
                detail=detail,
            )
        )

    def _audit_conflicts(self, building_id: str | None, gateway_id: str, seqs: list[int]) -> None:
        self._audit.add(
            AuditEvent(
                action=CONFLICT_AUDIT,
                building_id=building_id,
                gateway_id=gateway_id,
                detail={"count": len(seqs), "seqs": sorted(seqs)[:20]},
            )
        )


class EventQueryService:
    """Managers read a gateway's stored events and the gaps in them (their scope only)."""

    def __init__(self, session: AsyncSession) -> None:
        self._repo = EventRepository(session)
        self._gateways = GatewayRepository(session)

    async def _require_gateway(self, scope: Scope, gateway_id: str) -> int:
        gateway = await self._gateways.get(gateway_id)
        if gateway is None:
            raise not_found("gateway", gateway_id)
        scope.require_building(gateway.building_id, "gateway", gateway_id)
        return gateway.last_seq

    async def events(
        self,
        scope: Scope,
        gateway_id: str,
        limit: int,
        cursor: str | None,
        kind: str | None = None,
        door_id: str | None = None,
    ) -> Page[GatewayEventOut]:
        """Stored events, highest sequence number first."""
        await self._require_gateway(scope, gateway_id)
        before = _cursor_int(cursor)
        rows = await self._repo.page_events(gateway_id, before, limit + 1, kind, door_id)
        items = [
            GatewayEventOut(
                seq=r.seq,
                kind=r.kind,
                door_id=r.door_id,
                ts=as_utc(r.ts),
                received_at=as_utc(r.received_at),
                data=r.data,
            )
            for r in rows[:limit]
        ]
        more = len(rows) > limit
        return Page(items=items, next_cursor=encode_cursor(str(items[-1].seq)) if more else None)

    async def gaps(
        self, scope: Scope, gateway_id: str, limit: int, cursor: str | None, state: str | None
    ) -> EventGapsPage:
        """Gaps newest first, each with how many of its numbers are still missing."""
        last_seq = await self._require_gateway(scope, gateway_id)
        rows = await self._repo.page_gaps(gateway_id, _cursor_int(cursor), limit + 1, state)
        items = []
        for gap in rows[:limit]:
            assert gap.id is not None
            size = gap.to_seq - gap.from_seq + 1
            stored = await self._repo.count_between(gateway_id, gap.from_seq, gap.to_seq)
            items.append(
                EventGapOut(
                    id=gap.id,
                    from_seq=gap.from_seq,
                    to_seq=gap.to_seq,
                    missing=size - stored,
                    detected_at=as_utc(gap.detected_at),
                    closed_at=as_utc(gap.closed_at) if gap.closed_at else None,
                )
            )
        more = len(rows) > limit
        return EventGapsPage(
            gateway_id=gateway_id,
            last_seq=last_seq,
            items=items,
            next_cursor=encode_cursor(str(items[-1].id)) if more else None,
        )


def _cursor_int(cursor: str | None) -> int | None:
    if not cursor:
        return None
    value = decode_cursor(cursor, 1)[0]
    # ASCII digits only (str.isdigit also takes "²"), and within the column's range.
    if not (value.isascii() and value.isdigit() and len(value) <= 19 and int(value) <= MAX_SEQ):
        raise ApiError(422, "invalid_cursor", "the cursor is not one this listing gave out")
    return int(value)
