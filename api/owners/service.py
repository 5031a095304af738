"""Owners and manager scopes: who manages what.

Creating and deleting owners, and naming the managers of a whole owner, is for administrators.
A manager of an owner reads and renames it and names the managers of its buildings. Every
change is audited; a manager scope is a permission, so the role change it implies is audited
too.
"""

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from api.audit.service import record_change, snapshot
from api.authz import Scope, not_found
from api.buildings.models import Building
from api.common import new_id
from api.errors import ApiError
from api.identity.models import Role, User
from api.owners.models import ManagerScope, Owner
from api.owners.repository import OwnerRepository
from api.owners.schemas import (
    ManagerAdd,
    OwnerCreate,
    OwnerUpdate,
    Page,
    decode_cursor,
    page_of,
)


class OwnerService:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self._repo = OwnerRepository(session)

    # Owners
    async def create(self, scope: Scope, body: OwnerCreate) -> Owner:
        """Create an owner (administrators only)."""
        scope.require_admin()
        owner = Owner(id=new_id("own"), name=body.name)
        await self._repo.add(owner)
        self._audit(scope, "owner.created", "owner", owner.id, None, snapshot(owner))
        return owner

    async def page(self, scope: Scope, limit: int, cursor: str | None) -> Page[Owner]:
        """The owners the caller manages (all of them for an administrator)."""
        after: tuple[str, str] | None = None
        if cursor:
            name, owner_id = decode_cursor(cursor, 2)
            after = (name, owner_id)
        rows = await self._repo.page(None if scope.is_admin else scope.owner_ids, after, limit + 1)
        return page_of(list(rows), limit, lambda o: (o.name, o.id))

    async def get(self, scope: Scope, owner_id: str) -> Owner:
        """One owner in the caller's scope; 404 owner_not_found otherwise."""
        owner = await self._repo.get(owner_id)
        if owner is None:
            raise not_found("owner", owner_id)
        scope.require_owner(owner.id, "owner", owner_id)
        return owner

    async def update(self, scope: Scope, owner_id: str, body: OwnerUpdate) -> Owner:
        """Rename an owner (its managers or an administrator)."""
        owner = await self.get(scope, owner_id)
        before = snapshot(owner)
        changes = {k: v for k, v in body.changes().items() if getattr(owner, k) != v}
        if not changes:
            return owner
        for field, value in changes.items():
            setattr(owner, field, value)
        await self._repo.add(owner)
        self._audit(scope, "owner.updated", "owner", owner.id, before, snapshot(owner))
        return owner

    async def delete(self, scope: Scope, owner_id: str) -> None:
        """Delete an empty owner (administrators only); its manager scopes go with it."""
        owner = await self.get(scope, owner_id)
        scope.require_admin()
        dependents = await self._repo.dependents(owner.id)
        if dependents:
            raise ApiError(
                409,
                "owner_not_empty",
                "the owner still has buildings, groups or booking clients; remove them first",
                dependents=dependents,
            )
        await self.drop_scopes(scope, owner_id=owner.id)
        before = snapshot(owner)
        await self._repo.delete(owner)
        self._audit(scope, "owner.deleted", "owner", owner.id, before, None)

    # Manager scopes
    async def managers(
        self,
        scope: Scope,
        *,
        owner_id: str | None = None,
        building_id: str | None = None,
        limit: int,
        cursor: str | None,
    ) -> Page[tuple[ManagerScope, User]]:
        """The managers of one owner or one building the caller can see."""
        if owner_id is not None:
            await self.get(scope, owner_id)
        else:
            assert building_id is not None
            await self._building(scope, building_id)
        after = decode_cursor(cursor, 1)[0] if cursor else None
        rows = await self._repo.managers_page(
            owner_id=owner_id, building_id=building_id, after=after, limit=limit + 1
        )
        return page_of(list(rows), limit, lambda row: (row[0].user_id,))

    async def add_owner_manager(
        self, scope: Scope, owner_id: str, body: ManagerAdd
    ) -> tuple[ManagerScope, User]:
        """Make a user manager of every building of an owner (administrators only)."""
        owner = await self.get(scope, owner_id)
        scope.require_admin()
        return await self._add_scope(scope, body.user_id, owner_id=owner.id)

    async def remove_owner_manager(self, scope: Scope, owner_id: str, user_id: str) -> None:
        """End a user's management of an owner (administrators only)."""
        owner = await self.get(scope, owner_id)
        scope.require_admin()
        await self._remove_scope(scope, user_id, owner_id=owner.id)

    async def add_building_manager(
        self, scope: Scope, building_id: str, body: ManagerAdd
    ) -> tuple[ManagerScope, User]:
        """Make a user manager of one building (administrators, managers of its owner)."""
        building = await self._building(scope, building_id)
        self._require_owner_manager(scope, building)
        return await self._add_scope(scope, body.user_id, building=building)

    async def remove_building_manager(self, scope: Scope, building_id: str, user_id: str) -> None:
        """End a user's management of one building (administrators, managers of its owner)."""
        building = await self._building(scope, building_id)
        self._require_owner_manager(scope, building)
        await self._remove_scope(scope, user_id, building=building)

    async def drop_scopes(
        self, scope: Scope, *, owner_id: str | None = None, building_id: str | None = None
    ) -> None:
        """Remove (and audit) every manager scope on an owner or a building being deleted."""
        rows = await self._repo.scopes_of_target(owner_id=owner_id, building_id=building_id)
        for row in rows:
            self._audit(
                scope,
                "manager_scope.deleted",
                "manager_scope",
                row.id,
                snapshot(row),
                None,
                building_id=row.building_id,
            )
        await self._repo.delete_scopes([row.id for row in rows])

    # Helpers
    async def _building(self, scope: Scope, building_id: str) -> Building:
        building = await self._repo.get_building(building_id)
        if building is None:
            raise not_found("building", building_id)
        scope.require_building(building.id, "building", building_id)
        return building

    @staticmethod
    def _require_owner_manager(scope: Scope, building: Building) -> None:
        if not scope.has_owner(building.owner_id):
            raise ApiError(
                403,
                "owner_manager_only",
                "only an administrator or a manager of the building's owner may do this",
            )

    async def _add_scope(
        self,
        scope: Scope,
        user_id: str,
        *,
        owner_id: str | None = None,
        building: Building | None = None,
    ) -> tuple[ManagerScope, User]:
        user = await self._repo.get_user(user_id)
        if user is None:
            raise not_found("user", user_id)
        building_id = building.id if building else None
        if await self._repo.find_scopes(user.id, owner_id=owner_id, building_id=building_id):
            raise ApiError(
                409, "manager_exists", f"{user.id!r} is already a manager here", user_id=user.id
            )
        row = ManagerScope(
            id=new_id("msc"), user_id=user.id, owner_id=owner_id, building_id=building_id
        )
        await self._repo.add(row)
        self._audit(
            scope,
            "manager_scope.created",
            "manager_scope",
            row.id,
            None,
            snapshot(row),
            building_id=building_id,
        )
        if not user.has_role(Role.MANAGER):
            before = {"roles": list(user.roles)}
            # A new list: the JSON column only notices assignment, not in-place mutation.
            user.roles = [*user.roles, Role.MANAGER.value]
            await self._repo.add(user)
            self._audit(
                scope,
                "user.roles_changed",
                "user",
                user.id,
                before,
                {"roles": list(user.roles)},
                building_id=building_id,
            )
        return row, user

    async def _remove_scope(
        self,
        scope: Scope,
        user_id: str,
        *,
        owner_id: str | None = None,
        building: Building | None = None,
    ) -> None:
        # The manager role stays: the user may hold other scopes, and a manager without any
        # scope sees and changes nothing.
        building_id = building.id if building else None
        rows = await self._repo.find_scopes(user_id, owner_id=owner_id, building_id=building_id)
        if not rows:
            raise not_found("manager", user_id)
        for row in rows:
            self._audit(
                scope,
                "manager_scope.deleted",
                "manager_scope",
                row.id,
                snapshot(row),
                None,
                building_id=building_id,
            )
        await self._repo.delete_scopes([row.id for row in rows])

    def _audit(
        self,
        scope: Scope,
        action: str,
        target_type: str,
        target_id: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        *,
        building_id: str | None = None,
    ) -> None:
        record_change(
            self._session,
            actor=scope.user.id,
            action=action,
            target_type=target_type,
            target_id=target_id,
            before=before,
            after=after,
            building_id=building_id,
        )
