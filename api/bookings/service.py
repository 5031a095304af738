"""Booking clients and the bookings they push.

A booking is the full, versioned state of one reservation in a booking system, addressed by
the system's own id (``external_id``). The booking system PUTs it whenever it changes:

- the same version again changes nothing and answers as before (safe retries), as long as the
  content is the same (the same version with other content is refused: ``version_conflict``);
- a higher version replaces it: the grants of the old version are revoked and new ones made
  (one per recipient per door or building), all carrying the booking's id;
- a lower version is refused (``stale_version``): a late retry never undoes a newer change.

DELETE revokes every grant of the booking and marks it deleted. The deletion counts as the
state of its version: a PUT of that version or lower is refused, and a PUT with a HIGHER
version revives the booking (booking systems reuse a reservation's id when it is restored).

Targets must lie in buildings of the client's owner. A recipient named by phone number gets a
grant as a user when a citizen has verified that number; otherwise the grant waits for the
number (``subject_phone``) and becomes the citizen's when they verify it.

Every change is audited with actor ``client:<client id>``, one row per building touched, so
each building's managers see what happened to their doors.
"""

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.access.models import Grant
from api.access.schemas import Page, decode_cursor, page_of
from api.audit.service import record_change, snapshot
from api.authz import Scope, not_found
from api.bookings.clients import dummy_hash, hash_secret, new_client_secret, verify_secret
from api.bookings.models import Booking, BookingClient
from api.bookings.repository import BookingRepository
from api.bookings.schemas import (
    BookingClientCreate,
    BookingClientView,
    BookingDetail,
    BookingPut,
    BookingView,
    Recipient,
)
from api.common import as_utc, new_id
from api.errors import ApiError

MAX_GRANTS_PER_BOOKING = 2000
"""Recipients times targets; a bigger booking is almost surely a mistake in the caller."""
MAX_SECRET_LENGTH = 256


def client_actor(client_id: str) -> str:
    """How a booking client appears as the actor of audit rows and ``created_by``."""
    return f"client:{client_id}"


def client_view(client: BookingClient) -> BookingClientView:
    return BookingClientView(
        client_id=client.id,
        owner_id=client.owner_id,
        name=client.name,
        enabled=client.enabled,
        created_at=as_utc(client.created_at),
    )


def _client_snapshot(client: BookingClient) -> dict[str, Any] | None:
    picture = snapshot(client)
    if picture is not None:
        picture.pop("secret_hash", None)  # never in the audit log, not even hashed
    return picture


class BookingClientService:
    """Managing booking clients: managers of the owner, or administrators."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self._repo = BookingRepository(session)

    async def create(
        self, scope: Scope, body: BookingClientCreate, now: datetime
    ) -> tuple[BookingClient, str]:
        """A new client of the owner and its secret (returned once, stored hashed)."""
        scope.require_owner(body.owner_id, "owner", body.owner_id)
        if await self._repo.get_owner(body.owner_id) is None:
            raise not_found("owner", body.owner_id)
        secret = new_client_secret()
        client = BookingClient(
            id=new_id("bc"),
            name=body.name,
            owner_id=body.owner_id,
            # scrypt is deliberately slow; keep it off the event loop.
            secret_hash=await asyncio.to_thread(hash_secret, secret),
            created_at=now,
        )
        self._repo.add(client)
        await self._repo.flush()
        record_change(
            self._session,
            actor=scope.user.id,
            action="booking_client.created",
            target_type="booking_client",
            target_id=client.id,
            before=None,
            after=_client_snapshot(client),
        )
        return client, secret

    async def page(
        self, scope: Scope, owner_id: str | None, limit: int, cursor: str | None
    ) -> Page[BookingClientView]:
        """Clients of one owner, or of every owner the caller manages."""
        after = decode_cursor(cursor)
        owner_ids: Iterable[str] | None
        if owner_id is not None:
            scope.require_owner(owner_id, "owner", owner_id)
            if await self._repo.get_owner(owner_id) is None:
                raise not_found("owner", owner_id)
            owner_ids = [owner_id]
        else:
            owner_ids = None if scope.is_admin else sorted(scope.owner_ids)
        rows = await self._repo.clients_page(owner_ids, after, limit + 1)
        return page_of(list(rows), limit, lambda c: (as_utc(c.created_at), c.id), client_view)

    async def disable(self, scope: Scope, client_id: str, now: datetime) -> None:
        """Disable the client (its tokens stop working at once) and end its bookings: their
        grants are revoked. Idempotent."""
        client = await self._repo.get_client(client_id, lock=True)
        scope.require_owner(client.owner_id if client else None, "booking_client", client_id)
        assert client is not None
        if not client.enabled:
            return
        before = _client_snapshot(client)
        client.enabled = False
        self._repo.add(client)
        for booking in await self._repo.live_bookings_of_client(client.id):
            await _delete_booking(self._session, self._repo, booking, scope.user.id, now)
        record_change(
            self._session,
            actor=scope.user.id,
            action="booking_client.disabled",
            target_type="booking_client",
            target_id=client.id,
            before=before,
            after=_client_snapshot(client),
        )
        await self._repo.flush()


async def authenticate_client(session: AsyncSession, client_id: str, secret: str) -> BookingClient:
    """The enabled client with this id and secret; 401 invalid_client otherwise (one answer
    for unknown id, wrong secret and disabled client)."""
    repo = BookingRepository(session)
    client = await repo.get_client(client_id) if 0 < len(client_id) <= 64 else None
    stored = client.secret_hash if client is not None else dummy_hash()
    matches = len(secret) <= MAX_SECRET_LENGTH and await asyncio.to_thread(
        verify_secret, secret, stored
    )
    if not matches or client is None or not client.enabled:
        raise ApiError(
            401,
            "invalid_client",
            "client authentication failed",
            headers={"WWW-Authenticate": 'Basic realm="citykey-bookings"'},
        )
    return client


def _document(body: BookingPut) -> dict[str, Any]:
    """The booking's content in one canonical form: what "the same version" is compared on."""
    users = sorted({r.user_id for r in body.recipients if r.user_id is not None})
    phones = sorted({r.phone for r in body.recipients if r.phone is not None})
    return {
        "valid_from": body.valid_from.astimezone(UTC).isoformat(),
        "valid_until": body.valid_until.astimezone(UTC).isoformat(),
        "doors": sorted(set(body.doors)),
        "buildings": sorted(set(body.buildings)),
        "recipients": [{"user_id": u} for u in users] + [{"phone": p} for p in phones],
    }


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a booking version will grant: checked targets and resolved recipients."""

    doors: list[str]
    buildings: list[str]
    users: list[str]
    pending_phones: list[str]
    building_ids: set[str]


class BookingService:
    """The bookings of one authenticated booking client."""

    def __init__(self, session: AsyncSession, client: BookingClient) -> None:
        self._session = session
        self._repo = BookingRepository(session)
        self._client = client
        self._actor = client_actor(client.id)

    async def put(
        self, external_id: str, body: BookingPut, now: datetime
    ) -> tuple[BookingView, bool]:
        """Create, replace or confirm a booking (rules: module docstring). Returns the view
        and whether the booking was created."""
        if body.valid_until <= body.valid_from:
            raise ApiError(422, "invalid_window", "valid_until must be after valid_from")
        if not body.doors and not body.buildings:
            raise ApiError(422, "no_targets", "name at least one door or building")
        if not await self._repo.client_still_enabled(self._client.id):
            # Disabled between the token check and now: no new grants for a disabled client.
            raise ApiError(
                401,
                "invalid_token",
                "the client is disabled",
                headers={"WWW-Authenticate": 'Bearer realm="citykey-bookings"'},
            )
        document = _document(body)
        # Two tries: a concurrent PUT may create the booking between our look and our insert;
        # the second round then sees it and takes the "existing booking" path.
        for _ in range(2):
            booking = await self._repo.booking(self._client.id, external_id, lock=True)
            if booking is not None:
                return await self._change(booking, body, document, now), False
            booking = Booking(
                id=new_id("bkg"),
                client_id=self._client.id,
                external_id=external_id,
                version=body.version,
                valid_from=body.valid_from,
                valid_until=body.valid_until,
                document=document,
                updated_at=now,
            )
            plan = await self._plan(document)
            try:
                async with self._session.begin_nested():
                    self._repo.add(booking)
                    await self._repo.flush()
            except IntegrityError:
                continue
            grants = self._make_grants(booking, plan, now)
            await self._audit("booking.created", booking, None, grants, set(), plan)
            await self._repo.flush()
            return self._view(booking, len(grants), len(plan.pending_phones)), True
        raise ApiError(409, "concurrent_update", "the booking changed meanwhile; retry")

    async def _change(
        self, booking: Booking, body: BookingPut, document: dict[str, Any], now: datetime
    ) -> BookingView:
        current = booking.version
        if body.version < booking.version:
            raise ApiError(
                409,
                "stale_version",
                "a newer version of this booking exists",
                current_version=current,
            )
        if body.version == booking.version:
            if booking.deleted:
                raise ApiError(
                    409,
                    "booking_deleted",
                    "this version of the booking was deleted; send a higher version to restore it",
                    current_version=current,
                )
            if booking.document != document:
                raise ApiError(
                    409,
                    "version_conflict",
                    "this version was already received with other content; send a higher "
                    "version to change the booking",
                    current_version=current,
                )
            in_force, pending = await self._repo.grant_counts(booking.id)
            return self._view(booking, in_force, pending)
        plan = await self._plan(document)
        old_buildings = await self._repo.target_buildings(
            booking.document.get("doors", []), booking.document.get("buildings", [])
        )
        before = await self._summary(booking)
        action = "booking.restored" if booking.deleted else "booking.updated"
        await self._repo.revoke_grants([booking.id], now, self._actor)
        booking.version = body.version
        booking.valid_from = body.valid_from
        booking.valid_until = body.valid_until
        booking.document = document
        booking.deleted = False
        booking.updated_at = now
        self._repo.add(booking)
        grants = self._make_grants(booking, plan, now)
        await self._audit(action, booking, before, grants, old_buildings, plan)
        await self._repo.flush()
        return self._view(booking, len(grants), len(plan.pending_phones))

    async def get(self, external_id: str) -> BookingDetail:
        """The client's booking as last received, with its grant counts."""
        booking = await self._repo.booking(self._client.id, external_id)
        if booking is None:
            raise not_found("booking", external_id)
        grants, pending = await self._repo.grant_counts(booking.id)
        view = self._view(booking, grants, pending)
        return BookingDetail(
            **view.model_dump(),
            doors=booking.document.get("doors", []),
            buildings=booking.document.get("buildings", []),
            recipients=[Recipient.model_validate(r) for r in booking.document["recipients"]],
            updated_at=as_utc(booking.updated_at),
        )

    async def delete(self, external_id: str, now: datetime) -> None:
        """Revoke the booking's grants and mark it deleted. Idempotent."""
        booking = await self._repo.booking(self._client.id, external_id, lock=True)
        if booking is None:
            raise not_found("booking", external_id)
        if booking.deleted:
            return
        await _delete_booking(self._session, self._repo, booking, self._actor, now)
        await self._repo.flush()

    # -- helpers ---------------------------------------------------------------------------

    async def _plan(self, document: dict[str, Any]) -> _Plan:
        """Check the targets and resolve the recipients; 422 naming what is wrong."""
        doors: list[str] = document["doors"]
        buildings: list[str] = document["buildings"]
        owner = self._client.owner_id
        found_doors = await self._repo.doors_with_owner(doors)
        found_buildings = await self._repo.buildings_with_owner(buildings)
        bad_doors = [d for d in doors if d not in found_doors or found_doors[d][1] != owner]
        bad_buildings = [b for b in buildings if found_buildings.get(b, None) != owner]
        if bad_doors or bad_buildings:
            # Unknown ids and other owners' ids get the same answer: nothing leaks.
            raise ApiError(
                422,
                "target_out_of_scope",
                "these targets are not in buildings this client may book",
                doors=bad_doors,
                buildings=bad_buildings,
            )
        user_ids = [r["user_id"] for r in document["recipients"] if "user_id" in r]
        phones = [r["phone"] for r in document["recipients"] if "phone" in r]
        known = await self._repo.existing_users(user_ids)
        unknown = [u for u in user_ids if u not in known]
        if unknown:
            raise ApiError(
                422, "unknown_recipient", "these recipients are not citykey users", user_ids=unknown
            )
        verified = await self._repo.users_by_phone(phones)
        users = sorted(set(user_ids) | set(verified.values()))
        pending = [p for p in phones if p not in verified]
        targets = len(doors) + len(buildings)
        if (len(users) + len(pending)) * targets > MAX_GRANTS_PER_BOOKING:
            raise ApiError(
                422,
                "booking_too_large",
                f"recipients times targets may be at most {MAX_GRANTS_PER_BOOKING}",
            )
        building_ids = {b for b, _ in found_doors.values()} | set(buildings)
        return _Plan(doors, buildings, users, pending, building_ids)

    def _make_grants(self, booking: Booking, plan: _Plan, now: datetime) -> list[Grant]:
        subjects: list[tuple[str | None, str | None]] = [(u, None) for u in plan.users]
        subjects += [(None, p) for p in plan.pending_phones]
        targets: list[tuple[str | None, str | None]] = [(d, None) for d in plan.doors]
        targets += [(None, b) for b in plan.buildings]
        grants = [
            Grant(
                id=new_id("grt"),
                user_id=user_id,
                subject_phone=phone,
                door_id=door_id,
                building_id=building_id,
                valid_from=booking.valid_from,
                valid_until=booking.valid_until,
                booking_id=booking.id,
                note=f"booking {booking.external_id}",
                created_by=self._actor,
                created_at=now,
            )
            for user_id, phone in subjects
            for door_id, building_id in targets
        ]
        self._repo.add(*grants)
        return grants

    async def _summary(self, booking: Booking) -> dict[str, Any]:
        return {
            "version": booking.version,
            "deleted": booking.deleted,
            "document": booking.document,
            "grant_ids": await self._repo.live_grant_ids(booking.id),
        }

    async def _audit(
        self,
        action: str,
        booking: Booking,
        before: dict[str, Any] | None,
        grants: list[Grant],
        old_buildings: set[str],
        plan: _Plan,
    ) -> None:
        after = {
            "version": booking.version,
            "deleted": booking.deleted,
            "document": booking.document,
            "grant_ids": sorted(g.id for g in grants),
        }
        for building_id in sorted(old_buildings | plan.building_ids):
            record_change(
                self._session,
                actor=self._actor,
                action=action,
                target_type="booking",
                target_id=booking.id,
                before=before,
                after=after,
                building_id=building_id,
            )

    def _view(self, booking: Booking, grants: int, pending: int) -> BookingView:
        return BookingView(
            booking_id=booking.id,
            external_id=booking.external_id,
            version=booking.version,
            deleted=booking.deleted,
            valid_from=as_utc(booking.valid_from),
            valid_until=as_utc(booking.valid_until),
            grants=grants,
            pending_phone_recipients=pending,
        )


async def _delete_booking(
    session: AsyncSession, repo: BookingRepository, booking: Booking, actor: str, now: datetime
) -> None:
    """Revoke the booking's grants, mark it deleted, audit it per building."""
    before_grants = await repo.live_grant_ids(booking.id)
    before = {"version": booking.version, "deleted": False, "grant_ids": before_grants}
    await repo.revoke_grants([booking.id], now, actor)
    booking.deleted = True
    booking.updated_at = now
    repo.add(booking)
    buildings = await repo.target_buildings(
        booking.document.get("doors", []), booking.document.get("buildings", [])
    )
    after = {"version": booking.version, "deleted": True, "revoked_grant_ids": before_grants}
    for building_id in sorted(buildings):
        record_change(
            session,
            actor=actor,
            action="booking.deleted",
            target_type="booking",
            target_id=booking.id,
            before=before,
            after=after,
            building_id=building_id,
        )
