"""Keeps the gateways table's ``online``, ``last_seen`` and ``clock_offset_s`` in step with
the broker."""

import logging
import statistics
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

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


class GatewayStatusTracker:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._clocks = ObservedClocks()

    def attach(self, relay: MqttRelay) -> None:
        relay.on_status(self.record)

    async def record(self, status: GatewayStatus) -> None:
        """Persist one status message; best effort (the relay's memory is authoritative)."""
        offset = clock_offset(status.clock_offset_s, self._clocks.observe(status))
        clock = {} if offset is None else {"clock_offset_s": offset}
        try:
            async with self._sessions() as session:
                await session.execute(
                    update(Gateway)
                    .where(Gateway.id == status.gateway_id)  # type: ignore[arg-type]
                    .values(
                        online=status.online,
                        last_seen=datetime.fromtimestamp(status.ts, UTC),
                        **clock,
                    )
                )
                await session.commit()
        except SQLAlchemyError as exc:
            log.warning("could not record status of %s: %s", status.gateway_id, exc)
