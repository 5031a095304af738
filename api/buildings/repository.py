"""SQL for buildings and doors."""

from sqlalchemy.ext.asyncio import AsyncSession

from api.buildings.models import Building, Door


class DoorRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, door_id: str) -> Door | None:
        return await self._session.get(Door, door_id)

    async def get_building(self, building_id: str) -> Building | None:
        return await self._session.get(Building, building_id)
