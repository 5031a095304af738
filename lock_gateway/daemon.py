"""The gateway daemon: one MQTT session, commands in, acks/events/status out."""

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

import aiomqtt

from citykey_protocol import messages
from citykey_protocol.codes import AckResult, CommandRefusal, DeviceFault
from citykey_protocol.keyset import KEYSET_REJECTED_EVENT, keyset_url_for
from citykey_protocol.messages import (
    UNLOCK_DENIED_EVENT,
    UNLOCK_EVENT,
    Ack,
    GatewayStatus,
    UnlockCommand,
)
from citykey_protocol.modes import MODE_REJECTED_EVENT
from citykey_protocol.topics import KEYSET_TOPIC, GatewayTopics, is_valid_segment
from lock_gateway import __version__
from lock_gateway.clock_offset import ClockOffsetEstimator
from lock_gateway.config import GatewayConfig
from lock_gateway.driver import LockDriver, LockDriverError, LockEvent, LockJammedError
from lock_gateway.journal import JOURNAL_DB_FILE, EventJournal, JournalPublisher
from lock_gateway.keys import KeySet
from lock_gateway.keyset import KeySetController, KeySetRejectedError
from lock_gateway.modes import (
    MODE_STATE_FILE,
    GatewayLockedDownError,
    ModeController,
    ModeRejectedError,
)
from lock_gateway.offline import OfflineChannel
from lock_gateway.replay import REPLAY_DB_FILE, ReplayGuard
from lock_gateway.validator import TokenRejectedError, TokenValidator

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 10.0
FIRST_BACKOFF_S = 0.2


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
        # Signed key sets (lock_gateway/keyset.py): new keys only from keys already trusted.
        self.keysets = KeySetController(
            keys=keys,
            issuer=config.issuer,
            cache_path=config.key_cache,
            url=config.keyset_url or (config.jwks_url and keyset_url_for(config.jwks_url)),
            poll_s=config.keyset_poll_s,
        )
        self.clock_offset = ClockOffsetEstimator(clock=clock)
        # Every event goes through record_event into this journal before it is published
        # (lock_gateway/journal.py); made before subscribing, so no driver event is missed.
        self.journal = EventJournal(
            None if config.state_dir is None else config.state_dir / JOURNAL_DB_FILE,
            max_events=config.journal_max_events,
            clock=clock,
        )
        self.journal_publisher = JournalPublisher(
            self.journal, config.gateway_id, resend_s=config.journal_resend_s
        )
        # Offline unlock (lock_gateway/offline.py): the revocation list and, when configured,
        # the local endpoint citizens' apps reach without the API.
        self.offline = OfflineChannel(
            config, keys, self.modes, self.actuate, self.record_event, clock=clock
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
                keyset_version=self.keysets.version,
                clock_offset_s=self.clock_offset.estimate(),
                journal_fill=round(self.journal.fill, 4),
            )
        )

    async def run(self) -> None:
        """Connect, serve, and reconnect with backoff until cancelled."""
        await self.modes.restore()  # before any command: a stored lockdown holds from the start
        await self.offline.start()  # the local endpoint serves with or without the broker
        poller = self.keysets.start_polling(self._keyset_applied, self._keyset_rejected)
        if poller is not None and (this := asyncio.current_task()) is not None:
            this.add_done_callback(lambda _: poller.cancel())  # the poll ends with this task
        backoff = FIRST_BACKOFF_S
        while True:
            try:
                await self._serve_once()
            except aiomqtt.MqttError as exc:
                if self.connected.is_set():
                    # The session was up: this is a new outage, so start from a short wait
                    # again instead of the longest one an earlier outage reached.
                    backoff = FIRST_BACKOFF_S
                log.warning(
                    "%s: broker link lost (%s); retry in about %.1fs",
                    self.config.gateway_id,
                    exc,
                    backoff,
                )
            finally:
                self.connected.clear()
                self._client = None
            # Jitter: the gateways of a city that lost the same broker must not all come back
            # in the same instant.
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
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
            await client.subscribe(KEYSET_TOPIC, qos=1)
            await client.subscribe(self.topics.event_acks, qos=1)
            await client.subscribe(self.topics.revocations, qos=1)
            await client.publish(self.topics.status, self._status(True), qos=1, retain=True)
            self.connected.set()
            log.info("%s online at %s", self.config.gateway_id, self.config.broker.redacted())
            heartbeat = asyncio.create_task(self._heartbeat(client))
            publisher = asyncio.create_task(self.journal_publisher.run(client))
            try:
                async for message in client.messages:
                    if message.topic.value == self.topics.event_acks:
                        self.journal_publisher.on_ack(message.payload)
                    elif message.topic.value == self.topics.mode:
                        self._spawn(self._apply_mode(client, message.payload))
                    elif message.topic.value == self.topics.revocations:
                        self._spawn(self.offline.receive_revocations(message.payload))
                    elif message.topic.value == KEYSET_TOPIC:
                        self._receive_keyset(message.payload)
                    else:
                        self._spawn(self._handle(client, message.payload))
            finally:
                heartbeat.cancel()
                publisher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeat
                with contextlib.suppress(asyncio.CancelledError):
                    await publisher

    async def stop(self) -> None:
        """Say goodbye on the status topic (the last will covers crashes)."""
        await self.offline.close()
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
        sub: str | None = None  # the token's subject, once its token held (for the journal)

        def ack(result: AckResult, reason: str | None = None, until: float | None = None) -> Ack:
            made = Ack(
                command_id=command.command_id,
                gateway_id=self.config.gateway_id,
                door=command.door,
                result=result,
                reason=reason,
                unlocked_until=until,
                ts=self._clock(),
            )
            self._journal_unlock(made, sub)  # every outcome is an event: unlock / unlock_denied
            return made

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
        self.clock_offset.observe(claims.iat)  # authentic: the API's clock at signing
        sub = claims.sub
        if claims.door != command.door:
            return ack(AckResult.DENIED, "door_mismatch")
        result, reason, until = await self.actuate(claims.door, claims.dur)
        return ack(result, reason, until)

    async def actuate(
        self, door: str, seconds: float
    ) -> tuple[AckResult, str | None, float | None]:
        """Open ``door`` for ``seconds`` through the mode guard and the driver: the one way a
        validated unlock (an online command or an offline token) moves a lock. Returns
        ``(result, reason, unlocked_until)`` as an ack carries them."""
        channel = self.config.doors[door]
        try:
            until = await self.modes.unlock(door, channel, seconds)
        except GatewayLockedDownError:
            return AckResult.DENIED, CommandRefusal.LOCKDOWN.value, None
        except LockJammedError:
            return AckResult.JAMMED, None, None
        except LockDriverError as exc:
            log.error("%s: driver fault on channel %d: %s", self.config.gateway_id, channel, exc)
            return AckResult.ERROR, DeviceFault.DRIVER_ERROR.value, None
        self.actuations += 1
        return AckResult.UNLOCKED, None, until

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
            self.record_event(
                MODE_REJECTED_EVENT,
                None,
                {
                    "reason": exc.reason.value,
                    "detail": exc.detail,
                    "current_version": self.modes.version,
                },
            )
            return
        if applied:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(self.topics.status, self._status(True), qos=1, retain=True)

    def _receive_keyset(self, payload: object) -> None:
        """Hand a key set from the broker to the key-set controller (synchronously, so sets
        apply in arrival order)."""
        if not isinstance(payload, bytes | bytearray):
            return
        try:
            applied = self.keysets.receive(bytes(payload))
        except KeySetRejectedError as exc:
            self._keyset_rejected(exc, "mqtt")
            return
        if applied:
            self._keyset_applied()

    def _keyset_applied(self) -> None:
        """Acknowledge a new key set at once: the status carries ``keyset_version``."""
        client = self._client
        if client is not None:
            self._spawn(self._publish_status_quietly(client))

    def _keyset_rejected(self, exc: KeySetRejectedError, source: str) -> None:
        """Report a refused key set as a ``keyset_rejected`` event (rate-limited)."""
        log.warning("%s: key set from %s refused: %s", self.config.gateway_id, source, exc)
        if not exc.report:
            return
        self.record_event(
            KEYSET_REJECTED_EVENT,
            None,
            {
                "reason": exc.reason.value,
                "detail": exc.detail,
                "source": source,
                "kid": exc.kid,
                "current_version": self.keysets.version,
            },
        )

    async def _publish_status_quietly(self, client: aiomqtt.Client) -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            await client.publish(self.topics.status, self._status(True), qos=1, retain=True)

    def _on_lock_event(self, event: LockEvent) -> None:
        # Journaled whether or not the broker is reachable: delivered when it is.
        self.record_event(
            event.kind, self._channel_to_door.get(event.channel), event.data, ts=event.ts
        )

    def record_event(
        self,
        kind: str,
        door: str | None,
        data: dict[str, Any],
        *,
        ts: float | None = None,
        required: bool = False,
    ) -> int | None:
        """THE one way to report a gateway event (lock and door events, alarms, unlock results,
        refusals, offline unlocks, ...): journaled (committed to the local journal with the
        next sequence number) and then published until the API acknowledges it. Never publish
        a GatewayEvent any other way. Keep this name: other modules call it.

        ``door`` is one of this gateway's door ids or None; ``ts`` defaults to now. Returns the
        sequence number, or None when the journal could not keep the event (full, or its file
        failed; then it is counted in the next ``journal_overflow`` event). With
        ``required=True`` that case raises JournalFullError / JournalError instead: use it for
        anything that must not happen without a record (e.g. an offline unlock), journal
        before acting, and refuse the action when it raises."""
        seq = self.journal.append(
            kind, door, data, ts=self._clock() if ts is None else ts, required=required
        )
        self.journal_publisher.notify()
        return seq

    def _journal_unlock(self, ack: Ack, sub: str | None) -> None:
        """The outcome of an unlock command as an event: ``unlock`` when the gateway tried the
        lock (unlocked, jammed, error), ``unlock_denied`` when it refused."""
        door = ack.door if ack.door in self.config.doors else None  # the command's, unchecked
        data: dict[str, Any] = {"command_id": ack.command_id[:64], "sub": sub}
        if door is None:
            data["door"] = ack.door[:64]
        if ack.result is AckResult.DENIED:
            self.record_event(UNLOCK_DENIED_EVENT, door, data | {"reason": ack.reason}, ts=ack.ts)
        else:
            data |= {"result": ack.result.value, "reason": ack.reason, "until": ack.unlocked_until}
            self.record_event(UNLOCK_EVENT, door, data, ts=ack.ts)
