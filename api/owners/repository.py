"""SQL for owners and manager scopes."""

from collections.abc import Sequence

from sqlalchemy import delete, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel, col

from api.bookings.models import BookingClient
from api.buildings.models import Building
from api.groups.models import Group
from api.identity.models import User
from api.owners.models import ManagerScope, Owner


class OwnerRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, owner_id: str) -> Owner | None:
        return await self._session.get(Owner, owner_id)

    async def get_building(self, building_id: str) -> Building | None:
        return await self._session.get(Building, building_id)

    async def get_user(self, user_id: str) -> User | None:
        return await self._session.get(User, user_id)

    async def page(
        self, owner_ids: frozenset[str] | None, after: tuple[str, str] | None, limit: int
    ) -> Sequence[Owner]:
        """Owners by (name, id), after the cursor; ``owner_ids`` None means all."""
        statement = select(Owner).order_by(col(Owner.name), col(Owner.id)).limit(limit)
        if owner_ids is not None:
            statement = statement.where(col(Owner.id).in_(owner_ids))
        if after is not None:
            statement = statement.where(tuple_(col(Owner.name), col(Owner.id)) > tuple_(*after))
        return (await self._session.execute(statement)).scalars().all()

    async def add(self, row: SQLModel) -> None:
        self._session.add(row)
        await self._session.flush()

    async def delete(self, row: SQLModel) -> None:
        await self._session.delete(row)
        await self._session.flush()

    async def dependents(self, owner_id: str) -> dict[str, int]:
        """How many rows still point at the owner, by kind (zero counts left out)."""
        counts: dict[str, int] = {}
        for kind, model in (
            ("buildings", Building),
            ("groups", Group),
            ("booking_clients", BookingClient),
        ):
            count = await self._session.scalar(
                select(func.count()).select_from(model).where(col(model.owner_id) == owner_id)
            )
            if count:
                counts[kind] = int(count)
        return counts

    async def find_scopes(
        self, user_id: str, *, owner_id: str | None = None, building_id: str | None = None
    ) -> Sequence[ManagerScope]:
        """The user's scopes on exactly this owner or building. More than one only after a
        race: the unique constraint cannot catch duplicates, since one of its columns is
        always NULL."""
        statement = select(ManagerScope).where(
            col(ManagerScope.user_id) == user_id,
            col(ManagerScope.owner_id) == owner_id
            if owner_id is not None
            else col(ManagerScope.owner_id).is_(None),
            col(ManagerScope.building_id) == building_id
            if building_id is not None
            else col(ManagerScope.building_id).is_(None),
        )
        return (await self._session.execute(statement)).scalars().all()

    async def scopes_of_target(
        self, *, owner_id: str | None = None, building_id: str | None = None
    ) -> Sequence[ManagerScope]:
        """Every manager scope on one owner or one building."""
        if owner_id is not None:
            condition = col(ManagerScope.owner_id) == owner_id
        else:
            condition = col(ManagerScope.building_id) == building_id
        statement = select(ManagerScope).where(condition).order_by(col(ManagerScope.user_id))
        return (await self._session.execute(statement)).scalars().all()

    async def managers_page(
        self,
        *,
        owner_id: str | None = None,
        building_id: str | None = None,
        after: str | None,
        limit: int,
    ) -> Sequence[tuple[ManagerScope, User]]:
        """Manager scopes on one owner or building with their users, by user id."""
        if owner_id is not None:
            condition = col(ManagerScope.owner_id) == owner_id
        else:
            condition = col(ManagerScope.building_id) == building_id
        statement = (
            select(ManagerScope, User)
            .join(User, col(User.id) == col(ManagerScope.user_id))
            .where(condition)
            .order_by(col(ManagerScope.user_id))
            .limit(limit)
        )
        if after is not None:
            statement = statement.where(col(ManagerScope.user_id) > after)
        return [(s, u) for s, u in (await self._session.execute(statement)).all()]

    async def delete_scopes(self, scope_ids: Sequence[str]) -> None:
        if scope_ids:
            await self._session.execute(
                delete(ManagerScope).where(col(ManagerScope.id).in_(scope_ids))
            )
