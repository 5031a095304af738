"""SQL for lockdown and passage mode."""

from collections.abc import Sequence
from datetime import date, datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.buildings.models import Building, Door, Holiday
from api.gateways.models import Gateway
from api.identity.models import User


class ModeRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def building(self, building_id: str, *, for_update: bool = False) -> Building | None:
        """The building; with ``for_update`` its row stays locked until the transaction ends,
        so that mode changes of one building are serialized across API instances."""
        statement = select(Building).where(col(Building.id) == building_id)
        if for_update:
            statement = statement.with_for_update()
        return (await self._session.execute(statement)).scalars().first()

    async def next_mode_version(self) -> int:
        """A version above every building's: a high-water mark, so a gateway moved to another
        building still sees versions grow. Call with the building's row locked (its own value
        is part of the maximum, so its versions are strictly increasing)."""
        highest = (await self._session.execute(select(func.max(Building.mode_version)))).scalar()
        return int(highest or 0) + 1

    async def door(self, door_id: str) -> Door | None:
        return await self._session.get(Door, door_id)

    async def gateways(self, building_ids: Sequence[str]) -> Sequence[Gateway]:
        if not building_ids:
            return []
        statement = (
            select(Gateway)
            .where(col(Gateway.building_id).in_(building_ids))
            .order_by(col(Gateway.name), col(Gateway.id))
        )
        return (await self._session.execute(statement)).scalars().all()

    async def passage_doors(self, building_ids: Sequence[str]) -> Sequence[Door]:
        """Doors of the buildings that have a passage schedule."""
        if not building_ids:
            return []
        statement = select(Door).where(
            col(Door.building_id).in_(building_ids), col(Door.passage_schedule).is_not(None)
        )
        return (await self._session.execute(statement)).scalars().all()

    async def holidays(
        self, building_ids: Sequence[str], start: date, end: date
    ) -> dict[str, set[date]]:
        """Holiday dates per building between ``start`` and ``end`` inclusive."""
        result: dict[str, set[date]] = {b: set() for b in building_ids}
        if not building_ids:
            return result
        statement = select(col(Holiday.building_id), col(Holiday.date)).where(
            col(Holiday.building_id).in_(building_ids),
            col(Holiday.date) >= start,
            col(Holiday.date) <= end,
        )
        for building_id, day in (await self._session.execute(statement)).all():
            result[building_id].add(day)
        return result

    async def buildings_with_modes(self) -> Sequence[Building]:
        """Buildings whose gateways may need a mode: ever sent one, in lockdown, or with a
        door on a passage schedule. Any other building's gateways hold the default mode."""
        with_schedule = select(col(Door.building_id)).where(col(Door.passage_schedule).is_not(None))
        statement = select(Building).where(
            or_(
                col(Building.mode_version) > 0,
                col(Building.lockdown_since).is_not(None),
                col(Building.id).in_(with_schedule),
            )
        )
        return (await self._session.execute(statement)).scalars().all()

    async def display_name(self, user_id: str | None) -> str | None:
        if user_id is None:
            return None
        user = await self._session.get(User, user_id)
        return user.display_name if user is not None else None

    async def record_ack(self, gateway_id: str, version: int, at: datetime) -> bool:
        """Record that ``gateway_id`` applied mode ``version``, when that covers its building's
        current version. The building's version is what is stored, never the reported number:
        a status message is not signed, so it must not be able to push the counter around."""
        statement = (
            update(Gateway)
            .where(
                col(Gateway.id) == gateway_id,
                col(Gateway.building_id) == col(Building.id),
                col(Building.mode_version) <= version,
                col(Gateway.mode_version) < col(Building.mode_version),
            )
            .values(mode_version=Building.mode_version, mode_acked_at=at)
        )
        result = await self._session.execute(statement)
        return bool(result.rowcount)  # type: ignore[attr-defined]
