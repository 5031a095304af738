"""SQL for the citizen self-service endpoints: history, shares, phone verification."""

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlmodel import col

from api.access.models import Grant
from api.audit.models import AuditEvent
from api.bookings.models import PhoneVerification
from api.buildings.models import Building, Door
from api.groups.models import GroupMember
from api.identity.models import User
from api.public_access.models import PublicAccess

Parent = aliased(Grant)


class MeRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    # -- history ---------------------------------------------------------------------------

    async def activity(
        self, user_id: str, actions: Sequence[str], limit: int, before_id: int | None
    ) -> Sequence[tuple[AuditEvent, str | None]]:
        """The user's own audit rows of ``actions``, newest first, with the door's name."""
        statement = (
            select(AuditEvent, col(Door.name))
            .outerjoin(Door, col(Door.id) == col(AuditEvent.door_id))
            .where(col(AuditEvent.actor) == user_id, col(AuditEvent.action).in_(actions))
            .order_by(col(AuditEvent.id).desc())
            .limit(limit)
        )
        if before_id is not None:
            statement = statement.where(col(AuditEvent.id) < before_id)
        return [(e, n) for e, n in (await self._session.execute(statement)).all()]

    # -- doors and rules -------------------------------------------------------------------

    async def door_with_building(self, door_id: str) -> tuple[Door, Building] | None:
        statement = (
            select(Door, Building)
            .join(Building, col(Building.id) == col(Door.building_id))
            .where(col(Door.id) == door_id)
        )
        row = (await self._session.execute(statement)).first()
        return (row[0], row[1]) if row else None

    async def rules_on_doors(
        self, user_id: str, door_ids: Sequence[str], building_ids: Sequence[str]
    ) -> tuple[Sequence[tuple[Grant, Grant | None]], Sequence[PublicAccess], set[str]]:
        """The user's grants (own and via groups, with share parents) on the doors or
        buildings, the enabled public-hours rules of the doors, and the user's groups."""
        groups = set(
            (
                await self._session.execute(
                    select(col(GroupMember.group_id)).where(col(GroupMember.user_id) == user_id)
                )
            )
            .scalars()
            .all()
        )
        subject = col(Grant.user_id) == user_id
        if groups:
            subject = or_(subject, col(Grant.group_id).in_(groups))
        grants = (
            await self._session.execute(
                select(Grant, Parent)
                .outerjoin(Parent, col(Parent.id) == col(Grant.parent_grant_id))
                .where(
                    subject,
                    or_(col(Grant.door_id).in_(door_ids), col(Grant.building_id).in_(building_ids)),
                )
            )
        ).all()
        public = (
            (
                await self._session.execute(
                    select(PublicAccess).where(
                        col(PublicAccess.door_id).in_(door_ids), col(PublicAccess.enabled).is_(True)
                    )
                )
            )
            .scalars()
            .all()
        )
        return [(g, p) for g, p in grants], public, groups

    # -- shares ----------------------------------------------------------------------------

    async def get_user(self, user_id: str) -> User | None:
        return await self._session.get(User, user_id)

    async def own_grants_on(self, user_id: str, door_id: str, building_id: str) -> Sequence[Grant]:
        """Grants given to the user personally (not via a group, not shares) on the door or
        its building: the only grants a share may be made from."""
        statement = (
            select(Grant)
            .where(
                col(Grant.user_id) == user_id,
                col(Grant.parent_grant_id).is_(None),
                or_(col(Grant.door_id) == door_id, col(Grant.building_id) == building_id),
            )
            .order_by(col(Grant.created_at))
        )
        return (await self._session.execute(statement)).scalars().all()

    async def count_active_shares_given(self, user_id: str, now: datetime) -> int:
        statement = select(func.count()).where(
            col(Grant.created_by) == user_id,
            col(Grant.parent_grant_id).is_not(None),
            col(Grant.revoked_at).is_(None),
            col(Grant.valid_until) > now,
        )
        return int((await self._session.execute(statement)).scalar_one())

    def add(self, row: Grant | PhoneVerification) -> None:
        self._session.add(row)

    async def shares(
        self, *, given_by: str | None = None, received_by: str | None = None, now: datetime
    ) -> Sequence[tuple[Grant, Grant, Door]]:
        """Unrevoked, unexpired shares given by or received by a user, newest first, each
        with its parent grant and door."""
        statement = (
            select(Grant, Parent, Door)
            .join(Parent, col(Parent.id) == col(Grant.parent_grant_id))
            .join(Door, col(Door.id) == col(Grant.door_id))
            .where(col(Grant.revoked_at).is_(None), col(Grant.valid_until) > now)
            .order_by(col(Grant.created_at).desc(), col(Grant.id))
            .limit(200)
        )
        if given_by is not None:
            statement = statement.where(col(Grant.created_by) == given_by)
        if received_by is not None:
            statement = statement.where(col(Grant.user_id) == received_by)
        return [(g, p, d) for g, p, d in (await self._session.execute(statement)).all()]

    async def share_of(self, grant_id: str, user_id: str) -> Grant | None:
        """The share ``grant_id`` when the user gave or received it (locked for update)."""
        statement = (
            select(Grant)
            .where(
                col(Grant.id) == grant_id,
                col(Grant.parent_grant_id).is_not(None),
                or_(col(Grant.created_by) == user_id, col(Grant.user_id) == user_id),
            )
            .with_for_update()
        )
        return (await self._session.execute(statement)).scalars().first()

    async def door_buildings(self, door_ids: Sequence[str]) -> dict[str, str]:
        if not door_ids:
            return {}
        statement = select(col(Door.id), col(Door.building_id)).where(col(Door.id).in_(door_ids))
        return {d: b for d, b in (await self._session.execute(statement)).all()}

    # -- phone verification ----------------------------------------------------------------

    async def count_codes_since(self, user_id: str, since: datetime) -> int:
        statement = select(func.count()).where(
            col(PhoneVerification.user_id) == user_id, col(PhoneVerification.created_at) > since
        )
        return int((await self._session.execute(statement)).scalar_one())

    async def latest_verification(self, user_id: str) -> PhoneVerification | None:
        statement = (
            select(PhoneVerification)
            .where(col(PhoneVerification.user_id) == user_id)
            .order_by(col(PhoneVerification.created_at).desc(), col(PhoneVerification.id))
            .limit(1)
        )
        return (await self._session.execute(statement)).scalars().first()

    async def count_attempt(self, verification_id: str, max_attempts: int) -> int | None:
        """Count one attempt atomically; None when the attempts are used up already."""
        statement = (
            update(PhoneVerification)
            .where(
                col(PhoneVerification.id) == verification_id,
                col(PhoneVerification.attempts) < max_attempts,
            )
            .values(attempts=col(PhoneVerification.attempts) + 1)
            .returning(col(PhoneVerification.attempts))
        )
        return (await self._session.execute(statement)).scalar_one_or_none()

    async def delete_verifications(self, user_id: str) -> None:
        await self._session.execute(
            delete(PhoneVerification).where(col(PhoneVerification.user_id) == user_id)
        )

    async def user_with_phone(self, phone: str) -> User | None:
        statement = select(User).where(col(User.phone) == phone)
        return (await self._session.execute(statement)).scalars().first()

    async def pending_phone_grants(self, phone: str) -> Sequence[Grant]:
        """Grants in force waiting for whoever verifies ``phone`` (locked: claimed exactly
        once). Revoked ones stay addressed to the number: they are history, not access."""
        statement = (
            select(Grant)
            .where(col(Grant.subject_phone) == phone, col(Grant.revoked_at).is_(None))
            .order_by(col(Grant.created_at))
            .with_for_update()
        )
        return (await self._session.execute(statement)).scalars().all()

    async def flush(self) -> None:
        await self._session.flush()
