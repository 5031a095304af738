"""Learns from gateway status messages which mode version each gateway has applied."""

import logging
from datetime import UTC, datetime

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.modes.repository import ModeRepository
from api.relay.mqtt import MqttRelay
from citykey_protocol.messages import GatewayStatus

log = logging.getLogger(__name__)


class ModeAckListener:
    """Records a gateway's acknowledgement (gateways.mode_version, mode_acked_at) when its
    status reports the building's current mode version as applied."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        # Last version recorded per gateway: heartbeats repeat it, and need no database work.
        self._recorded: dict[str, int] = {}

    def attach(self, relay: MqttRelay) -> None:
        relay.on_status(self.record)

    async def record(self, status: GatewayStatus) -> None:
        """Persist one acknowledgement; best effort, like the status tracker."""
        version = status.mode_version
        if version is None or version <= 0 or self._recorded.get(status.gateway_id) == version:
            return
        try:
            async with self._sessions() as session:
                await ModeRepository(session).record_ack(
                    status.gateway_id, version, datetime.fromtimestamp(status.ts, UTC)
                )
                await session.commit()
        except SQLAlchemyError as exc:
            log.warning("could not record the mode ack of %s: %s", status.gateway_id, exc)
            return
        self._recorded[status.gateway_id] = version
