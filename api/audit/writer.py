"""Group commit for the audit chain: concurrent requests share one chained transaction.

Every audit append takes the chain's lock (api/audit/chain.py) for the time of its INSERT
and COMMIT, so appends one at a time cap the whole API at a few hundred audited transactions
a second. The writer lets requests that append at the same time share one transaction: the
first request that finds no write in flight becomes the *leader* and writes everything queued
so far (its own record included) in one transaction — one lock, one multi-row INSERT, one
COMMIT; requests arriving meanwhile queue up, and when the write ends the first of them leads
the next batch with all of theirs. Under no load a batch is one record, as before; under load
a batch grows with the rate, and the lock is taken once per batch, not once per record.

Without contention nothing changes: a request that finds the writer idle adds its record to
its own transaction, like :func:`chain.append`, and commits; only requests that arrive while
an audit write is in flight queue for a batch.

What it keeps: :meth:`AuditWriter.append` returns only once the record is committed (so "the
audit record of an allowed unlock is committed before the command leaves" still holds); the
hash chain, its ids and ``citykey audit verify`` are unchanged (:func:`chain.insert_sealed`
seals every record as a flush would); nothing is ever updated. The leader's own request does
the database work in its own task, so the work shows up in that request's context (tracing,
deadlines).

A failed batch fails every request in it (the API answers 503 database_unavailable, nothing
is sent). A request that gives up waiting (its deadline) leaves its record queued; it is still
written, like a commit that lands after its caller stopped waiting.
"""

import asyncio
import weakref
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from api.audit import chain
from api.audit.models import AuditEvent
from api.db import DatabaseUnavailableError, is_database_unavailable

_LEAD = "lead"
_DONE = "done"

_writers: "weakref.WeakKeyDictionary[AsyncEngine, AuditWriter]" = weakref.WeakKeyDictionary()
"""One writer per engine. A writer holds its engine weakly, so an engine that is dropped
(tests make many) takes its writer with it."""


@dataclass(slots=True)
class _Entry:
    record: AuditEvent
    future: "asyncio.Future[str]"


class AuditWriter:
    """Appends audit records to the chain, batching concurrent appends (one per engine)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine_ref = weakref.ref(engine)
        self._queue: list[_Entry] = []
        self._leading = False

    @classmethod
    def for_engine(cls, engine: AsyncEngine) -> "AuditWriter":
        """The writer of ``engine`` (created on first use; lives as long as the engine)."""
        writer = _writers.get(engine)
        if writer is None:
            writer = _writers[engine] = cls(engine)
        return writer

    async def append(self, record: AuditEvent, session: AsyncSession) -> AuditEvent:
        """Commit ``session`` (the request's own changes) with ``record`` added to the chain;
        return once both are committed (the record's id and hash set).

        Uncontended (no audit write in flight, none queued), the record simply joins the
        session's transaction (sealed and inserted like a batch of one): no extra
        transaction. Otherwise
        the session commits first and the record joins the next batch. Raises what the write
        raised (DatabaseUnavailableError for a connectivity failure of a batch another
        request led)."""
        if not self._leading and not self._queue:
            self._leading = True
            try:
                # Core, not an ORM flush: sealed and inserted as a batch of one (one round trip
                # on PostgreSQL), in the session's own transaction.
                await chain.insert_sealed(await session.connection(), [record])
                await session.commit()
            finally:
                self._hand_over()
            return record
        await session.commit()
        entry = _Entry(record, asyncio.get_running_loop().create_future())
        self._queue.append(entry)
        if self._leading:
            try:
                if await entry.future == _DONE:
                    return record
            except asyncio.CancelledError:
                # Cancelled just as the lead was handed to it: pass the lead on.
                if (
                    entry.future.done()
                    and not entry.future.cancelled()
                    and entry.future.exception() is None
                    and entry.future.result() == _LEAD
                ):
                    self._hand_over()
                raise
        self._leading = True
        # Everything queued so far, this request's record included. The write runs as its
        # own task (in this request's context) and is shielded: a leader that stops waiting
        # (its deadline) does not abort the batch of the requests that joined it.
        batch, self._queue = self._queue, []
        write = asyncio.create_task(self._write(batch))
        _background.add(write)
        write.add_done_callback(self._written)
        await asyncio.shield(write)
        return record

    def _written(self, write: "asyncio.Task[None]") -> None:
        _background.discard(write)
        if not write.cancelled():
            write.exception()  # raised to the leader, if it still waits
        self._hand_over()

    async def _write(self, batch: list[_Entry]) -> None:
        """One transaction for ``batch``: lock the chain, seal, insert (one statement on
        PostgreSQL), commit."""
        records = [entry.record for entry in batch]
        try:
            engine = self._engine_ref()
            if engine is None:
                raise DatabaseUnavailableError("the database engine was disposed of")
            async with engine.begin() as connection:
                await chain.insert_sealed(connection, records)
        except BaseException as exc:
            failure = (
                DatabaseUnavailableError("the audit record could not be written")
                if not isinstance(exc, Exception) or is_database_unavailable(exc)
                else exc
            )
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(failure)
                    entry.future.exception()  # mark retrieved: the leader raises its own
            raise
        for entry in batch:
            if not entry.future.done():
                entry.future.set_result(_DONE)

    def _hand_over(self) -> None:
        """Give the lead to the first request still waiting; with only records whose
        requests gave up, write those in the background; with none, give the lead up."""
        for entry in self._queue:
            if not entry.future.done():
                entry.future.set_result(_LEAD)
                return
        if self._queue:
            task = asyncio.create_task(self._orphans())
            _background.add(task)
            task.add_done_callback(_background.discard)
            return
        self._leading = False

    async def _orphans(self) -> None:
        """Write records whose requests all stopped waiting (rare: deadlines)."""
        try:
            batch, self._queue = self._queue, []
            await self._write(batch)
        except Exception:  # noqa: S110 (their requests have already been answered)
            pass
        finally:
            self._hand_over()


_background: set["asyncio.Task[Any]"] = set()
"""Strong references to running writes (the event loop keeps only weak ones)."""
