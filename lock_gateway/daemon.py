"""The gateway daemon: one MQTT session, commands in, acks/events/status out."""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import aiomqtt

from citykey_protocol import messages
from citykey_protocol.codes import AckResult, CommandRefusal, DeviceFault
from citykey_protocol.messages import Ack, GatewayEvent, GatewayStatus, UnlockCommand
from citykey_protocol.modes import MODE_REJECTED_EVENT
from citykey_protocol.topics import GatewayTopics, is_valid_segment
from lock_gateway import __version__
from lock_gateway.config import GatewayConfig
from lock_gateway.driver import LockDriver, LockDriverError, LockEvent, LockJammedError
from lock_gateway.keys import KeySet
from lock_gateway.modes import (
    MODE_STATE_FILE,
    GatewayLockedDownError,
    ModeController,
    ModeRejectedError,
)
from lock_gateway.replay import REPLAY_DB_FILE, ReplayGuard
from lock_gateway.validator import TokenRejectedError, TokenValidator

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 10.0


class Gateway:
    """Runs one gateway: validates every command's token itself, then drives the lock."""

    def __init__(
        self,
        config: GatewayConfig,
        driver: LockDriver,
        keys: KeySet,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.topics = GatewayTopics(config.gateway_id)
        self._driver = driver
        self._clock = clock
        self._channel_to_door = {channel: door for door, channel in config.doors.items()}
        self.validator = TokenValidator(
            keys=keys,
            issuer=config.issuer,
            gateway_id=config.gateway_id,
            doors=config.doors.keys(),
            replay_guard=ReplayGuard(
                leeway=config.leeway_s,
                path=None if config.state_dir is None else config.state_dir / REPLAY_DB_FILE,
                now=clock(),
            ),
            leeway=config.leeway_s,
            max_lifetime=config.max_token_lifetime_s,
            clock=clock,
        )
        self._client: aiomqtt.Client | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.connected = asyncio.Event()
        self.actuations = 0
        # Lockdown and passage mode (lock_gateway/modes.py); this class only routes to it.
        self.modes = ModeController(
            gateway_id=config.gateway_id,
            issuer=config.issuer,
            doors=config.doors,
            driver=driver,
            keys=keys,
            state_path=None if config.state_dir is None else config.state_dir / MODE_STATE_FILE,
            clock=clock,
        )
        driver.subscribe(self._on_lock_event)

    def _status(self, online: bool) -> bytes:
        return messages.encode(
            GatewayStatus(
                gateway_id=self.config.gateway_id,
                online=online,
                ts=self._clock(),
                doors=sorted(self.config.doors),
                software=f"lock_gateway/{__version__}",
                heartbeat_s=self.config.heartbeat_s,
                mode_version=self.modes.version,
            )
        )

    async def run(self) -> None:
        """Connect, serve, and reconnect with backoff until cancelled."""
        await self.modes.restore()  # before any command: a stored lockdown holds from the start
        backoff = 0.2
        while True:
            try:
                await self._serve_once()
            except aiomqtt.MqttError as exc:
                log.warning(
                    "%s: broker link lost (%s); retry in %.1fs",
                    self.config.gateway_id,
                    exc,
                    backoff,
                )
            finally:
                self.connected.clear()
                self._client = None
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _serve_once(self) -> None:
        will = aiomqtt.Will(self.topics.status, self._status(False), qos=1, retain=True)
        client = self.config.broker.client(
            f"gw-{self.config.gateway_id}", will=will, keepalive=self.config.keepalive_s
        )
        async with client:
            self._client = client
            await client.subscribe(self.topics.commands, qos=1)
            await client.subscribe(self.topics.mode, qos=1)
            await client.publish(self.topics.status, self._status(True), qos=1, retain=True)
            self.connected.set()
            log.info("%s online at %s", self.config.gateway_id, self.config.broker.redacted())
            heartbeat = asyncio.create_task(self._heartbeat(client))
            try:
                async for message in client.messages:
                    if message.topic.value == self.topics.mode:
                        self._spawn(self._apply_mode(client, message.payload))
                    else:
                        self._spawn(self._handle(client, message.payload))
            finally:
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeat

    async def stop(self) -> None:
        """Say goodbye on the status topic (the last will covers crashes)."""
        client = self._client
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(self.topics.status, self._status(False), qos=1, retain=True)

    async def _heartbeat(self, client: aiomqtt.Client) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_s)
            await client.publish(self.topics.status, self._status(True), qos=1, retain=True)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, client: aiomqtt.Client, payload: object) -> None:
        if not isinstance(payload, bytes | bytearray):
            return
        try:
            command = messages.command_decoder.decode(payload)
        except messages.DecodeError as exc:
            log.warning(
                "%s: malformed command dropped: %s %r", self.config.gateway_id, exc, payload[:200]
            )
            return
        if not is_valid_segment(command.reply_to):
            log.warning(
                "%s: command %s has a bad reply_to", self.config.gateway_id, command.command_id[:64]
            )
            return
        ack = await self.execute(command)
        try:
            await client.publish(self.topics.ack(command.reply_to), messages.encode(ack), qos=1)
        except aiomqtt.MqttError as exc:
            log.warning(
                "%s: ack for %s not sent: %s", self.config.gateway_id, command.command_id, exc
            )

    async def execute(self, command: UnlockCommand) -> Ack:
        """Validate the command's token and, only if it holds, actuate. Always returns an ack."""

        def ack(result: AckResult, reason: str | None = None, until: float | None = None) -> Ack:
            return Ack(
                command_id=command.command_id,
                gateway_id=self.config.gateway_id,
                door=command.door,
                result=result,
                reason=reason,
                unlocked_until=until,
                ts=self._clock(),
            )

        if self.modes.lockdown:
            # Refused before the token is even read: nothing opens in lockdown.
            return ack(AckResult.DENIED, CommandRefusal.LOCKDOWN.value)
        try:
            claims = self.validator.validate(command.token)
        except TokenRejectedError as exc:
            log.info(
                "%s: refused command %s: %s",
                self.config.gateway_id,
                command.command_id[:64],
                exc.reason.value,
            )
            return ack(AckResult.DENIED, exc.reason.value)
        if claims.door != command.door:
            return ack(AckResult.DENIED, "door_mismatch")
        channel = self.config.doors[claims.door]
        try:
            until = await self.modes.unlock(claims.door, channel, claims.dur)
        except GatewayLockedDownError:
            return ack(AckResult.DENIED, CommandRefusal.LOCKDOWN.value)
        except LockJammedError:
            return ack(AckResult.JAMMED)
        except LockDriverError as exc:
            log.error("%s: driver fault on channel %d: %s", self.config.gateway_id, channel, exc)
            return ack(AckResult.ERROR, DeviceFault.DRIVER_ERROR.value)
        self.actuations += 1
        return ack(AckResult.UNLOCKED, until=until)

    async def _apply_mode(self, client: aiomqtt.Client, payload: object) -> None:
        """Hand a mode message to the mode controller; acknowledge an applied one with the
        retained status (which carries its version), report a refused one as an event."""
        if not isinstance(payload, bytes | bytearray) or not payload:
            # An emptied retained message: the mode already applied (and stored) stays.
            log.warning("%s: empty mode message ignored", self.config.gateway_id)
            return
        try:
            applied = await self.modes.receive(bytes(payload))
        except ModeRejectedError as exc:
            log.warning("%s: mode message refused: %s", self.config.gateway_id, exc)
            event = GatewayEvent(
                gateway_id=self.config.gateway_id,
                kind=MODE_REJECTED_EVENT,
                ts=self._clock(),
                data={
                    "reason": exc.reason.value,
                    "detail": exc.detail,
                    "current_version": self.modes.version,
                },
            )
            await self._publish_quietly(client, self.topics.events, messages.encode(event))
            return
        if applied:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(self.topics.status, self._status(True), qos=1, retain=True)

    def _on_lock_event(self, event: LockEvent) -> None:
        client = self._client
        if client is None:
            return
        payload = messages.encode(
            GatewayEvent(
                gateway_id=self.config.gateway_id,
                kind=event.kind,
                ts=event.ts,
                door=self._channel_to_door.get(event.channel),
                data=event.data,
            )
        )
        self._spawn(self._publish_quietly(client, self.topics.events, payload))

    @staticmethod
    async def _publish_quietly(client: aiomqtt.Client, topic: str, payload: bytes) -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            await client.publish(topic, payload, qos=1)
