"""Keeps the gateways table's ``online`` and ``last_seen`` in step with the broker."""

import logging
from datetime import UTC, datetime

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.gateways.models import Gateway
from api.relay.mqtt import MqttRelay
from citykey_protocol.messages import GatewayStatus

log = logging.getLogger(__name__)


class GatewayStatusTracker:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    def attach(self, relay: MqttRelay) -> None:
        relay.on_status(self.record)

    async def record(self, status: GatewayStatus) -> None:
        """Persist one status message; best effort (the relay's memory is authoritative)."""
        try:
            async with self._sessions() as session:
                await session.execute(
                    update(Gateway)
                    .where(Gateway.id == status.gateway_id)  # type: ignore[arg-type]
                    .values(online=status.online, last_seen=datetime.fromtimestamp(status.ts, UTC))
                )
                await session.commit()
        except SQLAlchemyError as exc:
            log.warning("could not record status of %s: %s", status.gateway_id, exc)
