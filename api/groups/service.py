"""Groups: rules, authorization and audit.

Who may do what:
- a manager of the group's owner (or an admin) may create, rename and delete groups and
  change their members;
- a manager of one or more buildings may read the groups of those buildings' owners (to use
  them as grant subjects) but not change them: 403 ``group_read_only``;
- anyone else gets 404 ``group_not_found``, exactly as for a group that does not exist.
"""

from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.access.schemas import Page, decode_cursor, page_of
from api.audit.service import record_change, snapshot
from api.authz import Scope, not_found
from api.common import new_id, utcnow
from api.errors import ApiError
from api.groups.models import Group, GroupMember
from api.groups.repository import GroupRepository
from api.groups.schemas import GroupCreate, GroupOut, GroupUpdate, MemberOut


def read_only(group_id: str) -> ApiError:
    return ApiError(
        403,
        "group_read_only",
        "you may use this group in grants but not change it: ask a manager of its owner",
        group_id=group_id,
    )


@dataclass(frozen=True, slots=True)
class MemberAdded:
    member: MemberOut
    created: bool
    """False when the user already was a member (the add is idempotent)."""


class GroupService:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self.repository = GroupRepository(session)
        self._readable: dict[str, frozenset[str]] = {}

    # ------------------------------------------------------------------ authorization

    async def readable_owner_ids(self, scope: Scope) -> frozenset[str] | None:
        """Owners whose groups ``scope`` may read; None means every owner (admin)."""
        if scope.is_admin:
            return None
        cached = self._readable.get(scope.user.id)
        if cached is None:
            owners = await self.repository.owners_of_buildings(scope.building_ids)
            cached = frozenset(owners | scope.owner_ids)
            self._readable[scope.user.id] = cached
        return cached

    async def can_read(self, scope: Scope, owner_id: str) -> bool:
        readable = await self.readable_owner_ids(scope)
        return readable is None or owner_id in readable

    async def readable_group(self, scope: Scope, group_id: str) -> Group:
        """The group if ``scope`` may at least read it; 404 otherwise. Also what grants and
        public hours use to check a group they are given."""
        group = await self.repository.get(group_id)
        if group is None or not await self.can_read(scope, group.owner_id):
            raise not_found("group", group_id)
        return group

    async def _writable_group(self, scope: Scope, group_id: str) -> Group:
        group = await self.readable_group(scope, group_id)
        if not scope.has_owner(group.owner_id):
            raise read_only(group_id)
        return group

    async def _view(self, scope: Scope, group: Group) -> GroupOut:
        counts = await self.repository.member_counts([group.id])
        return GroupOut.of(
            group, member_count=counts[group.id], writable=scope.has_owner(group.owner_id)
        )

    # ------------------------------------------------------------------ groups

    async def create(self, scope: Scope, body: GroupCreate) -> GroupOut:
        """Create a group for an owner the caller manages."""
        owner = await self.repository.owner(body.owner_id)
        if owner is None or not await self.can_read(scope, owner.id):
            raise not_found("owner", body.owner_id)
        if not scope.has_owner(owner.id):
            raise ApiError(
                403,
                "group_read_only",
                "only a manager of the owner may create its groups",
                owner_id=owner.id,
            )
        if await self.repository.name_taken(owner.id, body.name):
            raise ApiError(409, "group_name_taken", f"the owner already has a group {body.name!r}")
        group = Group(
            id=new_id("grp"), owner_id=owner.id, name=body.name, description=body.description
        )
        self.repository.add(group)
        record_change(
            self._session,
            actor=scope.user.id,
            action="group.created",
            target_type="group",
            target_id=group.id,
            before=None,
            after=snapshot(group),
        )
        return GroupOut.of(group, member_count=0, writable=True)

    async def list(
        self, scope: Scope, owner_id: str | None, limit: int, cursor: str | None
    ) -> Page[GroupOut]:
        """Groups the caller may read, oldest first; ``owner_id`` narrows to one owner (an
        owner out of scope simply yields nothing)."""
        after = decode_cursor(cursor)
        readable = await self.readable_owner_ids(scope)
        rows = list(await self.repository.find(readable, owner_id, after, limit))
        counts = await self.repository.member_counts([g.id for g in rows[:limit]])
        return page_of(
            rows,
            limit,
            lambda g: (g.created_at, g.id),
            lambda g: GroupOut.of(
                g, member_count=counts.get(g.id, 0), writable=scope.has_owner(g.owner_id)
            ),
        )

    async def get(self, scope: Scope, group_id: str) -> GroupOut:
        return await self._view(scope, await self.readable_group(scope, group_id))

    async def update(self, scope: Scope, group_id: str, body: GroupUpdate) -> GroupOut:
        """Rename or re-describe a group."""
        group = await self._writable_group(scope, group_id)
        before = snapshot(group)
        if body.name is not None and body.name != group.name:
            if await self.repository.name_taken(group.owner_id, body.name, except_id=group.id):
                raise ApiError(
                    409, "group_name_taken", f"the owner already has a group {body.name!r}"
                )
            group.name = body.name
        if body.description is not None:
            group.description = body.description
        after = snapshot(group)
        if after != before:
            record_change(
                self._session,
                actor=scope.user.id,
                action="group.updated",
                target_type="group",
                target_id=group.id,
                before=before,
                after=after,
            )
        return await self._view(scope, group)

    async def delete(self, scope: Scope, group_id: str) -> None:
        """Delete a group and its memberships. A group that any grant (even a revoked one:
        it is history) or public-hours rule refers to cannot be deleted: 409."""
        group = await self._writable_group(scope, group_id)
        grants, public = await self.repository.usage(group.id)
        if grants or public:
            raise _in_use(group.id, grants, public)
        before = snapshot(group) or {}
        before["member_ids"] = await self.repository.member_ids(group.id)
        try:
            await self.repository.delete(group)
        except IntegrityError:
            # A grant to the group was created while we deleted it.
            raise _in_use(group.id, grants, public) from None
        record_change(
            self._session,
            actor=scope.user.id,
            action="group.deleted",
            target_type="group",
            target_id=group.id,
            before=before,
            after=None,
        )

    # ------------------------------------------------------------------ members

    async def members(
        self, scope: Scope, group_id: str, limit: int, cursor: str | None
    ) -> Page[MemberOut]:
        """Members in the order they were added."""
        after = decode_cursor(cursor)
        group = await self.readable_group(scope, group_id)
        rows = await self.repository.members(group.id, after, limit)
        return page_of(
            rows,
            limit,
            lambda row: (row[0].added_at, row[0].user_id),
            lambda row: MemberOut.of(*row),
        )

    async def add_member(self, scope: Scope, group_id: str, user_id: str) -> MemberAdded:
        """Add a citizen to a group; adding an existing member changes nothing."""
        group = await self._writable_group(scope, group_id)
        user = await self.repository.user(user_id)
        if user is None:
            raise not_found("user", user_id)
        member = GroupMember(
            group_id=group.id, user_id=user.id, added_by=scope.user.id, added_at=utcnow()
        )
        created = await self.repository.insert_member(member)
        if created:
            record_change(
                self._session,
                actor=scope.user.id,
                action="group.member_added",
                target_type="group",
                target_id=group.id,
                before=None,
                after=snapshot(member),
            )
        else:
            existing = await self.repository.member(group.id, user.id)
            assert existing is not None  # memberships are only deleted by this service
            member = existing
        return MemberAdded(MemberOut.of(member, user), created)

    async def remove_member(self, scope: Scope, group_id: str, user_id: str) -> None:
        """Remove a citizen from a group: 404 ``member_not_found`` if not a member."""
        group = await self._writable_group(scope, group_id)
        member = await self.repository.member(group.id, user_id)
        if member is None:
            raise not_found("member", user_id)
        before = snapshot(member)
        await self.repository.delete_member(group.id, user_id)
        record_change(
            self._session,
            actor=scope.user.id,
            action="group.member_removed",
            target_type="group",
            target_id=group.id,
            before=before,
            after=None,
        )


def _in_use(group_id: str, grants: int, public: int) -> ApiError:
    return ApiError(
        409,
        "group_in_use",
        "grants or public-hours rules refer to this group; remove those first",
        group_id=group_id,
        grants=grants,
        public_access_rules=public,
    )
