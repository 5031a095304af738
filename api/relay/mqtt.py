"""MqttRelay: sends commands and routes each ack back to the request that waits for it.

Each API instance subscribes to ``citykey/v1/gw/+/ack/<instance>`` so that several instances
can run side by side, and follows every gateway's retained status so that a request for an
offline gateway is refused at once instead of after a timeout.
"""

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import aiomqtt
import paho.mqtt.client as mqtt

from api.background import cancel_and_wait
from citykey_protocol import messages
from citykey_protocol.messages import Ack, GatewayEvent, GatewayStatus, UnlockCommand
from citykey_protocol.topics import (
    EVENTS_FILTER,
    STATUS_FILTER,
    GatewayTopics,
    acks_filter,
    parse_gateway_topic,
    shared_filter,
)
from citykey_protocol.transport import BrokerAddress

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 5.0
STALE_HEARTBEATS = 1.5
"""A gateway whose last status is older than this many heartbeat intervals counts as offline
(its link died silently and the broker has not sent its last will yet)."""


class RelayError(Exception):
    """The command could not be delivered or answered."""


class BrokerUnavailableError(RelayError):
    """No broker connection: nothing was sent."""


class GatewayTimeoutError(RelayError):
    """The command was sent but no ack came within the deadline."""


@dataclass(slots=True)
class _Pending:
    gateway_id: str
    future: "asyncio.Future[Ack]"


_T = TypeVar("_T")


StatusListener = Callable[[GatewayStatus], Coroutine[Any, Any, None]]
EventListener = Callable[[GatewayEvent], Coroutine[Any, Any, None]]


class MqttRelay:
    """The API's broker session. Start it once per process; it reconnects by itself."""

    def __init__(
        self, broker: BrokerAddress, instance_id: str, *, share_events: str | None = None
    ) -> None:
        self._broker = broker
        self.instance_id = instance_id
        self.share_events = share_events
        """Shared-subscription group for gateway events (one instance of the group gets each
        event), or None: every instance gets every event. Never for the embedded broker
        (amqtt acknowledges ``$share/...`` but delivers nothing). Statuses are never shared:
        every instance keeps every gateway's status in memory (gateway_online)."""
        self._client: aiomqtt.Client | None = None
        self._pending: dict[str, _Pending] = {}
        self._status: dict[str, GatewayStatus] = {}
        self._status_seen: dict[str, float] = {}
        """Monotonic time each gateway's status last arrived (our clock, not the gateway's)."""
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._status_listeners: list[StatusListener] = []
        self._event_listeners: list[EventListener] = []
        self._background: set[asyncio.Task[None]] = set()

    # Lifecycle
    async def start(self, wait: float | None = 5.0) -> None:
        """Start the session; wait up to ``wait`` seconds for the first connection."""
        self._task = asyncio.create_task(self._run(), name="mqtt-relay")
        if wait:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._connected.wait()

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(BrokerUnavailableError("relay stopped"))

    def on_status(self, listener: StatusListener) -> None:
        self._status_listeners.append(listener)

    def on_event(self, listener: EventListener) -> None:
        self._event_listeners.append(listener)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def gateway_status(self, gateway_id: str) -> GatewayStatus | None:
        return self._status.get(gateway_id)

    def gateway_online(self, gateway_id: str) -> bool:
        """Online: the last status said so and, when the gateway announced its heartbeat
        interval, arrived within 1.5 intervals."""
        status = self._status.get(gateway_id)
        if status is None or not status.online:
            return False
        if status.heartbeat_s is not None and status.heartbeat_s > 0:
            age = time.monotonic() - self._status_seen.get(gateway_id, float("-inf"))
            return age <= STALE_HEARTBEATS * status.heartbeat_s
        return True

    # Commands
    async def send_unlock(self, gateway_id: str, command: UnlockCommand, timeout: float) -> Ack:
        """Publish ``command`` (QoS 1) and wait for its ack for at most ``timeout`` seconds."""
        client = self._client
        if client is None or not self.connected:
            raise BrokerUnavailableError("not connected to the broker")
        future: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        self._pending[command.command_id] = _Pending(gateway_id, future)
        try:
            # paho's publish, called from the event loop as aiomqtt itself does, without
            # aiomqtt's wait for the PUBACK (per publish: an Event, a wait_for task and a scan
            # of every pending call, which showed in the API's profile). The PUBACK
            # proves nothing the ack does not: a connection lost before the ack fails
            # ``future`` at once (_fail_pending), a broker that stops answering is a 504.
            info = client._client.publish(  # aiomqtt's own paho client
                GatewayTopics(gateway_id).commands, messages.encode(command), qos=1
            )
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise BrokerUnavailableError(f"publish failed: {mqtt.error_string(info.rc)}")
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            raise GatewayTimeoutError(f"no ack from {gateway_id} within {timeout:.1f}s") from None
        finally:
            self._pending.pop(command.command_id, None)

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish ``payload`` with QoS 1, not retained (event acks); raise
        BrokerUnavailableError when it cannot be handed to the broker."""
        client = self._client
        if client is None or not self.connected:
            raise BrokerUnavailableError("not connected to the broker")
        try:
            await client.publish(topic, payload, qos=1, timeout=5.0)
        except aiomqtt.MqttError as exc:
            raise BrokerUnavailableError(f"publish failed: {exc}") from exc

    async def publish_retained(self, topic: str, payload: bytes) -> None:
        """Publish ``payload`` retained with QoS 1 (gateway modes); raise
        BrokerUnavailableError when it cannot be handed to the broker."""
        client = self._client
        if client is None or not self.connected:
            raise BrokerUnavailableError("not connected to the broker")
        try:
            await client.publish(topic, payload, qos=1, retain=True, timeout=5.0)
        except aiomqtt.MqttError as exc:
            raise BrokerUnavailableError(f"publish failed: {exc}") from exc

    # Session
    async def _run(self) -> None:
        backoff = 0.2
        while True:
            try:
                async with self._broker.client(self.instance_id, keepalive=15) as client:
                    events = EVENTS_FILTER
                    if self.share_events is not None:
                        events = shared_filter(EVENTS_FILTER, self.share_events)
                    await client.subscribe(
                        [(acks_filter(self.instance_id), 1), (STATUS_FILTER, 1), (events, 1)]
                    )
                    self._client = client
                    self._connected.set()
                    backoff = 0.2
                    log.info("relay %s connected to %s", self.instance_id, self._broker.redacted())
                    async for message in client.messages:
                        self._dispatch(message.topic.value, message.payload)
            except aiomqtt.MqttError as exc:
                log.warning("relay lost the broker (%s); retry in about %.1fs", exc, backoff)
            except Exception:  # a bug must not end the session for good: log it, reconnect
                log.exception("relay session failed; retry in about %.1fs", backoff)
            finally:
                self._client = None
                self._connected.clear()
                self._fail_pending()
                # What the broker told us is stale now; on reconnect it sends every retained
                # status again (an API that knows nothing of a gateway treats it as offline).
                self._status.clear()
            # Jitter: many API instances that lost the same broker must not return in lockstep.
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _fail_pending(self) -> None:
        # A command whose ack can no longer arrive on this session gets a definite answer now.
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(BrokerUnavailableError("broker connection lost"))

    def _dispatch(self, topic: str, payload: object) -> None:
        parsed = parse_gateway_topic(topic)
        if parsed is None or not isinstance(payload, bytes | bytearray):
            return
        try:
            if parsed.kind == "ack":
                self._on_ack(parsed.gateway_id, messages.ack_decoder.decode(payload))
            elif parsed.kind == "status":
                if not payload:  # retained status cleared: the gateway was removed
                    self._status.pop(parsed.gateway_id, None)
                    return
                status = messages.status_decoder.decode(payload)
                if status.gateway_id != parsed.gateway_id:
                    return
                self._status[parsed.gateway_id] = status
                self._status_seen[parsed.gateway_id] = time.monotonic()
                self._notify(self._status_listeners, status)
            elif parsed.kind == "event":
                event = messages.event_decoder.decode(payload)
                if event.gateway_id == parsed.gateway_id:
                    self._notify(self._event_listeners, event)
        except messages.DecodeError as exc:
            log.warning("dropping malformed %s from %s: %s", parsed.kind, parsed.gateway_id, exc)

    def _on_ack(self, gateway_id: str, ack: Ack) -> None:
        pending = self._pending.get(ack.command_id)
        # Only the gateway the command went to may answer it.
        if pending is None or pending.gateway_id != gateway_id or pending.future.done():
            return
        pending.future.set_result(ack)

    def _notify(self, listeners: list[Callable[[_T], Coroutine[Any, Any, None]]], item: _T) -> None:
        for listener in listeners:
            task = asyncio.create_task(listener(item))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
