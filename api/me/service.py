"""Citizen self-service: my doors, my history, sharing, and verifying my phone number.

Sharing rules (why they are what they are):
- A share is made only from a grant given to me personally. Not from a group grant: a share's
  life is tied to its parent grant (policy.decide kills a share whose parent is revoked or
  expired), not to my membership, so a share from a group grant would outlive my leaving the
  group. Not from a share (no chains): the policy looks one parent up, so a share of a share
  would outlive the original.
- The original must be marked shareable, be live now (started, not ended, not revoked) and
  have no use limit: uses are counted per grant, so a share of a limited grant would let more
  people through than the manager allowed.
- The share's window lies inside the original's, and the share carries the original's weekly
  schedule and holiday rule, so it can never open a door at a time the original could not.
"""

import hashlib
import hmac
import secrets
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.access import policy
from api.access.models import Grant
from api.access.service import (
    AccessService,
    DoorAccess,
    rule_from_grant,
    rule_from_public_access,
)
from api.audit.service import record_change, snapshot
from api.bookings.models import PhoneVerification
from api.buildings.models import Building, Door
from api.common import as_utc, new_id
from api.errors import ApiError
from api.identity.models import User
from api.me.phone_sender import PhoneCodeSender
from api.me.repository import MeRepository
from api.me.schemas import (
    ActivityItem,
    ActivityPage,
    MyBuilding,
    MyDoor,
    ShareCreate,
    ShareStatus,
    SharesView,
    ShareView,
)
from api.unlock.service import ACTION_COMPLETED, ACTION_REQUESTED

CODE_LIFETIME = timedelta(minutes=10)
MAX_ATTEMPTS = 5
MAX_CODES_PER_HOUR = 5
"""Codes a user may request per hour: each one is a text message someone pays for."""
MAX_ACTIVE_SHARES = 100

# A refused door is "mine" only while some rule can still let me in. These reasons, without a
# next window, mean none can (the door is not listed): no rule, or only dead ones.
_NOT_MINE = frozenset(
    {
        policy.DenyReason.NO_GRANT,
        policy.DenyReason.EXPIRED,
        policy.DenyReason.REVOKED,
        policy.DenyReason.USES_EXHAUSTED,
        policy.DenyReason.NOT_ELIGIBLE,
    }
)
# policy.decide answers these from the door's state before it looks at any rule.
_DOOR_STATE = frozenset({policy.DenyReason.DOOR_DISABLED, policy.DenyReason.LOCKDOWN})


def hash_code(verification_id: str, code: str) -> str:
    """SHA-256 of the code salted with the verification id. Enough for a 6-digit code that
    lives ten minutes and allows five attempts: the attempt limit is the protection, the hash
    only keeps codes out of database dumps."""
    return hashlib.sha256(f"{verification_id}:{code}".encode()).hexdigest()


def encode_cursor(audit_id: int) -> str:
    return f"a{audit_id}"


def decode_cursor(cursor: str) -> int:
    if len(cursor) > 24 or not cursor.startswith("a") or not cursor[1:].isdigit():
        raise ApiError(422, "invalid_cursor", "the cursor is not one this endpoint returned")
    return int(cursor[1:])


def _is_mine(decision: policy.Decision) -> bool:
    return decision.allowed or decision.next_window is not None or decision.reason not in _NOT_MINE


def _live(grant: Grant, now: datetime) -> bool:
    """Started, not ended, not revoked, uses left: the grant could open a door today."""
    return (
        (grant.revoked_at is None or as_utc(grant.revoked_at) > now)
        and (grant.valid_from is None or as_utc(grant.valid_from) <= now)
        and (grant.valid_until is None or as_utc(grant.valid_until) > now)
        and (grant.max_uses is None or grant.use_count < grant.max_uses)
    )


def _contains(grant: Grant, start: datetime, end: datetime) -> bool:
    return (grant.valid_from is None or as_utc(grant.valid_from) <= start) and (
        grant.valid_until is None or end <= as_utc(grant.valid_until)
    )


def _share_status(share: Grant, parent: Grant, now: datetime) -> ShareStatus:
    parent_dead = (parent.revoked_at is not None and as_utc(parent.revoked_at) <= now) or (
        parent.valid_until is not None and as_utc(parent.valid_until) <= now
    )
    if parent_dead:
        return "ended"
    if share.valid_from is not None and as_utc(share.valid_from) > now:
        return "upcoming"
    return "active"


def share_view(share: Grant, parent: Grant, door: Door, now: datetime) -> ShareView:
    """The citizen's picture of a share."""
    assert share.user_id is not None
    assert share.parent_grant_id is not None
    assert share.valid_from is not None
    assert share.valid_until is not None
    return ShareView(
        grant_id=share.id,
        door_id=door.id,
        door_name=door.name,
        building_id=door.building_id,
        sharer_user_id=share.created_by or "",
        recipient_user_id=share.user_id,
        parent_grant_id=share.parent_grant_id,
        valid_from=as_utc(share.valid_from),
        valid_until=as_utc(share.valid_until),
        status=_share_status(share, parent, now),
        created_at=as_utc(share.created_at),
    )


class MeService:
    """What a signed-in citizen may see and do about their own access."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self._repo = MeRepository(session)
        self._access = AccessService(session)

    # -- my doors --------------------------------------------------------------------------

    async def my_doors(self, user: User, now: datetime) -> list[MyBuilding]:
        """Doors I may open now or later, grouped by building (ordered by name)."""
        found = await self._access.my_doors(user, now)
        overridden = [
            a for a in found if not a.decision.allowed and a.decision.reason in _DOOR_STATE
        ]
        still_mine = await self._mine_despite_door_state(user, overridden, now)
        buildings: dict[str, MyBuilding] = {}
        for access in found:
            decision = access.decision
            if decision.reason in _DOOR_STATE:
                if access.door.id not in still_mine:
                    continue
            elif not _is_mine(decision):
                continue
            building = access.building
            entry = buildings.get(building.id)
            if entry is None:
                entry = MyBuilding(
                    building_id=building.id,
                    building_name=building.name,
                    timezone=building.timezone,
                    doors=[],
                )
                buildings[building.id] = entry
            entry.doors.append(
                MyDoor(
                    door_id=access.door.id,
                    name=access.door.name,
                    can_open_now=decision.allowed,
                    reason=decision.reason.value if decision.reason else None,
                    next_window=decision.next_window,
                    # The decision names the rule kind only when it allows.
                    via=decision.rule_kind.value if decision.rule_kind else None,
                )
            )
        return list(buildings.values())

    async def _mine_despite_door_state(
        self, user: User, overridden: list[DoorAccess], now: datetime
    ) -> set[str]:
        """Of doors refused for their state (disabled, lockdown), those where one of my rules
        is still alive. The policy refuses such doors before looking at rules, so the decision
        alone cannot tell a live grant from one that ended years ago; decide again as if the
        door were in service."""
        doors = [(a.door, a.building) for a in overridden]
        if not doors:
            return set()
        grants, public, groups = await self._repo.rules_on_doors(
            user.id, sorted({d.id for d, _ in doors}), sorted({b.id for _, b in doors})
        )
        by_door: dict[str, list[policy.AccessRule]] = defaultdict(list)
        today = now.date()
        for door, building in doors:
            by_door[door.id] += [
                rule_from_grant(g, p)
                for g, p in grants
                if g.door_id == door.id or g.building_id == building.id
            ]
            by_door[door.id] += [
                rule_from_public_access(r, user, groups, today)
                for r in public
                if r.door_id == door.id
            ]
        mine: set[str] = set()
        for door, building in doors:
            facts = policy.DoorFacts(door_id=door.id, timezone=building.timezone)
            if _is_mine(policy.decide(facts, by_door[door.id], now)):
                mine.add(door.id)
        return mine

    # -- history ---------------------------------------------------------------------------

    async def activity(self, user: User, limit: int, cursor: str | None) -> ActivityPage:
        """My unlock requests and their results, newest first."""
        before = decode_cursor(cursor) if cursor else None
        rows = await self._repo.activity(
            user.id, (ACTION_REQUESTED, ACTION_COMPLETED), limit + 1, before
        )
        page = rows[:limit]
        items = [
            ActivityItem(
                id=event.id or 0,
                ts=as_utc(event.ts),
                action=event.action,
                door_id=event.door_id,
                door_name=door_name,
                building_id=event.building_id,
                decision=event.decision,
                reason=event.reason,
                result=event.result,
                command_id=event.command_id,
            )
            for event, door_name in page
        ]
        more = len(rows) > limit
        return ActivityPage(items=items, next_cursor=encode_cursor(items[-1].id) if more else None)

    # -- shares ----------------------------------------------------------------------------

    async def create_share(self, user: User, body: ShareCreate, now: datetime) -> ShareView:
        """Share one of my grants on a door with another citizen (rules: module docstring)."""
        start, end = body.valid_from, body.valid_until
        if end <= start:
            raise ApiError(422, "invalid_window", "valid_until must be after valid_from")
        if end <= now:
            raise ApiError(422, "invalid_window", "the window has already ended")
        if body.recipient_user_id == user.id:
            raise ApiError(422, "cannot_share_with_self", "you cannot share a door with yourself")
        found = await self._repo.door_with_building(body.door_id)
        if found is None:
            raise ApiError(404, "door_not_found", f"no door {body.door_id!r}")
        door, building = found
        if await self._repo.get_user(body.recipient_user_id) is None:
            raise ApiError(
                422,
                "unknown_recipient",
                f"no citizen {body.recipient_user_id!r}",
                recipient_user_id=body.recipient_user_id,
            )
        original = await self._pick_original(user, door, building, start, end, now)
        if await self._repo.count_active_shares_given(user.id, now) >= MAX_ACTIVE_SHARES:
            raise ApiError(
                409,
                "share_limit_reached",
                f"you already have {MAX_ACTIVE_SHARES} active shares; revoke some first",
            )
        share = Grant(
            id=new_id("grt"),
            user_id=body.recipient_user_id,
            door_id=door.id,
            valid_from=start,
            valid_until=end,
            schedule=original.schedule,
            respect_holidays=original.respect_holidays,
            shareable=False,
            parent_grant_id=original.id,
            note="shared",
            created_by=user.id,
            created_at=now,
        )
        self._repo.add(share)
        record_change(
            self._session,
            actor=user.id,
            action="share.created",
            target_type="grant",
            target_id=share.id,
            before=None,
            after=snapshot(share),
            building_id=building.id,
            door_id=door.id,
        )
        # Flushed here so a constraint failure is an error of this request: the request's
        # commit runs only after the answer has been sent.
        await self._repo.flush()
        return share_view(share, original, door, now)

    async def _pick_original(
        self,
        user: User,
        door: Door,
        building: Building,
        start: datetime,
        end: datetime,
        now: datetime,
    ) -> Grant:
        candidates = await self._repo.own_grants_on(user.id, door.id, building.id)
        shareable = [g for g in candidates if g.shareable and g.max_uses is None]
        if not shareable:
            raise ApiError(
                403,
                "not_shareable",
                "none of your own grants on this door may be shared",
                door_id=door.id,
            )
        live = [g for g in shareable if _live(g, now)]
        if not live:
            raise ApiError(
                403,
                "not_shareable",
                "your shareable access to this door is not valid now",
                door_id=door.id,
            )
        fitting = [g for g in live if _contains(g, start, end)]
        if not fitting:
            widest = max(live, key=_end_key)
            raise ApiError(
                422,
                "window_outside_original",
                "the share must lie within the window of your own access",
                original_valid_from=_iso(widest.valid_from),
                original_valid_until=_iso(widest.valid_until),
            )
        # The longest-lived original, so the share is least likely to end early; a grant on
        # the door itself before a building grant.
        return max(fitting, key=lambda g: (_end_key(g), g.door_id is not None))

    async def list_shares(self, user: User, now: datetime) -> SharesView:
        """Shares I gave and shares I received that are not revoked or past their window."""
        given = await self._repo.shares(given_by=user.id, now=now)
        received = await self._repo.shares(received_by=user.id, now=now)
        return SharesView(
            given=[share_view(s, p, d, now) for s, p, d in given],
            received=[share_view(s, p, d, now) for s, p, d in received],
        )

    async def revoke_share(self, user: User, grant_id: str, now: datetime) -> None:
        """Revoke a share I gave or received; anyone else's answers 404. Idempotent."""
        share = await self._repo.share_of(grant_id, user.id)
        if share is None:
            raise ApiError(404, "share_not_found", f"no share {grant_id!r}")
        if share.revoked_at is not None:
            return
        before = snapshot(share)
        share.revoked_at = now
        share.revoked_by = user.id
        self._repo.add(share)
        buildings = await self._repo.door_buildings([share.door_id] if share.door_id else [])
        record_change(
            self._session,
            actor=user.id,
            action="share.revoked",
            target_type="grant",
            target_id=share.id,
            before=before,
            after=snapshot(share),
            building_id=buildings.get(share.door_id or ""),
            door_id=share.door_id,
        )
        await self._repo.flush()

    # -- phone -----------------------------------------------------------------------------

    async def start_phone_verification(
        self, user: User, phone: str, sender: PhoneCodeSender | None, now: datetime
    ) -> PhoneVerification:
        """Send a 6-digit code to ``phone``; only its hash is stored."""
        if sender is None:
            raise ApiError(
                503,
                "phone_verification_unavailable",
                "phone verification is not configured on this server",
            )
        if await self._repo.count_codes_since(user.id, now - timedelta(hours=1)) >= (
            MAX_CODES_PER_HOUR
        ):
            raise ApiError(
                429,
                "too_many_codes",
                f"at most {MAX_CODES_PER_HOUR} codes per hour; try again later",
            )
        verification = PhoneVerification(
            id=new_id("pv"),
            user_id=user.id,
            phone=phone,
            code_hash="",
            expires_at=now + CODE_LIFETIME,
            created_at=now,
        )
        code = f"{secrets.randbelow(1_000_000):06d}"
        verification.code_hash = hash_code(verification.id, code)
        self._repo.add(verification)
        try:
            await sender.send(phone, code)
        except Exception as exc:
            raise ApiError(
                502, "phone_send_failed", "the code could not be sent; try again"
            ) from exc
        return verification

    async def verify_phone(self, user: User, code: str, now: datetime) -> tuple[User, int]:
        """Check the code of my latest verification; on success the number is mine and the
        grants waiting for it become mine. Returns the user and the number of claimed grants."""
        verification = await self._repo.latest_verification(user.id)
        if verification is None:
            raise ApiError(
                404, "verification_not_found", "no code was requested; POST /v1/me/phone first"
            )
        if as_utc(verification.expires_at) <= now:
            raise ApiError(410, "code_expired", "the code has expired; request a new one")
        attempts = await self._repo.count_attempt(verification.id, MAX_ATTEMPTS)
        if attempts is None:
            raise ApiError(429, "too_many_attempts", "too many wrong codes; request a new one")
        if not hmac.compare_digest(hash_code(verification.id, code), verification.code_hash):
            # The request rolls back when it raises; the attempt must count anyway, or the
            # limit would protect nothing. Commit it now (nothing else is pending).
            await self._session.commit()
            raise ApiError(
                422,
                "wrong_code",
                "the code is not correct",
                attempts_left=MAX_ATTEMPTS - attempts,
            )
        phone = verification.phone
        holder = await self._repo.user_with_phone(phone)
        if holder is not None and holder.id != user.id:
            raise ApiError(409, "phone_taken", "this number is verified by another account")
        before = {"phone": user.phone, "phone_verified_at": _iso(user.phone_verified_at)}
        user.phone = phone
        user.phone_verified_at = now
        self._session.add(user)
        await self._repo.delete_verifications(user.id)
        try:
            await self._repo.flush()
        except IntegrityError:
            # Another account verified the same number at the same moment.
            raise ApiError(
                409, "phone_taken", "this number is verified by another account"
            ) from None
        record_change(
            self._session,
            actor=user.id,
            action="user.phone_verified",
            target_type="user",
            target_id=user.id,
            before=before,
            after={"phone": phone, "phone_verified_at": now.isoformat()},
        )
        claimed = await self._claim_phone_grants(user, phone)
        return user, claimed

    async def _claim_phone_grants(self, user: User, phone: str) -> int:
        """Grants addressed to ``phone`` (bookings made before the citizen was known) become
        the user's. Each is a permission change, audited."""
        grants = await self._repo.pending_phone_grants(phone)
        buildings = await self._repo.door_buildings([g.door_id for g in grants if g.door_id])
        for grant in grants:
            before = snapshot(grant)
            grant.user_id = user.id
            grant.subject_phone = None
            self._repo.add(grant)
            record_change(
                self._session,
                actor=user.id,
                action="grant.claimed",
                target_type="grant",
                target_id=grant.id,
                before=before,
                after=snapshot(grant),
                building_id=grant.building_id or buildings.get(grant.door_id or ""),
                door_id=grant.door_id,
            )
        await self._repo.flush()
        return len(grants)


_FOREVER = datetime.max.replace(tzinfo=UTC)


def _end_key(grant: Grant) -> datetime:
    return as_utc(grant.valid_until) if grant.valid_until is not None else _FOREVER


def _iso(value: datetime | None) -> str | None:
    return as_utc(value).isoformat() if value is not None else None
