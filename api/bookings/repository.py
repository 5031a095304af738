"""SQL for booking clients and bookings."""

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import distinct, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.access.models import Grant
from api.bookings.models import Booking, BookingClient
from api.buildings.models import Building, Door
from api.identity.models import User
from api.owners.models import Owner


class BookingRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    # -- clients ---------------------------------------------------------------------------

    async def get_owner(self, owner_id: str) -> Owner | None:
        return await self._session.get(Owner, owner_id)

    async def get_client(self, client_id: str, *, lock: bool = False) -> BookingClient | None:
        statement = select(BookingClient).where(col(BookingClient.id) == client_id)
        if lock:
            statement = statement.with_for_update()
        return (await self._session.execute(statement)).scalars().first()

    async def client_still_enabled(self, client_id: str) -> bool:
        """Re-read the client under a share lock: disabling it (FOR UPDATE) waits for this
        transaction, and this one sees a disable that committed first."""
        statement = (
            select(col(BookingClient.enabled))
            .where(col(BookingClient.id) == client_id)
            .with_for_update(read=True)
        )
        return bool((await self._session.execute(statement)).scalar_one_or_none())

    async def clients_page(
        self, owner_ids: Iterable[str] | None, after: tuple[datetime, str] | None, limit: int
    ) -> Sequence[BookingClient]:
        """Clients by (created_at, id) after the cursor; ``owner_ids`` None means all."""
        statement = (
            select(BookingClient)
            .order_by(col(BookingClient.created_at), col(BookingClient.id))
            .limit(limit)
        )
        if owner_ids is not None:
            statement = statement.where(col(BookingClient.owner_id).in_(list(owner_ids)))
        if after is not None:
            statement = statement.where(
                tuple_(col(BookingClient.created_at), col(BookingClient.id)) > tuple_(*after)
            )
        return (await self._session.execute(statement)).scalars().all()

    def add(self, *rows: BookingClient | Booking | Grant) -> None:
        self._session.add_all(rows)

    async def flush(self) -> None:
        await self._session.flush()

    # -- bookings --------------------------------------------------------------------------

    async def booking(
        self, client_id: str, external_id: str, *, lock: bool = False
    ) -> Booking | None:
        statement = select(Booking).where(
            col(Booking.client_id) == client_id, col(Booking.external_id) == external_id
        )
        if lock:
            statement = statement.with_for_update()
        return (await self._session.execute(statement)).scalars().first()

    async def recent_of_owners(
        self, owner_ids: Iterable[str] | None, limit: int
    ) -> Sequence[tuple[Booking, BookingClient]]:
        """The latest-ending bookings of the clients of these owners (None: every owner),
        each with its client: the manager console's booking list."""
        statement = (
            select(Booking, BookingClient)
            .join(BookingClient, col(BookingClient.id) == col(Booking.client_id))
            .order_by(col(Booking.valid_until).desc(), col(Booking.id))
            .limit(limit)
        )
        if owner_ids is not None:
            statement = statement.where(col(BookingClient.owner_id).in_(list(owner_ids)))
        return [(b, c) for b, c in (await self._session.execute(statement)).all()]

    async def live_bookings_of_client(self, client_id: str) -> Sequence[Booking]:
        statement = (
            select(Booking)
            .where(col(Booking.client_id) == client_id, col(Booking.deleted).is_(False))
            .with_for_update()
        )
        return (await self._session.execute(statement)).scalars().all()

    async def doors_with_owner(self, door_ids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        """door id -> (building id, owner id) for the doors that exist."""
        if not door_ids:
            return {}
        statement = (
            select(col(Door.id), col(Building.id), col(Building.owner_id))
            .join(Building, col(Building.id) == col(Door.building_id))
            .where(col(Door.id).in_(door_ids))
        )
        return {d: (b, o) for d, b, o in (await self._session.execute(statement)).all()}

    async def buildings_with_owner(self, building_ids: Sequence[str]) -> dict[str, str | None]:
        """building id -> owner id for the buildings that exist."""
        if not building_ids:
            return {}
        statement = select(col(Building.id), col(Building.owner_id)).where(
            col(Building.id).in_(building_ids)
        )
        return {b: o for b, o in (await self._session.execute(statement)).all()}

    async def existing_users(self, user_ids: Sequence[str]) -> set[str]:
        if not user_ids:
            return set()
        statement = select(col(User.id)).where(col(User.id).in_(user_ids))
        return set((await self._session.execute(statement)).scalars().all())

    async def users_by_phone(self, phones: Sequence[str]) -> dict[str, str]:
        """phone -> user id, for numbers a citizen has verified (only those are stored)."""
        if not phones:
            return {}
        statement = select(col(User.phone), col(User.id)).where(col(User.phone).in_(phones))
        return {p: u for p, u in (await self._session.execute(statement)).all() if p}

    async def revoke_grants(self, booking_ids: Sequence[str], now: datetime, by: str) -> list[str]:
        """Revoke the booking's grants still in force; the ids of those revoked."""
        if not booking_ids:
            return []
        statement = (
            update(Grant)
            .where(col(Grant.booking_id).in_(booking_ids), col(Grant.revoked_at).is_(None))
            .values(revoked_at=now, revoked_by=by)
            .returning(col(Grant.id))
            .execution_options(synchronize_session=False)
        )
        return list((await self._session.execute(statement)).scalars().all())

    async def grant_counts(self, booking_id: str) -> tuple[int, int]:
        """(grants in force, distinct phone numbers still waiting) of a booking."""
        statement = select(func.count(), func.count(distinct(col(Grant.subject_phone)))).where(
            col(Grant.booking_id) == booking_id, col(Grant.revoked_at).is_(None)
        )
        grants, phones = (await self._session.execute(statement)).one()
        return int(grants), int(phones)

    async def live_grant_ids(self, booking_id: str) -> list[str]:
        statement = (
            select(col(Grant.id))
            .where(col(Grant.booking_id) == booking_id, col(Grant.revoked_at).is_(None))
            .order_by(col(Grant.id))
        )
        return list((await self._session.execute(statement)).scalars().all())

    async def target_buildings(
        self, door_ids: Sequence[str], building_ids: Sequence[str]
    ) -> set[str]:
        """The buildings of these doors, plus these buildings (for the audit rows)."""
        found = set(building_ids)
        if door_ids:
            statement = select(col(Door.building_id)).where(col(Door.id).in_(door_ids))
            found |= set((await self._session.execute(statement)).scalars().all())
        return found
