"""Signing and publishing mode messages (the wire format is citykey_protocol/modes.py)."""

import logging
from collections.abc import Mapping
from datetime import datetime

from api.keys.keyring import KeyRing
from api.modes.plan import DesiredMode
from api.relay.mqtt import MqttRelay, RelayError
from citykey_protocol.modes import (
    MODE_TOKEN_TYPE,
    DoorHold,
    ModeClaims,
    claims_to_dict,
)
from citykey_protocol.topics import GatewayTopics

log = logging.getLogger(__name__)


class ModePublisher:
    """Signs each gateway's mode with the active key and leaves it retained on the broker."""

    def __init__(self, relay: MqttRelay, keyring: KeyRing, issuer: str) -> None:
        self._relay = relay
        self._keyring = keyring
        self._issuer = issuer

    def sign(self, gateway_id: str, version: int, mode: DesiredMode, now: datetime) -> bytes:
        """The mode message for ``gateway_id``: a compact JWS, as bytes."""
        claims = ModeClaims(
            iss=self._issuer,
            aud=gateway_id,
            iat=int(now.timestamp()),
            ver=version,
            lockdown=mode.lockdown,
            holds=tuple(DoorHold(door, until) for door, until in mode.holds),
        )
        return self._keyring.sign(claims_to_dict(claims), MODE_TOKEN_TYPE).encode("ascii")

    async def publish(
        self, version: int, modes: Mapping[str, DesiredMode], now: datetime
    ) -> dict[str, bool]:
        """Publish ``version`` of each gateway's mode; per gateway, whether the broker took it.

        A failure is logged and reported, not raised: the change is already committed, and the
        passage scheduler sends it again on its next tick.
        """
        sent: dict[str, bool] = {}
        for gateway_id, mode in modes.items():
            payload = self.sign(gateway_id, version, mode, now)
            try:
                await self._relay.publish_retained(GatewayTopics(gateway_id).mode, payload)
                sent[gateway_id] = True
            except (RelayError, ValueError) as exc:  # ValueError: id unusable as a topic
                log.warning("mode %d for %s not published: %s", version, gateway_id, exc)
                sent[gateway_id] = False
        return sent
