"""The passage scheduler: keeps every gateway's mode in step with lockdowns and passage windows.

Every TICK_INTERVAL_S it computes, for each gateway of each building that has (or had) a mode,
the desired mode now: lockdown, or the doors in a passage window and each window's end. It
publishes a new version only for a building where some gateway's desired mode differs from what
this scheduler last published to it, so messages go out on transitions, not on every tick. A
gateway it has never published to is brought up to date on the first tick unless it would be
told nothing (default mode, building never sent one): so a restarted API re-asserts every
mode, which also repairs a change committed just before a crash but never sent.

Each API instance runs one. Several instances each publish a transition (a few redundant
messages with growing versions, harmless); a lockdown change made through the API is
published by the request and then once more by each scheduler at its next tick.
"""

import asyncio
import logging
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.background import cancel_and_wait
from api.common import utcnow
from api.keys.keyring import KeyRing
from api.modes.plan import DesiredMode
from api.modes.publisher import ModePublisher
from api.modes.repository import ModeRepository
from api.modes.service import building_modes, republish_building
from api.relay.mqtt import MqttRelay

log = logging.getLogger(__name__)

TICK_INTERVAL_S = 15.0
"""Seconds between ticks: a passage window opens or closes at most this late."""


class PassageScheduler:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        relay: MqttRelay,
        keyring: KeyRing,
        issuer: str,
        *,
        interval_s: float = TICK_INTERVAL_S,
    ) -> None:
        self._sessions = sessions
        self._relay = relay
        self._publisher = ModePublisher(relay, keyring, issuer)
        self._interval_s = interval_s
        self._published: dict[str, DesiredMode] = {}
        """Gateway id -> the mode this scheduler last got onto the broker for it."""
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> "PassageScheduler":
        """Tick now and then every interval, in the background, until ``stop``."""
        self._task = asyncio.create_task(self._run(), name="passage-scheduler")
        return self

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def tick(self, now: datetime | None = None) -> list[str]:
        """One pass at ``now`` (default: the current time). Returns the ids of the gateways a
        new mode was published to."""
        now = now or utcnow()
        published: list[str] = []
        async with self._lock:
            async with self._sessions() as session:
                repo = ModeRepository(session)
                buildings = list(await repo.buildings_with_modes())
                versions = {b.id: b.mode_version for b in buildings}
                desired = await building_modes(repo, buildings, now)
            for building_id, modes in desired.items():
                if not any(
                    self._needs_publish(gateway_id, mode, versions[building_id])
                    for gateway_id, mode in modes.items()
                ):
                    continue
                try:
                    async with self._sessions() as session:
                        outcome = await republish_building(
                            session, self._publisher, building_id, now
                        )
                except SQLAlchemyError as exc:
                    log.warning("modes of %s not updated: %s", building_id, exc)
                    continue
                if outcome is None:
                    continue
                staged, sent = outcome
                for gateway_id, ok in sent.items():
                    # Only what the broker took counts: the rest is retried next tick.
                    if ok:
                        self._published[gateway_id] = staged.modes[gateway_id]
                        published.append(gateway_id)
        return published

    def _needs_publish(self, gateway_id: str, mode: DesiredMode, version: int) -> bool:
        last = self._published.get(gateway_id)
        if last is None:
            return not (mode.is_default and version == 0)
        return last != mode

    async def _run(self) -> None:
        while True:
            if self._relay.connected:
                try:
                    await self.tick()
                except Exception:
                    # Never let one bad pass stop passage mode for good.
                    log.exception("passage scheduler tick failed")
            await asyncio.sleep(self._interval_s)
