"""Object-level authorization for management endpoints.

A manager sees only the buildings in their scope (directly listed, or owned by an owner they
manage). Anything outside it answers 404 exactly as a missing object does, so ids of other
owners' objects leak nothing, not even their existence.
"""

from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.buildings.models import Building
from api.errors import ApiError
from api.identity.models import Role, User
from api.owners.models import ManagerScope


def not_found(kind: str, object_id: str) -> ApiError:
    """The one answer for "absent" and "not yours"."""
    return ApiError(404, f"{kind}_not_found", f"no {kind.replace('_', ' ')} {object_id!r}")


@dataclass(frozen=True, slots=True)
class Scope:
    """What a signed-in manager (or admin) may manage."""

    user: User
    is_admin: bool
    owner_ids: frozenset[str]
    building_ids: frozenset[str]
    """Every building in scope: listed ones plus those of managed owners."""

    @property
    def visible_buildings(self) -> frozenset[str] | None:
        """The buildings whose rows listings may show; None: every building (admins)."""
        return None if self.is_admin else self.building_ids

    def has_building(self, building_id: str | None) -> bool:
        """True for a building in scope. None (no such object) is never in scope, for admins
        neither, so that "missing" and "not yours" share one code path: 404."""
        if building_id is None:
            return False
        return self.is_admin or building_id in self.building_ids

    def has_owner(self, owner_id: str | None) -> bool:
        if owner_id is None:
            return False
        return self.is_admin or owner_id in self.owner_ids

    def require_building(self, building_id: str | None, kind: str, object_id: str) -> None:
        """Raise the not-found error for ``kind``/``object_id`` unless the building is ours."""
        if not self.has_building(building_id):
            raise not_found(kind, object_id)

    def require_owner(self, owner_id: str | None, kind: str, object_id: str) -> None:
        if not self.has_owner(owner_id):
            raise not_found(kind, object_id)

    def require_admin(self) -> None:
        if not self.is_admin:
            raise ApiError(403, "admin_only", "only an administrator may do this")


async def load_scope(session: AsyncSession, user: User) -> Scope:
    """The scope of ``user``; raise 403 for a user who is neither manager nor admin."""
    if user.has_role(Role.ADMIN):
        return Scope(user, True, frozenset(), frozenset())
    if not user.has_role(Role.MANAGER):
        raise ApiError(403, "manager_only", "this needs a building manager")
    rows = (
        await session.execute(
            select(col(ManagerScope.owner_id), col(ManagerScope.building_id)).where(
                col(ManagerScope.user_id) == user.id
            )
        )
    ).all()
    owner_ids = frozenset(o for o, _ in rows if o)
    listed = {b for _, b in rows if b}
    if owner_ids:
        owned = await session.execute(
            select(col(Building.id)).where(
                or_(col(Building.owner_id).in_(owner_ids), col(Building.id).in_(listed))
            )
        )
        listed |= set(owned.scalars().all())
    return Scope(user, False, owner_ids, frozenset(listed))
