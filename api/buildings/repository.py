"""SQL for buildings, doors, holidays and door status."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Table, bindparam, delete, func, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped
from sqlmodel import SQLModel, col

from api.access.models import Grant
from api.buildings.models import Building, Door, DoorStatus, Holiday
from api.gateways.models import Gateway
from api.offline.models import OfflineToken
from api.owners.models import Owner
from api.public_access.models import PublicAccess


async def insert_or_conflict(session: AsyncSession, row: SQLModel) -> bool:
    """Insert ``row`` in a savepoint; False (and the transaction still usable) when a
    unique constraint refuses it, which is how two concurrent creates are told apart."""
    try:
        async with session.begin_nested():
            session.add(row)
    except IntegrityError:
        return False
    return True


async def _count(
    session: AsyncSession, model: type[SQLModel], column: Mapped[Any], value: str
) -> int:
    statement = select(func.count()).select_from(model).where(column == value)
    return int(await session.scalar(statement) or 0)


class BuildingRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, building_id: str) -> Building | None:
        return await self._session.get(Building, building_id)

    async def get_owner(self, owner_id: str) -> Owner | None:
        return await self._session.get(Owner, owner_id)

    async def page(
        self, building_ids: frozenset[str] | None, after: tuple[str, str] | None, limit: int
    ) -> Sequence[Building]:
        """Buildings by (name, id) after the cursor; ``building_ids`` None means all."""
        statement = select(Building).order_by(col(Building.name), col(Building.id)).limit(limit)
        if building_ids is not None:
            statement = statement.where(col(Building.id).in_(building_ids))
        if after is not None:
            statement = statement.where(
                tuple_(col(Building.name), col(Building.id)) > tuple_(*after)
            )
        return (await self._session.execute(statement)).scalars().all()

    async def save(self, row: SQLModel) -> None:
        self._session.add(row)
        await self._session.flush()

    async def delete(self, row: SQLModel) -> None:
        await self._session.delete(row)
        await self._session.flush()

    async def dependents(self, building_id: str) -> dict[str, int]:
        """Rows that keep the building from being deleted, by kind (zero counts left out)."""
        counts = {
            "doors": await _count(self._session, Door, col(Door.building_id), building_id),
            "gateways": await _count(self._session, Gateway, col(Gateway.building_id), building_id),
            "grants": await _count(self._session, Grant, col(Grant.building_id), building_id),
        }
        return {kind: n for kind, n in counts.items() if n}

    async def holidays_of(self, building_id: str) -> Sequence[Holiday]:
        statement = (
            select(Holiday)
            .where(col(Holiday.building_id) == building_id)
            .order_by(col(Holiday.date))
        )
        return (await self._session.execute(statement)).scalars().all()

    async def delete_holidays(self, building_id: str) -> None:
        await self._session.execute(delete(Holiday).where(col(Holiday.building_id) == building_id))


class HolidayRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, holiday_id: str) -> Holiday | None:
        return await self._session.get(Holiday, holiday_id)

    async def on_date(self, building_id: str, day: date) -> Holiday | None:
        statement = select(Holiday).where(
            col(Holiday.building_id) == building_id, col(Holiday.date) == day
        )
        return (await self._session.execute(statement)).scalars().first()

    async def page(
        self,
        building_id: str,
        start: date | None,
        end: date | None,
        after: date | None,
        limit: int,
    ) -> Sequence[Holiday]:
        """Holidays of a building by date (one per date), ``start``..``end`` inclusive."""
        statement = (
            select(Holiday)
            .where(col(Holiday.building_id) == building_id)
            .order_by(col(Holiday.date))
            .limit(limit)
        )
        if start is not None:
            statement = statement.where(col(Holiday.date) >= start)
        if end is not None:
            statement = statement.where(col(Holiday.date) <= end)
        if after is not None:
            statement = statement.where(col(Holiday.date) > after)
        return (await self._session.execute(statement)).scalars().all()

    async def insert(self, holiday: Holiday) -> bool:
        return await insert_or_conflict(self._session, holiday)

    async def delete(self, holiday: Holiday) -> None:
        await self._session.delete(holiday)
        await self._session.flush()


@dataclass(slots=True)
class StatusRow:
    """A door's status as plain values (folded in memory, then written back at once)."""

    gateway_id: str | None
    """The door's gateway (from the doors table; not a door_status column)."""
    door_id: str
    lock_state: str | None
    door_state: str | None
    battery_pct: int | None
    alarms: list[str]
    last_event: str | None
    last_event_at: datetime | None


_DOORS: Table = Door.__table__  # type: ignore[attr-defined]
_STATUS: Table = DoorStatus.__table__  # type: ignore[attr-defined]
_STATUS_COLUMNS = (
    _STATUS.c.door_id,
    _STATUS.c.lock_state,
    _STATUS.c.door_state,
    _STATUS.c.battery_pct,
    _STATUS.c.alarms,
    _STATUS.c.last_event,
    _STATUS.c.last_event_at,
)
_UPDATE_STATUS = (
    update(_STATUS)
    .where(_STATUS.c.door_id == bindparam("b_door"))
    .values(
        lock_state=bindparam("b_lock"),
        door_state=bindparam("b_door_state"),
        battery_pct=bindparam("b_battery"),
        alarms=bindparam("b_alarms", type_=_STATUS.c.alarms.type),
        last_event=bindparam("b_event"),
        last_event_at=bindparam("b_event_at", type_=_STATUS.c.last_event_at.type),
    )
)
"""One door's status; executed with many parameter sets (executemany)."""


class DoorRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, door_id: str) -> Door | None:
        return await self._session.get(Door, door_id)

    async def get_building(self, building_id: str) -> Building | None:
        return await self._session.get(Building, building_id)

    async def get_gateway(self, gateway_id: str) -> Gateway | None:
        return await self._session.get(Gateway, gateway_id)

    async def page(
        self, building_id: str, after: tuple[str, str] | None, limit: int
    ) -> Sequence[Door]:
        """Doors of a building by (name, id) after the cursor."""
        statement = (
            select(Door)
            .where(col(Door.building_id) == building_id)
            .order_by(col(Door.name), col(Door.id))
            .limit(limit)
        )
        if after is not None:
            statement = statement.where(tuple_(col(Door.name), col(Door.id)) > tuple_(*after))
        return (await self._session.execute(statement)).scalars().all()

    async def on_channel(self, gateway_id: str, channel: int) -> Door | None:
        statement = select(Door).where(
            col(Door.gateway_id) == gateway_id, col(Door.channel) == channel
        )
        return (await self._session.execute(statement)).scalars().first()

    async def insert(self, door: Door) -> bool:
        return await insert_or_conflict(self._session, door)

    async def save(self, door: Door) -> None:
        self._session.add(door)
        await self._session.flush()

    async def references(self, door_id: str) -> dict[str, int]:
        """Rules that still name the door, by kind (zero counts left out)."""
        counts = {
            "grants": await _count(self._session, Grant, col(Grant.door_id), door_id),
            "public_access": await _count(
                self._session, PublicAccess, col(PublicAccess.door_id), door_id
            ),
            # Issued offline tokens stay as the record of who could open the door offline.
            "offline_tokens": await _count(
                self._session, OfflineToken, col(OfflineToken.door_id), door_id
            ),
        }
        return {kind: n for kind, n in counts.items() if n}

    async def delete(self, door: Door) -> None:
        # The door row first: a gateway event being folded into door_status in another
        # transaction holds a key-share lock on it; waiting for that commit here means its
        # status row is visible to the DELETE below instead of failing our foreign key.
        await self._session.execute(
            select(col(Door.id)).where(col(Door.id) == door.id).with_for_update()
        )
        await self._session.execute(delete(DoorStatus).where(col(DoorStatus.door_id) == door.id))
        await self._session.delete(door)
        await self._session.flush()

    # Door status
    async def status(self, door_id: str) -> DoorStatus | None:
        return await self._session.get(DoorStatus, door_id)

    async def statuses(self, door_ids: Sequence[str]) -> dict[str, DoorStatus]:
        """The status rows of several doors in one query (doors without one are absent)."""
        if not door_ids:
            return {}
        statement = select(DoorStatus).where(col(DoorStatus.door_id).in_(door_ids))
        return {s.door_id: s for s in (await self._session.execute(statement)).scalars()}

    async def lock_statuses(self, door_ids: Sequence[str]) -> dict[str, StatusRow]:
        """The status rows of these doors that exist, with each door's gateway, locked for
        this transaction in door id order (API instances folding the same events take turns
        and cannot deadlock); one statement for any number of doors."""
        if not door_ids:
            return {}
        statement = (
            select(_DOORS.c.gateway_id, *_STATUS_COLUMNS)
            .join(_DOORS, _DOORS.c.id == _STATUS.c.door_id)
            .where(_STATUS.c.door_id.in_(sorted(set(door_ids))))
            .order_by(_STATUS.c.door_id)
            .with_for_update(of=_STATUS)
        )
        rows = (await self._session.execute(statement)).all()
        return {row[1]: StatusRow(*row) for row in rows}

    async def gateways_of(self, door_ids: Sequence[str]) -> dict[str, str | None]:
        """Door id -> its gateway id, for the doors that exist."""
        if not door_ids:
            return {}
        statement = select(_DOORS.c.id, _DOORS.c.gateway_id).where(
            _DOORS.c.id.in_(sorted(set(door_ids)))
        )
        return {door: gateway for door, gateway in (await self._session.execute(statement)).all()}

    async def create_statuses(self, door_ids: Sequence[str]) -> None:
        """Empty status rows for these doors, unless they have one (one statement)."""
        if not door_ids:
            return
        dialect = self._session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        await self._session.execute(
            insert(_STATUS).on_conflict_do_nothing(index_elements=["door_id"]),
            [{"door_id": door_id, "alarms": []} for door_id in sorted(set(door_ids))],
        )

    async def update_statuses(self, rows: Sequence[StatusRow]) -> None:
        """Write these status rows back (one executemany UPDATE)."""
        if rows:
            await self._session.execute(
                _UPDATE_STATUS,
                [
                    {
                        "b_door": row.door_id,
                        "b_lock": row.lock_state,
                        "b_door_state": row.door_state,
                        "b_battery": row.battery_pct,
                        "b_alarms": row.alarms,
                        "b_event": row.last_event,
                        "b_event_at": row.last_event_at,
                    }
                    for row in rows
                ],
            )
