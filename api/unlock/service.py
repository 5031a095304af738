"""The unlock use case. Policy decides; the relay carries; the audit log remembers.

Durability rule: the audit record of an allowed unlock is committed *before* the command
leaves for the gateway, so a door never moves without a durable authorization record. The
result is recorded in a second, append-only row. Rows go through the batched audit writer:
alone, a row commits with the request's own changes (a limited grant's use, the rate-limit
event); under contention those commit just before it and the row joins a shared batch.
"""

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from api.access import policy
from api.access.facts import DoorRow
from api.access.service import AccessService
from api.audit.models import AuditEvent
from api.audit.writer import AuditWriter
from api.db import UNIT_STARTED, DatabaseUnavailableError
from api.errors import ApiError
from api.identity.models import User
from api.identity.repository import ensure_user
from api.identity.verifier import Principal
from api.relay.mqtt import BrokerUnavailableError, GatewayTimeoutError, MqttRelay
from api.unlock.tokens import UnlockTokenMinter
from citykey_protocol.codes import AckResult
from citykey_protocol.messages import Ack, UnlockCommand

ACTION_REQUESTED = "unlock.requested"
ACTION_COMPLETED = "unlock.completed"

DENY_MESSAGES = {
    policy.DenyReason.NO_GRANT: "You have no access to this door.",
    policy.DenyReason.NOT_YET_VALID: "Your access to this door has not started yet.",
    policy.DenyReason.EXPIRED: "Your access to this door has expired.",
    policy.DenyReason.OUTSIDE_SCHEDULE: "This door is closed to you at this time.",
    policy.DenyReason.HOLIDAY: "The building is closed today (holiday).",
    policy.DenyReason.REVOKED: "Your access to this door was revoked.",
    policy.DenyReason.USES_EXHAUSTED: "You have used up your access to this door.",
    policy.DenyReason.LOCKDOWN: "The building is in lockdown.",
    policy.DenyReason.NOT_ELIGIBLE: "You do not meet the conditions to open this door.",
    policy.DenyReason.DOOR_DISABLED: "This door is out of service.",
}


class UnknownCallerError(Exception):
    """The token's subject is not a citykey user (the router answers 401 unknown_user, as
    api/deps.get_current_user does on other routes). Only from :meth:`UnlockService.unlock_for`."""


@dataclass(frozen=True, slots=True)
class UnlockOutcome:
    door_id: str
    command_id: str
    unlocked_until: datetime
    latency_ms: float


@dataclass(slots=True)
class _Attempt:
    """What one unlock request knows so far, for the audit rows."""

    door: DoorRow
    actor: str
    command_id: str
    started: float
    rule_id: str | None = None

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 3)


@dataclass(frozen=True, slots=True)
class _Caller:
    """Who asks: the user row when already loaded (the web app), else only its id."""

    user_id: str
    user: User | None
    provisioned_name: str | None
    """For a person the OpenID Connect provider vouches for: created on first use."""


def _since(started: float) -> float:
    return time.perf_counter() - started


class UnlockService:
    def __init__(
        self,
        session: AsyncSession,
        relay: MqttRelay,
        minter: UnlockTokenMinter,
        timeout_s: float,
    ) -> None:
        self._session = session
        self._access = AccessService(session)
        bind = session.bind
        if isinstance(bind, AsyncConnection):
            bind = bind.engine
        if not isinstance(bind, AsyncEngine):
            raise TypeError("the unlock service needs a session bound to an engine")
        self._writer = AuditWriter.for_engine(bind)
        self._relay = relay
        self._minter = minter
        self._timeout_s = timeout_s
        # Time kept back from the ack wait to record the result (about 1 ms when healthy).
        self._result_reserve_s = min(0.25, timeout_s / 10)

    async def unlock(self, user: User, door_id: str, seconds: int | None) -> UnlockOutcome:
        """Open ``door_id`` for ``user`` (already loaded) or raise ApiError with the reason."""
        return await self._within_deadline(_Caller(user.id, user, None), door_id, seconds)

    async def unlock_for(
        self, principal: Principal, door_id: str, seconds: int | None
    ) -> UnlockOutcome:
        """Open ``door_id`` for the caller of a verified bearer token, or raise ApiError with
        the reason (UnknownCallerError for a subject that is not a citykey user). The user row
        comes with the decision's facts, in the same round trip (api/access/facts.py)."""
        caller = _Caller(principal.subject, None, principal.provisioned_name)
        return await self._within_deadline(caller, door_id, seconds)

    async def _within_deadline(
        self, caller: "_Caller", door_id: str, seconds: int | None
    ) -> UnlockOutcome:
        """One deadline, ``timeout_s`` from the start of the request's unit of work, covers the
        whole request, the database included: a database that stops answering ends it with
        DatabaseUnavailableError (503) at the deadline, never later. The wait for the ack ends
        a little earlier (``_result_reserve_s``) to leave time to record the result."""
        started = self._session.info.get(UNIT_STARTED) or time.perf_counter()
        deadline = asyncio.get_running_loop().time() + self._timeout_s - _since(started)
        try:
            async with asyncio.timeout_at(deadline):
                return await self._unlock(caller, door_id, seconds, started)
        except TimeoutError:
            # Only database work can reach the deadline (the ack wait ends before it); a
            # timeout of the driver itself lands here too.
            raise DatabaseUnavailableError("the database did not answer in time") from None

    async def _unlock(
        self, caller: "_Caller", door_id: str, seconds: int | None, started: float
    ) -> UnlockOutcome:
        found = await self._decide(caller, door_id, datetime.now(UTC))
        if found is None:
            raise ApiError(404, "door_not_found", f"no door {door_id!r}")
        door, decision = found
        duration = seconds or door.default_unlock_seconds
        if duration > door.default_unlock_seconds:
            raise ApiError(
                422,
                "duration_too_long",
                f"this door may be unlocked for at most {door.default_unlock_seconds} s",
            )
        attempt = _Attempt(door, caller.user_id, str(uuid.uuid4()), started, decision.rule_id)

        if decision.allowed and decision.limited:
            assert decision.rule_id is not None
            if not await self._access.repository.consume_use(decision.rule_id):
                decision = policy.Decision(False, policy.DenyReason.USES_EXHAUSTED)
        if not decision.allowed:
            assert decision.reason is not None
            await self._record(
                attempt, ACTION_REQUESTED, decision="deny", reason=decision.reason.value
            )
            raise ApiError(
                403,
                decision.reason.value,
                DENY_MESSAGES[decision.reason],
                door_id=door.id,
                next_window=decision.next_window.isoformat() if decision.next_window else None,
            )

        if not self._relay.connected:
            await self._fail_before_sending(attempt, decision, "broker_unavailable")
            raise ApiError(503, "broker_unavailable", "the message broker is unreachable")
        if not self._relay.gateway_online(door.gateway_id):
            await self._fail_before_sending(attempt, decision, "gateway_offline")
            raise ApiError(503, "gateway_offline", "the door's gateway is offline", door_id=door.id)

        token, _ = self._minter.mint(
            gateway_id=door.gateway_id, door_id=door.id, subject=caller.user_id, seconds=duration
        )
        # Durable before the door can move (see module docstring).
        await self._record(attempt, ACTION_REQUESTED, decision="allow")
        command = UnlockCommand(
            command_id=attempt.command_id,
            door=door.id,
            token=token,
            reply_to=self._relay.instance_id,
        )
        remaining = self._timeout_s - _since(started) - self._result_reserve_s
        try:
            ack = await self._relay.send_unlock(door.gateway_id, command, max(remaining, 0.05))
        except GatewayTimeoutError:
            await self._complete(attempt, decision, "timeout")
            raise ApiError(
                504,
                "gateway_timeout",
                "the gateway did not answer in time",
                door_id=door.id,
                command_id=attempt.command_id,
            ) from None
        except BrokerUnavailableError:
            await self._complete(attempt, decision, "broker_unavailable")
            raise ApiError(
                503,
                "broker_unavailable",
                "the message broker is unreachable",
                command_id=attempt.command_id,
            ) from None
        return await self._answer(attempt, decision, ack)

    async def _decide(
        self, caller: "_Caller", door_id: str, now: datetime
    ) -> tuple[DoorRow, policy.Decision] | None:
        """The decision, the caller's user row loaded with it unless already known."""
        known, found = await self._access.decide_for(caller.user_id, door_id, now, caller.user)
        if caller.user is None and known is None:
            if caller.provisioned_name is None:
                raise UnknownCallerError(caller.user_id)
            # First request of a person the OpenID Connect provider vouches for (rare).
            user = await ensure_user(self._session, caller.user_id, caller.provisioned_name)
            _, found = await self._access.decide_for(caller.user_id, door_id, now, user)
        return found

    async def _answer(
        self, attempt: _Attempt, decision: policy.Decision, ack: Ack
    ) -> UnlockOutcome:
        latency_ms = await self._complete(attempt, decision, ack.result.value, reason=ack.reason)
        where: dict[str, Any] = {"door_id": attempt.door.id, "command_id": attempt.command_id}
        if ack.result is AckResult.UNLOCKED and ack.unlocked_until is not None:
            return UnlockOutcome(
                door_id=attempt.door.id,
                command_id=attempt.command_id,
                unlocked_until=datetime.fromtimestamp(ack.unlocked_until, UTC),
                latency_ms=latency_ms,
            )
        if ack.result is AckResult.JAMMED:
            raise ApiError(409, "lock_jammed", "the lock is jammed; the door did not open", **where)
        if ack.result is AckResult.DENIED:
            raise ApiError(
                502,
                "gateway_refused",
                f"the gateway refused the command ({ack.reason})",
                reason=ack.reason,
                **where,
            )
        raise ApiError(503, "device_error", f"the lock reported a fault ({ack.reason})", **where)

    async def _fail_before_sending(
        self, attempt: _Attempt, decision: policy.Decision, result: str
    ) -> None:
        if decision.limited and attempt.rule_id:
            await self._access.repository.refund_use(attempt.rule_id)
        await self._record(attempt, ACTION_REQUESTED, decision="allow", result=result)

    async def _complete(
        self,
        attempt: _Attempt,
        decision: policy.Decision,
        result: str,
        *,
        reason: str | None = None,
    ) -> float:
        if decision.limited and attempt.rule_id and result != AckResult.UNLOCKED.value:
            await self._access.repository.refund_use(attempt.rule_id)
        return await self._record(
            attempt, ACTION_COMPLETED, decision="allow", result=result, reason=reason
        )

    async def _record(
        self,
        attempt: _Attempt,
        action: str,
        *,
        decision: str,
        reason: str | None = None,
        result: str | None = None,
    ) -> float:
        """Append one audit row to the chain and commit it with the request's pending
        changes (use count, rate limit); return once committed. Through the batched writer
        (api/audit/writer.py): concurrent unlocks share one chained transaction instead of
        queueing for the chain's lock one by one."""
        latency_ms = attempt.elapsed_ms()
        await self._writer.append(
            AuditEvent(
                actor=attempt.actor,
                action=action,
                door_id=attempt.door.id,
                gateway_id=attempt.door.gateway_id,
                building_id=attempt.door.building_id,
                decision=decision,
                reason=reason,
                command_id=attempt.command_id,
                result=result,
                latency_ms=latency_ms if result or reason else None,
                detail={"rule_id": attempt.rule_id} if attempt.rule_id else {},
            ),
            self._session,
        )
        return latency_ms
