"""Keeps the gateways table's ``online``, ``last_seen`` and ``clock_offset_s`` in step with
the broker."""

import asyncio
import logging
import statistics
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.background import cancel_and_wait
from api.db import DatabaseUnavailableError
from api.gateways.models import Gateway
from api.relay.mqtt import MqttRelay
from citykey_protocol.messages import GatewayStatus

log = logging.getLogger(__name__)


class ObservedClocks:
    """The API's own estimate of each gateway's clock offset: a status's ``ts`` (gateway
    clock) minus when it arrived (API clock), the median of the last few.

    It catches what the gateway's own estimate cannot: a clock so wrong that the gateway
    accepts no token (its estimate comes from accepted tokens), or a gateway that reports none.
    A retained status says when it was made, not when it arrived, so the first status of each
    gateway this process sees (possibly the retained copy), a repeat of the same ``ts`` (the
    retained copy again after a reconnect) and offline statuses (the last will) are skipped.
    """

    def __init__(self, samples: int = 5, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._size = samples
        self._last_ts: dict[str, float] = {}
        self._samples: dict[str, deque[float]] = {}

    def observe(self, status: GatewayStatus) -> float | None:
        """Take one status; the current estimate for its gateway (None: none yet)."""
        received = self._clock()
        previous = self._last_ts.get(status.gateway_id)
        self._last_ts[status.gateway_id] = status.ts
        samples = self._samples.setdefault(status.gateway_id, deque(maxlen=self._size))
        if status.online and previous is not None and status.ts != previous:
            samples.append(status.ts - received)
        return round(statistics.median(samples), 3) if samples else None


def clock_offset(reported: float | None, observed: float | None) -> float | None:
    """The worse of the gateway's own estimate and the API's: a clock is shown as off when
    either says so."""
    known = [value for value in (reported, observed) if value is not None]
    return max(known, key=abs) if known else None


MAX_RETRY_S = 5.0
"""Longest pause between attempts to write statuses the database refused."""


class GatewayStatusTracker:
    """Writes what statuses say (online, last_seen, clock offset) to the gateways table.

    Coalesced: statuses are collected for ``flush_s`` and written in one transaction, one
    executemany UPDATE, keeping only the latest status of each gateway. A fleet of thousands
    heartbeats tens of times a second and reconnects all at once after a broker restart; one
    transaction per status made that the API's main idle cost (docs/performance.md, "Fleet
    scale"). The relay's memory stays the authority for "online now"; this table lags it by
    at most ``flush_s`` plus one write.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, flush_s: float = 0.2) -> None:
        self._sessions = sessions
        self._clocks = ObservedClocks()
        self._flush_s = flush_s
        self._pending: dict[str, dict[str, Any]] = {}
        self._flusher: asyncio.Task[None] | None = None

    def attach(self, relay: MqttRelay) -> None:
        relay.on_status(self.record)

    async def record(self, status: GatewayStatus) -> None:
        """Queue one status message for the next write; best effort (the relay's memory is
        authoritative). No await before the queueing: statuses queue in arrival order."""
        offset = clock_offset(status.clock_offset_s, self._clocks.observe(status))
        values: dict[str, Any] = {
            "b_online": status.online,
            "b_seen": datetime.fromtimestamp(status.ts, UTC),
        }
        if offset is not None:
            values["b_offset"] = offset
        # A later status without an offset keeps the earlier one's (as separate writes did).
        self._pending[status.gateway_id] = self._pending.get(status.gateway_id, {}) | values
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_loop(), name="status-tracker")

    async def stop(self) -> None:
        """End the write loop (at shutdown). Statuses still queued are dropped: the relay's
        memory dies with the process too, and every gateway's next heartbeat or retained
        status says it again to whichever instance runs next."""
        await cancel_and_wait(self._flusher)
        self._pending.clear()

    async def flush(self) -> bool:
        """Write what is queued now; False when the write failed (then it stays queued,
        statuses that arrived meanwhile winning). The loop calls it by itself."""
        pending, self._pending = self._pending, {}
        if not pending or await self._write(pending):
            return True
        for gateway_id, values in pending.items():
            self._pending[gateway_id] = values | self._pending.get(gateway_id, {})
        return False

    async def _flush_loop(self) -> None:
        pause = self._flush_s
        try:
            while self._pending:
                await asyncio.sleep(pause)  # let a burst gather into one write
                # A failed write is tried again, less and less often: a fleet that
                # reconnected while the database was busy must not wait for its next
                # heartbeats to be shown online. Bounded: one entry per gateway.
                pause = self._flush_s if await self.flush() else min(pause * 2, MAX_RETRY_S)
        finally:
            self._flusher = None  # no await since the last ``while`` check: nothing is left

    async def _write(self, pending: dict[str, dict[str, Any]]) -> bool:
        with_offset = [{"b_id": gid, **v} for gid, v in pending.items() if "b_offset" in v]
        without = [{"b_id": gid, **v} for gid, v in pending.items() if "b_offset" not in v]
        try:
            async with self._sessions() as session:
                if with_offset:
                    await session.execute(
                        _UPDATE.values(clock_offset_s=bindparam("b_offset")), with_offset
                    )
                if without:
                    await session.execute(_UPDATE, without)
                await session.commit()
        except (SQLAlchemyError, OSError, TimeoutError, DatabaseUnavailableError) as exc:
            log.warning("could not record the status of %d gateways: %s", len(pending), exc)
            return False
        return True


_TABLE = Gateway.__table__  # type: ignore[attr-defined]
_UPDATE = (
    update(_TABLE)
    .where(_TABLE.c.id == bindparam("b_id"))
    .values(online=bindparam("b_online"), last_seen=bindparam("b_seen"))
)
"""One gateway's row; executed with many parameter sets (executemany)."""
