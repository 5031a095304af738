"""Offline tokens: issuing them (the same policy as an unlock), listing and revoking them.

Decisions, and why:

- **The same decision as an unlock.** ``AccessService.decide`` answers first, so an unknown
  door is ``404 door_not_found`` and a refusal is ``403`` with the same code and
  ``next_window`` as ``POST /v1/doors/{id}/unlock``.
- **No use-limited access offline.** A use is counted when the door opens; an offline opening
  happens where the API cannot count it, and a token may open the door several times in its
  life. So only rules without a use limit can back an offline token; when the rule that allows
  has a limit and no unlimited rule allows, the answer is ``403 offline_not_available`` (the
  citizen can still open online). Nothing is consumed at issue time.
- **No longer than the access.** The token rests on one rule, the unlimited one that allows
  now (stored as ``rule_id``, so revoking that grant revokes the token), and its ``exp`` is the
  earlier of now + CITYKEY_OFFLINE_TOKEN_LIFETIME_S and the end of that rule's current window
  (``window.allowed_until``): offline, nobody can re-ask the policy.
- **Bound to the app's key.** The request carries the app's P-256 public key; the token's
  ``cnf.jkt`` is its RFC 7638 thumbprint. The gateway demands a fresh proof signed by that key.
- **Audited.** ``offline_token.issued`` (allow) or ``offline_token.refused`` (deny, committed
  before the refusal is answered, as for unlocks); ``offline_token.revoked``.
- **Revocation is committed before it is published** (api/offline/revocations.py), which is
  why ``revoke`` commits itself instead of leaving it to the request, and then has the
  process's RevocationPublisher publish the gateway's new list at once.
"""

import logging
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.ext.asyncio import AsyncSession

from api.access import policy
from api.access.facts import DoorRow, load_access_facts
from api.access.service import AccessService, rule_from_grant, rule_from_public_access
from api.audit.models import AuditEvent
from api.audit.repository import AuditRepository
from api.common import utcnow
from api.errors import ApiError
from api.identity.models import User
from api.keys.keyring import KeyRing
from api.offline.models import OfflineToken
from api.offline.repository import OfflineTokenRepository
from api.offline.revocations import RevocationPublisher
from api.offline.schemas import OfflineTokenIssued, OfflineTokenView
from api.offline.window import allowed_until
from api.unlock.service import DENY_MESSAGES
from citykey_protocol.offline import (
    OFFLINE_TOKEN_TYPE,
    Confirmation,
    InvalidJwkError,
    OfflineClaims,
    claims_to_dict,
    jwk_coordinates,
    jwk_thumbprint,
)

log = logging.getLogger(__name__)

ACTION_ISSUED = "offline_token.issued"
ACTION_REFUSED = "offline_token.refused"
ACTION_REVOKED = "offline_token.revoked"
NOT_AVAILABLE = "offline_not_available"


def thumbprint_of(public_key: Any) -> str:
    """The RFC 7638 thumbprint of an EC P-256 public JWK whose point is on the curve; raise
    ApiError 422 bad_public_key otherwise."""
    try:
        x, y = jwk_coordinates(public_key)
        ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
        return jwk_thumbprint(public_key)
    except InvalidJwkError as exc:
        raise ApiError(422, "bad_public_key", str(exc)) from None
    except ValueError:
        raise ApiError(422, "bad_public_key", "the point (x, y) is not on P-256") from None


class OfflineTokenService:
    def __init__(
        self,
        session: AsyncSession,
        keyring: KeyRing,
        publisher: RevocationPublisher,
        *,
        issuer: str,
        lifetime_s: int,
    ) -> None:
        self._session = session
        self._access = AccessService(session)
        self._audit = AuditRepository(session)
        self._repo = OfflineTokenRepository(session)
        self._keyring = keyring
        self._publisher = publisher
        self._issuer = issuer
        self._lifetime = timedelta(seconds=lifetime_s)

    async def issue(self, user: User, door_id: str, public_key: Any) -> OfflineTokenIssued:
        """An offline token for ``door_id`` bound to ``public_key``, or ApiError."""
        thumbprint = thumbprint_of(public_key)
        now = utcnow().replace(microsecond=0)  # claims are whole seconds; so is the row
        found = await self._access.decide(user, door_id, now)
        if found is None:
            raise ApiError(404, "door_not_found", f"no door {door_id!r}")
        door, decision = found
        if not decision.allowed:
            assert decision.reason is not None
            await self._refuse(user, door, decision.reason.value)
            raise ApiError(
                403,
                decision.reason.value,
                DENY_MESSAGES[decision.reason],
                door_id=door.id,
                next_window=decision.next_window.isoformat() if decision.next_window else None,
            )
        backing = await self._offline_window(user, door, now)
        if backing is None:
            await self._refuse(user, door, NOT_AVAILABLE)
            raise ApiError(
                403,
                NOT_AVAILABLE,
                "Your access to this door is limited to a number of uses, which only works online.",
                door_id=door.id,
            )
        rule_id, until = backing
        iat, exp = int(now.timestamp()), int(until.timestamp())
        if exp <= iat:
            await self._refuse(user, door, NOT_AVAILABLE)
            raise ApiError(
                403, NOT_AVAILABLE, "Your access to this door ends now.", door_id=door.id
            )
        jti = secrets.token_hex(16)
        claims = OfflineClaims(
            iss=self._issuer,
            aud=door.gateway_id,
            sub=user.id,
            door=door.id,
            dur=door.default_unlock_seconds,
            jti=jti,
            iat=iat,
            nbf=iat,
            exp=exp,
            cnf=Confirmation(jkt=thumbprint),
        )
        token = self._keyring.sign(claims_to_dict(claims), OFFLINE_TOKEN_TYPE)
        issued, expires = now, datetime.fromtimestamp(exp, UTC)
        self._repo.add(
            OfflineToken(
                jti=jti,
                user_id=user.id,
                door_id=door.id,
                gateway_id=door.gateway_id,
                key_thumbprint=thumbprint,
                rule_id=rule_id,
                issued_at=issued,
                expires_at=expires,
            )
        )
        # Committed with the token row by the request, before the answer leaves: no token
        # exists that the audit log does not know of.
        self._audit.add(
            AuditEvent(
                actor=user.id,
                action=ACTION_ISSUED,
                door_id=door.id,
                gateway_id=door.gateway_id,
                building_id=door.building_id,
                decision="allow",
                detail={
                    "jti": jti,
                    "rule_id": rule_id,
                    "key_thumbprint": thumbprint,
                    "expires_at": expires.isoformat(),
                },
            )
        )
        return OfflineTokenIssued(
            token=token,
            jti=jti,
            door_id=door.id,
            gateway_id=door.gateway_id,
            key_thumbprint=thumbprint,
            unlock_seconds=door.default_unlock_seconds,
            issued_at=issued,
            expires_at=expires,
        )

    async def mine(self, user: User) -> list[OfflineTokenView]:
        """The user's unexpired tokens (revoked ones included), newest first."""
        now = utcnow()
        return [OfflineTokenView.of(row, now) for row in await self._repo.mine(user.id, now)]

    async def revoke(self, user: User, jti: str) -> OfflineTokenView:
        """Revoke one of the user's tokens; its gateway's revocation list gets a new version,
        committed and then published. Idempotent: a revoked or expired token stays as it is."""
        row = await self._repo.get(jti, for_update=True)
        if row is None or row.user_id != user.id:
            # Someone else's token is as invisible as a missing one.
            raise ApiError(404, "offline_token_not_found", f"no offline token {jti!r} of yours")
        now = utcnow()
        if row.revoked_at is not None or row.expires_at <= now:
            return OfflineTokenView.of(row, now)
        await revoke_tokens(self._session, [row], actor=user.id, reason="by_holder")
        view = OfflineTokenView.of(row, now)
        await self._session.commit()  # before any gateway hears of it (module docstring)
        await self._publisher.sync([row.gateway_id])
        return view

    async def _offline_window(
        self, user: User, door: DoorRow, now: datetime
    ) -> tuple[str, datetime] | None:
        """The rule without a use limit that allows the door now, and until when it does
        without a break (at most the token lifetime); None when no such rule allows now. The
        token rests on that one rule: revoking it revokes the token (``revoke_for_grants``).
        Loads the facts the way AccessService.decide does."""
        first_day, last_day = self._access.repository.horizon(now)
        facts = await load_access_facts(self._session, user.id, door.id, first_day, last_day)
        if facts is None:
            return None
        today = now.date()
        rules = [rule_from_grant(g, g.parent) for g in facts.grants]
        rules += [rule_from_public_access(p, user, facts.group_ids, today) for p in facts.public]
        unlimited = [rule for rule in rules if rule.max_uses is None]
        door_facts = policy.DoorFacts(
            door_id=facts.door.id,
            timezone=facts.door.timezone,
            enabled=facts.door.enabled,
            lockdown=facts.door.lockdown,
            holidays=facts.holidays,
        )
        decision = policy.decide(door_facts, unlimited, now)
        backing = next((r for r in unlimited if r.id == decision.rule_id), None)
        if not decision.allowed or backing is None:
            return None
        until = allowed_until(door_facts, [backing], now, now + self._lifetime)
        return None if until is None else (backing.id, until)

    async def _refuse(self, user: User, door: DoorRow, reason: str) -> None:
        self._audit.add(
            AuditEvent(
                actor=user.id,
                action=ACTION_REFUSED,
                door_id=door.id,
                gateway_id=door.gateway_id,
                building_id=door.building_id,
                decision="deny",
                reason=reason,
            )
        )
        await self._session.commit()  # the refusal is answered with an error: commit first


async def revoke_tokens(
    session: AsyncSession, rows: Sequence[OfflineToken], *, actor: str, reason: str
) -> set[str]:
    """Mark ``rows`` revoked and audit each, in the caller's transaction (no gateway row is
    locked here: api/offline/revocations.py says why). Returns the gateways concerned."""
    now = utcnow()
    audit = AuditRepository(session)
    buildings = await OfflineTokenRepository(session).buildings_of_doors(
        sorted({row.door_id for row in rows})
    )
    for row in rows:
        row.revoked_at = now
        session.add(row)
        audit.add(
            AuditEvent(
                actor=actor,
                action=ACTION_REVOKED,
                door_id=row.door_id,
                gateway_id=row.gateway_id,
                building_id=buildings.get(row.door_id),
                detail={"jti": row.jti, "holder": row.user_id, "reason": reason},
            )
        )
    await session.flush()
    return {row.gateway_id for row in rows}


async def revoke_for_grants(
    session: AsyncSession, grant_ids: Sequence[str], *, actor: str
) -> set[str]:
    """Hook for the grants service: revoke every live offline token issued on the strength of
    any of ``grant_ids`` (pass a revoked grant and its revoked shares), in the caller's
    transaction, with an ``offline_token.revoked`` audit row each. After the commit the
    RevocationPublisher of the API process publishes the gateways' new lists within
    REPUBLISH_INTERVAL_S; for at once, call ``request.app.state.offline_revocations.sync(ids)``
    after committing. Returns the gateway ids concerned (empty when no token was live)."""
    rows = await OfflineTokenRepository(session).live_tokens_of_rules(grant_ids, utcnow())
    if not rows:
        return set()
    return await revoke_tokens(session, rows, actor=actor, reason="grant_revoked")
