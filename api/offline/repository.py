"""SQL for offline tokens and the per-gateway revocation list versions."""

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import case, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.buildings.models import Door
from api.gateways.models import Gateway
from api.offline.models import OfflineToken

LIST_LIMIT = 200
"""Most tokens one listing returns (a citizen holds a handful at a time)."""


class OfflineTokenRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    def add(self, token: OfflineToken) -> None:
        """Queue ``token`` for insertion with the session's transaction."""
        self._session.add(token)

    async def get(self, jti: str, *, for_update: bool = False) -> OfflineToken | None:
        statement = select(OfflineToken).where(col(OfflineToken.jti) == jti)
        if for_update:
            statement = statement.with_for_update()
        return (await self._session.execute(statement)).scalars().first()

    async def mine(self, user_id: str, now: datetime) -> Sequence[OfflineToken]:
        """The user's tokens that have not expired (revoked ones included), newest first."""
        statement = (
            select(OfflineToken)
            .where(col(OfflineToken.user_id) == user_id, col(OfflineToken.expires_at) > now)
            .order_by(col(OfflineToken.issued_at).desc(), col(OfflineToken.jti))
            .limit(LIST_LIMIT)
        )
        return (await self._session.execute(statement)).scalars().all()

    async def live_tokens_of_rules(
        self, rule_ids: Sequence[str], now: datetime
    ) -> Sequence[OfflineToken]:
        """Unexpired, unrevoked tokens issued on the strength of any of ``rule_ids``, locked."""
        if not rule_ids:
            return []
        statement = (
            select(OfflineToken)
            .where(
                col(OfflineToken.rule_id).in_(rule_ids),
                col(OfflineToken.expires_at) > now,
                col(OfflineToken.revoked_at).is_(None),
            )
            .order_by(col(OfflineToken.jti))
            .with_for_update()
        )
        return (await self._session.execute(statement)).scalars().all()

    async def next_revocations_version(self, gateway_id: str, floor: int) -> int | None:
        """Give ``gateway_id`` a new revocation list version: one above its current, and at
        least ``floor``. The gateway's row stays locked until the transaction ends, so changes
        to one gateway's list are serialized across API instances. None when the gateway
        does not exist."""
        current = col(Gateway.revocations_version)
        statement = (
            update(Gateway)
            .where(col(Gateway.id) == gateway_id)
            .values(revocations_version=case((current + 1 > floor, current + 1), else_=floor))
            .returning(current)
        )
        version = (await self._session.execute(statement)).scalar()
        return int(version) if version is not None else None

    async def revocations_version(self, gateway_id: str) -> int | None:
        """The gateway's current revocation list version; None when it does not exist."""
        statement = select(col(Gateway.revocations_version)).where(col(Gateway.id) == gateway_id)
        version = (await self._session.execute(statement)).scalar()
        return None if version is None else int(version)

    async def revoked_jtis(self, gateway_id: str, now: datetime) -> list[str]:
        """Ids of the gateway's revoked tokens that have not expired: its revocation list."""
        statement = (
            select(col(OfflineToken.jti))
            .where(
                col(OfflineToken.gateway_id) == gateway_id,
                col(OfflineToken.revoked_at).is_not(None),
                col(OfflineToken.expires_at) > now,
            )
            .order_by(col(OfflineToken.jti))
        )
        return list((await self._session.execute(statement)).scalars().all())

    async def buildings_of_doors(self, door_ids: Sequence[str]) -> dict[str, str]:
        """Door id -> building id."""
        if not door_ids:
            return {}
        statement = select(col(Door.id), col(Door.building_id)).where(col(Door.id).in_(door_ids))
        return {door: building for door, building in (await self._session.execute(statement)).all()}

    async def revoked_by_gateway(self, now: datetime) -> dict[str, list[str]]:
        """Gateway id -> ids of its revoked tokens that have not expired, for every gateway
        that has any (the expiry index keeps this to the last minutes' tokens)."""
        statement = (
            select(col(OfflineToken.gateway_id), col(OfflineToken.jti))
            .where(col(OfflineToken.revoked_at).is_not(None), col(OfflineToken.expires_at) > now)
            .order_by(col(OfflineToken.gateway_id), col(OfflineToken.jti))
        )
        lists: dict[str, list[str]] = {}
        for gateway_id, jti in (await self._session.execute(statement)).all():
            lists.setdefault(gateway_id, []).append(jti)
        return lists
