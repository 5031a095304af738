"""SQL for groups and their members."""

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.access.grants_repository import keyset
from api.access.models import Grant
from api.buildings.models import Building
from api.groups.models import Group, GroupMember
from api.identity.models import User
from api.owners.models import Owner
from api.public_access.models import PublicAccess


class GroupRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, group_id: str) -> Group | None:
        return await self._session.get(Group, group_id)

    async def owner(self, owner_id: str) -> Owner | None:
        return await self._session.get(Owner, owner_id)

    async def user(self, user_id: str) -> User | None:
        return await self._session.get(User, user_id)

    async def owners_of_buildings(self, building_ids: Iterable[str]) -> set[str]:
        """The owners of the given buildings (buildings without an owner add nothing)."""
        ids = list(building_ids)
        if not ids:
            return set()
        statement = select(col(Building.owner_id)).where(
            col(Building.id).in_(ids), col(Building.owner_id).is_not(None)
        )
        return {o for o in (await self._session.execute(statement)).scalars().all() if o}

    async def name_taken(self, owner_id: str, name: str, *, except_id: str | None = None) -> bool:
        statement = select(col(Group.id)).where(
            col(Group.owner_id) == owner_id, func.lower(col(Group.name)) == name.lower()
        )
        if except_id is not None:
            statement = statement.where(col(Group.id) != except_id)
        return (await self._session.execute(statement.limit(1))).first() is not None

    def add(self, group: Group) -> None:
        self._session.add(group)

    async def flush(self) -> None:
        await self._session.flush()

    async def find(
        self,
        owner_ids: frozenset[str] | None,
        owner_id: str | None,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> Sequence[Group]:
        """Groups of ``owner_ids`` (None: of every owner), optionally of one owner only."""
        if owner_ids is not None and not owner_ids:
            return []
        statement = select(Group)
        if owner_ids is not None:
            statement = statement.where(col(Group.owner_id).in_(owner_ids))
        if owner_id is not None:
            statement = statement.where(col(Group.owner_id) == owner_id)
        statement = keyset(statement, col(Group.created_at), col(Group.id), after, limit)
        return (await self._session.execute(statement)).scalars().all()

    async def member_counts(self, group_ids: Sequence[str]) -> dict[str, int]:
        if not group_ids:
            return {}
        statement = (
            select(col(GroupMember.group_id), func.count())
            .where(col(GroupMember.group_id).in_(group_ids))
            .group_by(col(GroupMember.group_id))
        )
        counts = {g: 0 for g in group_ids}
        for group_id, count in (await self._session.execute(statement)).all():
            counts[group_id] = count
        return counts

    async def usage(self, group_id: str) -> tuple[int, int]:
        """How many grants (revoked ones too: the foreign key keeps them) and public-hours
        rules refer to the group."""
        grants = await self._session.scalar(
            select(func.count()).select_from(Grant).where(col(Grant.group_id) == group_id)
        )
        public = await self._session.scalar(
            select(func.count())
            .select_from(PublicAccess)
            .where(col(PublicAccess.group_id) == group_id)
        )
        return int(grants or 0), int(public or 0)

    async def delete(self, group: Group) -> None:
        """Delete the group and its memberships (flushed, so a reference that appeared
        meanwhile fails here, inside the request)."""
        await self._session.execute(
            delete(GroupMember).where(col(GroupMember.group_id) == group.id)
        )
        await self._session.delete(group)
        await self._session.flush()

    async def member_ids(self, group_id: str) -> list[str]:
        statement = (
            select(col(GroupMember.user_id))
            .where(col(GroupMember.group_id) == group_id)
            .order_by(col(GroupMember.user_id))
        )
        return list((await self._session.execute(statement)).scalars().all())

    async def members(
        self, group_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[tuple[GroupMember, User]]:
        statement = (
            select(GroupMember, User)
            .join(User, col(User.id) == col(GroupMember.user_id))
            .where(col(GroupMember.group_id) == group_id)
        )
        statement = keyset(
            statement, col(GroupMember.added_at), col(GroupMember.user_id), after, limit
        )
        return [(m, u) for m, u in (await self._session.execute(statement)).all()]

    async def member(self, group_id: str, user_id: str) -> GroupMember | None:
        return await self._session.get(GroupMember, (group_id, user_id))

    async def insert_member(self, member: GroupMember) -> bool:
        """Insert unless already a member; True when this call added it. Race-safe: two
        concurrent adds of the same member both succeed, only one inserts."""
        values = {
            "group_id": member.group_id,
            "user_id": member.user_id,
            "added_by": member.added_by,
            "added_at": member.added_at,
        }
        if self._session.get_bind().dialect.name == "postgresql":
            result = await self._session.execute(
                pg_insert(GroupMember).values(values).on_conflict_do_nothing()
            )
        else:
            result = await self._session.execute(
                sqlite_insert(GroupMember).values(values).on_conflict_do_nothing()
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def delete_member(self, group_id: str, user_id: str) -> None:
        await self._session.execute(
            delete(GroupMember).where(
                col(GroupMember.group_id) == group_id, col(GroupMember.user_id) == user_id
            )
        )
