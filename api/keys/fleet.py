"""Which key set each gateway trusts, from the retained status messages on the broker.

A gateway reports the ``ver`` of the key set it holds in its status (``keyset_version``) and
republishes its status as soon as it accepts a new set. The rotation commands read these to
make "publish before sign" a fact rather than a hope: a key becomes active only once the online
gateways have acknowledged the set that announced it, and a key retires only once every gateway
the broker knows of (offline ones included: their last status is retained) holds a set that
trusts its successor.
"""

import asyncio
import contextlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

import aiomqtt

from citykey_protocol import messages
from citykey_protocol.topics import STATUS_FILTER, parse_gateway_topic
from citykey_protocol.transport import BrokerAddress


class FleetUnavailableError(Exception):
    """The broker could not be asked."""


@dataclass(frozen=True, slots=True)
class FleetMember:
    gateway_id: str
    online: bool
    keyset_version: int | None
    """None: the gateway's software predates signed key sets (it learns keys only at start)."""

    def has(self, version: int) -> bool:
        return self.keyset_version is not None and self.keyset_version >= version


async def fleet_snapshot(
    broker: BrokerAddress, *, settle_s: float = 0.5, limit_s: float = 5.0
) -> dict[str, FleetMember]:
    """Every gateway's retained status: gateway id -> what it reported.

    MQTT 3.1.1 does not say when the retained messages end, so this reads until none has come
    for ``settle_s`` (at most ``limit_s``)."""
    fleet: dict[str, FleetMember] = {}
    try:
        async with broker.client(f"citykey-keys-{secrets.token_hex(4)}") as client:
            await client.subscribe(STATUS_FILTER, qos=1)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(limit_s):
                    messages_iter = client.messages.__aiter__()
                    while True:
                        try:
                            async with asyncio.timeout(settle_s):
                                message = await messages_iter.__anext__()
                        except TimeoutError:
                            break
                        _add(fleet, message.topic.value, message.payload)
    except aiomqtt.MqttError as exc:
        raise FleetUnavailableError(f"cannot read gateway status from the broker: {exc}") from exc
    return fleet


def _add(fleet: dict[str, FleetMember], topic: str, payload: object) -> None:
    parsed = parse_gateway_topic(topic)
    if parsed is None or parsed.kind != "status" or not isinstance(payload, bytes | bytearray):
        return
    if not payload:
        fleet.pop(parsed.gateway_id, None)  # cleared: the gateway was removed
        return
    try:
        status = messages.status_decoder.decode(payload)
    except messages.DecodeError:
        return
    if status.gateway_id == parsed.gateway_id:
        fleet[status.gateway_id] = FleetMember(
            status.gateway_id, status.online, status.keyset_version
        )


def lagging(
    fleet: Iterable[FleetMember], version: int, *, include_offline: bool
) -> list[FleetMember]:
    """The gateways (online only, or all) that do not hold key set ``version`` or newer."""
    return sorted(
        (m for m in fleet if (m.online or include_offline) and not m.has(version)),
        key=lambda m: m.gateway_id,
    )


def describe(members: Iterable[FleetMember], limit: int = 20) -> str:
    """``gw-1 (v3, online), gw-2 (no key set support, offline), ...`` for messages."""
    items = list(members)
    parts = [
        f"{m.gateway_id} ("
        f"{'v' + str(m.keyset_version) if m.keyset_version is not None else 'no key set support'}"
        f", {'online' if m.online else 'offline'})"
        for m in items[:limit]
    ]
    if len(items) > limit:
        parts.append(f"and {len(items) - limit} more")
    return ", ".join(parts)
