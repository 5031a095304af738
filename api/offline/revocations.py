"""Revocation lists of offline tokens: signed, versioned, published retained per gateway.

Each gateway has one list (citykey_protocol/offline.py, RevocationClaims): the ids of its
revoked offline tokens that have not expired, with a version that only grows
(``gateways.revocations_version``), signed by the active key and retained on
``citykey/v1/gw/<id>/revocations``, so the broker can neither forge nor shorten it.

How a revocation gets out. Revoking a token only sets its ``revoked_at`` (and writes the audit
row) in the revoking transaction: that transaction takes no gateway row lock, so it cannot
deadlock with the event store, which locks a gateway row and then appends to the audit chain
(whose lock a revoking transaction holds once its audit row is flushed). Publishing is a
separate, short transaction that locks the gateway row first and writes no audit row:
``RevocationPublisher.sync`` compares each gateway's current list with the one this process
last published; when it holds an id not published yet, it draws a new version (row locked, so
one version is one list, committed before anyone hears of it), signs the list read under that
lock, commits, and publishes. Tokens that merely expired need no new version.

Who calls ``sync``: the request that revoked, right after its commit (the gateway hears within
milliseconds); and every API instance's background pass, every REPUBLISH_INTERVAL_S, which
carries revocations made elsewhere (``service.revoke_for_grants`` in the grants service), in
other instances, or whose publish failed (broker down), and after a restart draws a new version
for every gateway with revoked tokens (it cannot know what was published before it). Every
REFRESH_S it also re-sends the current version unchanged, so a broker that lost its retained
messages has them again; a gateway ignores a version it already holds.

Versions are at least the current time in milliseconds: after a database restore from a
backup, or a gateway deleted and registered again under its old id, new versions still exceed
those the device has applied (it would otherwise refuse every new list as stale).
"""

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.background import cancel_and_wait
from api.common import utcnow
from api.keys.keyring import KeyRing
from api.offline.repository import OfflineTokenRepository
from api.relay.mqtt import MqttRelay, RelayError
from citykey_protocol.offline import (
    MAX_REVOKED,
    REVOCATIONS_TYPE,
    RevocationClaims,
    claims_to_dict,
)
from citykey_protocol.topics import GatewayTopics

log = logging.getLogger(__name__)

REPUBLISH_INTERVAL_S = 5.0
"""Seconds between background passes: the longest a revocation made outside a request of this
instance (or whose publish failed) waits once the broker is reachable."""
REFRESH_S = 300.0
"""Seconds after which the current version of a list is sent again, unchanged."""
PARALLEL = 4
"""Gateways published to at once by one pass."""


def version_floor(now: float | None = None) -> int:
    """The smallest version a new list may have: the time in milliseconds."""
    return int((time.time() if now is None else now) * 1000)


def sign_list(
    keyring: KeyRing, issuer: str, gateway_id: str, version: int, jtis: Sequence[str], now: datetime
) -> bytes:
    """The revocation list message for ``gateway_id``: a compact JWS, as bytes."""
    if len(jtis) > MAX_REVOKED:
        # Never drop a revocation silently; fail loudly (the operator shortens lifetimes).
        raise ValueError(f"{gateway_id}: {len(jtis)} revoked tokens exceed {MAX_REVOKED}")
    claims = RevocationClaims(
        iss=issuer, aud=gateway_id, iat=int(now.timestamp()), ver=version, jtis=tuple(jtis)
    )
    return keyring.sign(claims_to_dict(claims), REVOCATIONS_TYPE).encode("ascii")


@dataclass(frozen=True, slots=True)
class _Published:
    version: int
    jtis: frozenset[str]
    at: float
    """time.monotonic() of the publication."""


class RevocationPublisher:
    """Keeps every gateway's retained revocation list current (module docstring). One per API
    process; requests reach it through the app's state."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        relay: MqttRelay,
        keyring: KeyRing,
        issuer: str,
        *,
        interval_s: float = REPUBLISH_INTERVAL_S,
        refresh_s: float = REFRESH_S,
    ) -> None:
        self._sessions = sessions
        self._relay = relay
        self._keyring = keyring
        self._issuer = issuer
        self._interval_s = interval_s
        self._refresh_s = refresh_s
        self._published: dict[str, _Published] = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> "RevocationPublisher":
        """Pass now and then every interval, in the background, until ``stop``."""
        self._task = asyncio.create_task(self._run(), name="revocation-publisher")
        return self

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def sync(self, gateway_ids: Iterable[str] | None = None) -> list[str]:
        """Publish the lists of ``gateway_ids`` (default: every gateway with revoked tokens
        still alive) that hold an id this process has not published, under a new version, and
        re-send those due for a refresh. Returns the gateway ids published to. Logs, never
        raises, for a broker that is away: the next pass tries again."""
        async with self._lock:
            now = utcnow()
            async with self._sessions() as session:
                lists = await OfflineTokenRepository(session).revoked_by_gateway(now)
            wanted = set(lists) if gateway_ids is None else set(gateway_ids)
            # Gateways are independent (one short transaction and one publish each), so a few
            # go at once: after a restart every gateway with revoked tokens needs a new version,
            # and one at a time that took 10-15 s for 2,000 (docs/performance.md). Bounded, so
            # the pass never holds more than PARALLEL of the pool's connections.
            slots = asyncio.Semaphore(PARALLEL)

            async def one(gateway_id: str) -> str | None:
                current = frozenset(lists.get(gateway_id, ()))
                known = self._published.get(gateway_id)
                async with slots:
                    if known is None or not current <= known.jtis:
                        sent = await self._publish_new_version(gateway_id, now)
                    elif time.monotonic() - known.at >= self._refresh_s:
                        sent = await self._refresh(gateway_id, known, now)
                    else:
                        return None
                return gateway_id if sent else None

            # Every gateway's attempt finishes before the pass ends (no task outlives the lock);
            # then the first failure, if any, is the pass's failure, as before.
            results = await asyncio.gather(
                *(one(g) for g in sorted(wanted)), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            return [gateway_id for gateway_id in results if isinstance(gateway_id, str)]

    async def _publish_new_version(self, gateway_id: str, now: datetime) -> bool:
        async with self._sessions() as session:
            repo = OfflineTokenRepository(session)
            # The row lock first (and no audit row in this transaction): see the module doc.
            version = await repo.next_revocations_version(gateway_id, version_floor())
            if version is None:
                await session.rollback()
                return False  # the gateway was deleted
            jtis = await repo.revoked_jtis(gateway_id, now)
            try:
                payload = sign_list(self._keyring, self._issuer, gateway_id, version, jtis, now)
            except ValueError as exc:
                await session.rollback()
                log.error("revocation list not published: %s", exc)
                return False
            await session.commit()  # before any gateway hears of this version
        if not await self._send(gateway_id, payload, version):
            return False
        self._published[gateway_id] = _Published(version, frozenset(jtis), time.monotonic())
        return True

    async def _refresh(self, gateway_id: str, known: _Published, now: datetime) -> bool:
        # The current version (another instance may have drawn a newer one than ours) with the
        # current list: a gateway holding that version ignores it quietly; a broker that lost
        # the retained message has it again.
        async with self._sessions() as session:
            repo = OfflineTokenRepository(session)
            version = await repo.revocations_version(gateway_id)
            jtis = await repo.revoked_jtis(gateway_id, now)
        if version is None or version < 1:
            return False
        payload = sign_list(self._keyring, self._issuer, gateway_id, version, jtis, now)
        if not await self._send(gateway_id, payload, version):
            return False
        self._published[gateway_id] = _Published(
            max(version, known.version), known.jtis | frozenset(jtis), time.monotonic()
        )
        return True

    async def _send(self, gateway_id: str, payload: bytes, version: int) -> bool:
        try:
            await self._relay.publish_retained(GatewayTopics(gateway_id).revocations, payload)
        except (RelayError, ValueError) as exc:  # ValueError: id unusable as a topic
            log.warning("revocation list %d for %s not published: %s", version, gateway_id, exc)
            return False
        return True

    async def _run(self) -> None:
        while True:
            if self._relay.connected:
                try:
                    await self.sync()
                except (SQLAlchemyError, OSError) as exc:
                    log.warning("revocation pass failed: %s", exc)
                except Exception:
                    # Never let one bad pass stop revocations for good.
                    log.exception("revocation pass failed")
            await asyncio.sleep(self._interval_s)
