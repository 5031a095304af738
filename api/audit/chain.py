"""The tamper-evident audit chain: every audit record carries the hash of the one before it.

``hash = SHA-256(prev_hash + "\\n" + canonical JSON of the record's content)``, the records
linked in id order, the first one to :data:`GENESIS`. Changing, deleting or inserting a record
in the middle breaks the chain at that point; ``citykey audit verify`` (:func:`verify_chain`)
finds the first break and names it.

How records get their hash. Every audit insert goes through :func:`append` (the repository,
``record_change``, and anything else that adds an ``AuditEvent`` to a session): the hash is
computed in the ``before_flush`` hook registered below, so no path can forget it. Inside the
inserting transaction, on PostgreSQL, the hook

1. takes a transaction-scoped advisory lock (:data:`LOCK_KEY`), so that chain appends from
   every request and every API instance happen one at a time, in a total order;
2. reads the hash of the newest record and draws the new ids from the sequence, both *after*
   the lock is held (READ COMMITTED: a new statement sees what the previous holder committed;
   PostgreSQL makes a commit visible before it releases the transaction's locks). Steps 1
   and 2 are one round trip: the function ``citykey_audit_reserve`` (migration 0004), whose
   inner statements each take a fresh snapshot;
3. sets ``id``, ``prev_hash`` and ``hash`` on the new records; the INSERT follows.

The lock is released by the commit (or rollback). Requests that append at the same time can
share one such transaction through the batched writer (api/audit/writer.py, used by the unlock
path): one lock, one multi-row INSERT and one COMMIT for the whole batch, sealed by
:func:`insert_sealed` — on PostgreSQL one ``INSERT ... SELECT`` whose function takes the lock,
reads the tail, draws the ids and hashes each record (the same hash, from the record's
canonical JSON cut around its id, :func:`canonical_parts`). Ids are drawn under the lock, so
id order is chain order; a rolled-back append leaves a gap in the ids and nothing in the
chain. Nothing is ever updated, which is what lets the API's database role be denied UPDATE
and DELETE on ``audit_events`` (migration 0003). On SQLite (the demo, one process) the hook
takes SQLite's write lock first, which serializes writers the same way.

Why not seal asynchronously (insert with hash NULL, a background "sealer" links rows later):
it would take the lock off the request path, but it needs UPDATE on audit_events (which the
grants forbid), leaves a window in which unsealed rows can be altered unnoticed, and must
guess whether a missing id is a rolled-back insert or one not yet committed. The cost of the
lock is measured in docs/reliability.md.

What a hash chain cannot show on its own: that records were removed from the *end*, or that
someone holding the database owner's rights rewrote a suffix and re-hashed it. Keep the head
that ``citykey audit verify`` prints somewhere the database cannot reach, and pass it back as
``--anchor ID:HASH``: the record must still be there with that hash.
"""

import hashlib
import json
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Connection, event, insert, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session
from sqlmodel import col

from api.audit.models import AuditEvent
from api.common import as_utc

GENESIS = "0" * 64
"""The ``prev_hash`` of the first record."""
LOCK_KEY = -3552527288922200557
"""pg_advisory_xact_lock key of the chain: the first 8 bytes of SHA-256("citykey.audit_chain")
as a signed 64-bit integer (any constant works; this one collides with nobody else's)."""
FORMAT_VERSION = 1


class AuditContent(Protocol):
    """The fields of an audit record that its hash covers (an ``AuditEvent`` or a row)."""

    @property
    def id(self) -> int | None: ...
    @property
    def ts(self) -> datetime: ...
    @property
    def actor(self) -> str | None: ...
    @property
    def action(self) -> str: ...
    @property
    def building_id(self) -> str | None: ...
    @property
    def door_id(self) -> str | None: ...
    @property
    def gateway_id(self) -> str | None: ...
    @property
    def decision(self) -> str | None: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def command_id(self) -> str | None: ...
    @property
    def result(self) -> str | None: ...
    @property
    def latency_ms(self) -> float | None: ...
    @property
    def detail(self) -> Any: ...


def _content(record: AuditContent) -> dict[str, Any]:
    detail = record.detail if record.detail is not None else {}
    return {
        "v": FORMAT_VERSION,
        "id": record.id,
        "ts": as_utc(record.ts).astimezone(UTC).isoformat(timespec="microseconds"),
        "actor": record.actor,
        "action": record.action,
        "building_id": record.building_id,
        "door_id": record.door_id,
        "gateway_id": record.gateway_id,
        "decision": record.decision,
        "reason": record.reason,
        "command_id": record.command_id,
        "result": record.result,
        "latency_ms": float(record.latency_ms) if record.latency_ms is not None else None,
        # Round-trip through JSON first: what the JSON column gives back (tuples as lists,
        # keys as strings) is what the hash must cover.
        "detail": json.loads(json.dumps(detail)),
    }


def _dump(content: dict[str, Any]) -> str:
    return json.dumps(
        content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def canonical(record: AuditContent) -> bytes:
    """The record's content as canonical JSON: sorted keys, no spaces, UTF-8, timestamps as
    UTC ISO 8601 with microseconds, numbers as floats where the column is a float. Encodes a
    record the same before it is written and after it is read back, on both databases."""
    return _dump(_content(record)).encode()


def canonical_parts(record: AuditContent) -> tuple[str, str]:
    """``(head, tail)`` such that the canonical JSON of ``record`` with id ``n`` is exactly
    ``head + str(n) + tail``, whatever ``n``: lets PostgreSQL hash a record whose id it draws
    itself (:func:`insert_sealed`). Keys are sorted, so the top-level keys before ``"id"``
    go in the head, the others in the tail (both sides always hold some)."""
    content = _content(record)
    del content["id"]
    before = {k: v for k, v in content.items() if k < "id"}
    after = {k: v for k, v in content.items() if k > "id"}
    return _dump(before)[:-1] + ',"id":', "," + _dump(after)[1:]


def chain_hash(prev_hash: str, record: AuditContent) -> str:
    """SHA-256 (hex) of ``prev_hash`` and the record's canonical content."""
    return hashlib.sha256(prev_hash.encode("ascii") + b"\n" + canonical(record)).hexdigest()


def append(session: AsyncSession, record: AuditEvent) -> AuditEvent:
    """Add ``record`` to the audit chain with the session's transaction: its id, prev_hash and
    hash are set when the session flushes. The one way to write an audit record."""
    session.add(record)
    return record


# -- sealing, at flush time ------------------------------------------------------------------


def _pending(session: Session) -> list[AuditEvent]:
    records = [obj for obj in session.new if isinstance(obj, AuditEvent)]
    # The order they were added in is the order they join the chain (and get ids).
    records.sort(key=lambda obj: inspect(obj).insert_order)
    return records


_RESERVE = text("SELECT prev_tail, new_id FROM citykey_audit_reserve(:n)")
"""Takes the advisory lock :data:`LOCK_KEY` (see migrations/versions/0004_*)."""

_TAIL = select(col(AuditEvent.hash)).where(col(AuditEvent.hash).is_not(None))
_TAIL = _TAIL.order_by(col(AuditEvent.id).desc()).limit(1)


def _seal(session: Session, _flush_context: object, _instances: object) -> None:
    records = _pending(session)
    if records:
        seal(session.connection(), records)


def seal(connection: Connection, records: Sequence[AuditEvent]) -> None:
    """Lock the chain for the connection's transaction and set ``id``, ``prev_hash`` and
    ``hash`` on ``records`` (in that order); the caller inserts them and commits, which
    releases the lock. Used at flush time (above) and by the batched writer
    (api/audit/writer.py)."""
    if connection.dialect.name == "postgresql":
        # One round trip (migration 0004): lock, then tail and ids read by a statement that
        # starts after the lock is held, so it sees the previous holder's commit.
        rows = connection.execute(_RESERVE, {"n": len(records)}).all()
        tail = rows[0].prev_tail
        ids = sorted(int(row.new_id) for row in rows)
    else:
        # SQLite: a no-op write takes the database's write lock before the tail is read, so
        # no other connection can append in between (SQLite has one writer at a time).
        connection.execute(text("UPDATE audit_events SET id = id WHERE 0"))
        tail = connection.execute(_TAIL).scalar()
        top = connection.execute(text("SELECT coalesce(max(id), 0) FROM audit_events")).scalar()
        ids = list(range(int(top or 0) + 1, int(top or 0) + 1 + len(records)))
    prev = tail if tail is not None else GENESIS
    for record, record_id in zip(records, ids, strict=True):
        record.id = record_id
        record.prev_hash = prev
        record.hash = chain_hash(prev, record)
        prev = record.hash


_INSERT_SEALED = text(
    "INSERT INTO audit_events (id, ts, actor, action, building_id, door_id, gateway_id,"
    " decision, reason, command_id, result, latency_ms, detail, prev_hash, hash)"
    " SELECT s.new_id, CAST(r->>'ts' AS timestamptz), r->>'actor', r->>'action',"
    " r->>'building_id', r->>'door_id', r->>'gateway_id', r->>'decision', r->>'reason',"
    " r->>'command_id', r->>'result', CAST(r->>'latency_ms' AS double precision),"
    " r->'detail', s.new_prev, s.new_hash"
    " FROM citykey_audit_seal(CAST(:records AS json)) AS s"
    " JOIN json_array_elements(CAST(:records AS json)) WITH ORDINALITY AS j(r, k)"
    " ON j.k = s.n"
    " RETURNING id, prev_hash, hash"
)
"""One round trip for lock, tail, ids, hashes and rows: ``citykey_audit_seal`` (migration
0004) locks the chain, reads the tail and hashes each record as ``head || id || tail``
(:func:`canonical_parts`) with the id it draws; the INSERT stores them."""

_TABLE = AuditEvent.__table__  # type: ignore[attr-defined]
_COLUMNS = tuple(column.name for column in _TABLE.columns)


def _stamp(connection: Connection, records: list[AuditEvent]) -> None:
    seal(connection, records)


async def insert_sealed(connection: AsyncConnection, records: Sequence[AuditEvent]) -> None:
    """Seal ``records`` and insert them in the connection's transaction (the caller commits,
    which releases the chain's lock); their ``id``, ``prev_hash`` and ``hash`` are set. The
    same chain as :func:`seal` plus an INSERT, in one round trip on PostgreSQL."""
    if connection.dialect.name != "postgresql":
        await connection.run_sync(_stamp, list(records))
        await connection.execute(
            insert(_TABLE), [{c: getattr(r, c) for c in _COLUMNS} for r in records]
        )
        return
    payload = []
    for record in records:
        head, tail = canonical_parts(record)
        payload.append(
            {
                "head": head,
                "tail": tail,
                "ts": as_utc(record.ts).astimezone(UTC).isoformat(timespec="microseconds"),
                "actor": record.actor,
                "action": record.action,
                "building_id": record.building_id,
                "door_id": record.door_id,
                "gateway_id": record.gateway_id,
                "decision": record.decision,
                "reason": record.reason,
                "command_id": record.command_id,
                "result": record.result,
                "latency_ms": record.latency_ms,
                "detail": record.detail if record.detail is not None else {},
            }
        )
    result = await connection.execute(_INSERT_SEALED, {"records": json.dumps(payload)})
    # Ids are drawn in chain order: the smallest id is the first record.
    for record, row in zip(records, sorted(result.all(), key=lambda r: int(r.id)), strict=True):
        record.id = int(row.id)
        record.prev_hash = row.prev_hash
        record.hash = row.hash


event.listen(Session, "before_flush", _seal)


# -- verification ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Break:
    """The first record at which the chain does not hold, and why."""

    record_id: int
    problem: str
    """``content_changed``, ``unsealed``, ``inserted``, ``missing_predecessor``,
    ``anchor_missing`` or ``anchor_changed``."""
    message: str


@dataclass(frozen=True, slots=True)
class Verification:
    checked: int
    """Records verified before the first break (all of them when intact)."""
    head_id: int | None
    head_hash: str | None
    """The newest record verified: keep it outside the database as the next anchor."""
    broken: Break | None

    @property
    def intact(self) -> bool:
        return self.broken is None


def parse_anchor(text_value: str) -> tuple[int, str]:
    """``"1234:<64 hex digits>"`` -> (1234, hash); ValueError otherwise."""
    record_id, _, digest = text_value.partition(":")
    if not record_id.isdigit() or len(digest) != 64 or digest.strip("0123456789abcdef"):
        raise ValueError(f"an anchor is ID:HASH (64 lowercase hex digits), not {text_value!r}")
    return int(record_id), digest


def _check_link(
    record: AuditEvent, prev_id: int | None, prev_hash: str, recent: deque[tuple[int, str]]
) -> Break | None:
    assert record.id is not None
    if record.prev_hash == prev_hash:
        return None
    seen = list(recent)
    for index, (seen_id, seen_hash) in enumerate(seen):
        if seen_hash == record.prev_hash and index + 1 < len(seen):
            first_inserted = seen[index + 1][0]
            target = f"record {seen_id}" if seen_id > 0 else "the start of the chain"
            return Break(
                first_inserted,
                "inserted",
                f"record {first_inserted} is not part of the chain (inserted): "
                f"record {record.id} links to {target}, skipping {len(seen) - index - 1} "
                "record(s)",
            )
    before = f"record {prev_id}" if prev_id is not None else "the start of the chain"
    return Break(
        record.id,
        "missing_predecessor",
        f"record {record.id}: the record it was chained to is missing (deleted) or was "
        f"altered and re-hashed; the record before it now is {before}",
    )


def _check_record(record: AuditEvent) -> Break | None:
    assert record.id is not None
    if record.hash is None or record.prev_hash is None:
        return Break(record.id, "unsealed", f"record {record.id} has no hash (not in the chain)")
    if chain_hash(record.prev_hash, record) != record.hash:
        return Break(
            record.id,
            "content_changed",
            f"record {record.id}: its content does not match its hash (changed after it was "
            "written)",
        )
    return None


async def verify_chain(
    session: AsyncSession,
    *,
    batch: int = 1000,
    anchors: Sequence[tuple[int, str]] = (),
    window: int = 10_000,
) -> Verification:
    """Walk the chain in id order, ``batch`` records per query; stop at the first break.

    ``window``: how many recent records are remembered to tell an inserted record (a later
    record links past it to an earlier one) from a deleted one."""
    recent: deque[tuple[int, str]] = deque([(0, GENESIS)], maxlen=window)
    prev_id: int | None = None
    prev_hash = GENESIS
    checked = 0
    after = None
    while True:
        statement = select(AuditEvent).order_by(col(AuditEvent.id)).limit(batch)
        if after is not None:
            statement = statement.where(col(AuditEvent.id) > after)
        rows = (await session.execute(statement)).scalars().all()
        for record in rows:
            assert record.id is not None
            broken = _check_record(record) or _check_link(record, prev_id, prev_hash, recent)
            if broken is not None:
                return Verification(checked, prev_id, prev_hash if prev_id else None, broken)
            assert record.hash is not None
            recent.append((record.id, record.hash))
            prev_id, prev_hash = record.id, record.hash
            checked += 1
        session.expunge_all()  # keep memory flat over long chains
        if len(rows) < batch:
            break
        after = rows[-1].id
    head_hash = prev_hash if prev_id is not None else None
    for anchor_id, anchor_hash in anchors:
        stored = (
            await session.execute(
                select(col(AuditEvent.hash)).where(col(AuditEvent.id) == anchor_id)
            )
        ).first()
        if stored is None:
            return Verification(
                checked,
                prev_id,
                head_hash,
                Break(anchor_id, "anchor_missing", f"anchor record {anchor_id} is missing"),
            )
        if stored[0] != anchor_hash:
            return Verification(
                checked,
                prev_id,
                head_hash,
                Break(
                    anchor_id,
                    "anchor_changed",
                    f"anchor record {anchor_id} no longer has the hash it had when anchored",
                ),
            )
    return Verification(checked, prev_id, head_hash, None)


async def verify_database(
    database_url: str, *, batch: int = 1000, anchors: Sequence[tuple[int, str]] = ()
) -> Verification:
    """:func:`verify_chain` on the database at ``database_url`` (for ``citykey audit verify``)."""
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(database_url)
    try:
        async with AsyncSession(engine, expire_on_commit=False) as session:
            return await verify_chain(session, batch=batch, anchors=anchors)
    finally:
        await engine.dispose()


def report(result: Verification) -> list[str]:
    """What ``citykey audit verify`` prints."""
    if result.broken is None:
        lines = [f"verified {result.checked} audit records: the chain is intact"]
    else:
        lines = [
            f"verified {result.checked} audit records, then the chain is BROKEN",
            f"first broken record: {result.broken.record_id} ({result.broken.problem})",
            f"  {result.broken.message}",
        ]
    if result.head_id is not None:
        lines.append(f"head (keep it as the next --anchor): {result.head_id}:{result.head_hash}")
    return lines
