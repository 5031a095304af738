"""SQL for gateways."""

from collections.abc import Sequence

from sqlalchemy import func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.buildings.models import Building, Door
from api.buildings.repository import insert_or_conflict
from api.gateways.models import Gateway


class GatewayRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, gateway_id: str) -> Gateway | None:
        return await self._session.get(Gateway, gateway_id)

    async def get_building(self, building_id: str) -> Building | None:
        return await self._session.get(Building, building_id)

    async def page(
        self, building_id: str, after: tuple[str, str] | None, limit: int
    ) -> Sequence[Gateway]:
        """Gateways of a building by (name, id) after the cursor."""
        statement = (
            select(Gateway)
            .where(col(Gateway.building_id) == building_id)
            .order_by(col(Gateway.name), col(Gateway.id))
            .limit(limit)
        )
        if after is not None:
            statement = statement.where(tuple_(col(Gateway.name), col(Gateway.id)) > tuple_(*after))
        return (await self._session.execute(statement)).scalars().all()

    async def insert(self, gateway: Gateway) -> bool:
        """False when the id is taken (also when taken by a concurrent request)."""
        return await insert_or_conflict(self._session, gateway)

    async def save(self, gateway: Gateway) -> None:
        self._session.add(gateway)
        await self._session.flush()

    async def door_count(self, gateway_id: str) -> int:
        statement = select(func.count()).select_from(Door).where(col(Door.gateway_id) == gateway_id)
        return int(await self._session.scalar(statement) or 0)

    async def delete(self, gateway: Gateway) -> None:
        await self._session.delete(gateway)
        await self._session.flush()
