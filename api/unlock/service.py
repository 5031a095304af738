"""The unlock use case. Policy decides; the relay carries; the audit log remembers.

Durability rule: the audit record of an allowed unlock is committed *before* the command
leaves for the gateway, so a door never moves without a durable authorization record. The
result is recorded in a second, append-only row.
"""

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from api.access import policy
from api.access.repository import GrantRepository
from api.audit.models import AuditEvent
from api.audit.repository import AuditRepository
from api.buildings.models import Door
from api.buildings.repository import DoorRepository
from api.errors import ApiError
from api.identity.models import User
from api.relay.mqtt import BrokerUnavailableError, GatewayTimeoutError, MqttRelay
from api.unlock.tokens import UnlockTokenMinter
from citykey_protocol.codes import AckResult
from citykey_protocol.messages import UnlockCommand

ACTION_REQUESTED = "unlock.requested"
ACTION_COMPLETED = "unlock.completed"


@dataclass(frozen=True, slots=True)
class UnlockOutcome:
    door_id: str
    command_id: str
    unlocked_until: datetime
    latency_ms: float


class UnlockService:
    def __init__(
        self,
        session: AsyncSession,
        relay: MqttRelay,
        minter: UnlockTokenMinter,
        timeout_s: float,
    ) -> None:
        self._session = session
        self._doors = DoorRepository(session)
        self._grants = GrantRepository(session)
        self._audit = AuditRepository(session)
        self._relay = relay
        self._minter = minter
        self._timeout_s = timeout_s

    async def unlock(self, user: User, door_id: str, seconds: int | None) -> UnlockOutcome:
        """Open ``door_id`` for ``user`` or raise ApiError with the reason."""
        started = time.perf_counter()
        door = await self._doors.get(door_id)
        if door is None:
            raise ApiError(404, "door_not_found", f"no door {door_id!r}")
        duration = seconds or door.default_unlock_seconds
        if duration > door.default_unlock_seconds:
            raise ApiError(
                422,
                "duration_too_long",
                f"this door may be unlocked for at most {door.default_unlock_seconds} s",
            )

        command_id = str(uuid.uuid4())
        now = datetime.now(UTC)
        grants = await self._grants.for_user_and_door(user.id, door.id, door.building_id)
        decision = policy.decide(grants, now)
        if not decision.allowed:
            assert decision.reason is not None
            await self._record(
                door, user, command_id, started, decision="deny", reason=decision.reason.value
            )
            raise ApiError(
                403, decision.reason.value, _DENY_MESSAGES[decision.reason], door_id=door.id
            )

        if not self._relay.connected:
            await self._record(
                door, user, command_id, started, decision="allow", result="broker_unavailable"
            )
            raise ApiError(503, "broker_unavailable", "the message broker is unreachable")
        if not self._relay.gateway_online(door.gateway_id):
            await self._record(
                door, user, command_id, started, decision="allow", result="gateway_offline"
            )
            raise ApiError(503, "gateway_offline", "the door's gateway is offline", door_id=door.id)

        token, _ = self._minter.mint(
            gateway_id=door.gateway_id, door_id=door.id, subject=user.id, seconds=duration
        )
        # Durable before the door can move (see module docstring).
        await self._record(
            door, user, command_id, started, decision="allow", grant_id=decision.grant_id
        )
        command = UnlockCommand(
            command_id=command_id, door=door.id, token=token, reply_to=self._relay.instance_id
        )
        remaining = self._timeout_s - (time.perf_counter() - started)
        try:
            ack = await self._relay.send_unlock(door.gateway_id, command, max(remaining, 0.05))
        except GatewayTimeoutError:
            await self._complete(door, user, command_id, started, "timeout")
            raise ApiError(
                504,
                "gateway_timeout",
                "the gateway did not answer in time",
                door_id=door.id,
                command_id=command_id,
            ) from None
        except BrokerUnavailableError:
            await self._complete(door, user, command_id, started, "broker_unavailable")
            raise ApiError(
                503,
                "broker_unavailable",
                "the message broker is unreachable",
                command_id=command_id,
            ) from None

        latency_ms = await self._complete(
            door, user, command_id, started, ack.result.value, reason=ack.reason
        )
        if ack.result is AckResult.UNLOCKED and ack.unlocked_until is not None:
            return UnlockOutcome(
                door_id=door.id,
                command_id=command_id,
                unlocked_until=datetime.fromtimestamp(ack.unlocked_until, UTC),
                latency_ms=latency_ms,
            )
        if ack.result is AckResult.JAMMED:
            raise ApiError(
                409,
                "lock_jammed",
                "the lock is jammed; the door did not open",
                door_id=door.id,
                command_id=command_id,
            )
        if ack.result is AckResult.DENIED:
            raise ApiError(
                502,
                "gateway_refused",
                f"the gateway refused the token ({ack.reason})",
                door_id=door.id,
                command_id=command_id,
                reason=ack.reason,
            )
        raise ApiError(
            503,
            "device_error",
            f"the lock reported a fault ({ack.reason})",
            door_id=door.id,
            command_id=command_id,
        )

    async def _record(
        self,
        door: Door,
        user: User,
        command_id: str,
        started: float,
        *,
        decision: str,
        reason: str | None = None,
        result: str | None = None,
        grant_id: str | None = None,
    ) -> None:
        self._audit.add(
            AuditEvent(
                actor=user.id,
                action=ACTION_REQUESTED,
                door_id=door.id,
                gateway_id=door.gateway_id,
                decision=decision,
                reason=reason,
                command_id=command_id,
                result=result,
                latency_ms=_elapsed_ms(started) if result or reason else None,
                detail={"grant_id": grant_id} if grant_id else {},
            )
        )
        await self._session.commit()

    async def _complete(
        self,
        door: Door,
        user: User,
        command_id: str,
        started: float,
        result: str,
        *,
        reason: str | None = None,
    ) -> float:
        latency_ms = _elapsed_ms(started)
        self._audit.add(
            AuditEvent(
                actor=user.id,
                action=ACTION_COMPLETED,
                door_id=door.id,
                gateway_id=door.gateway_id,
                decision="allow",
                reason=reason,
                command_id=command_id,
                result=result,
                latency_ms=latency_ms,
            )
        )
        await self._session.commit()
        return latency_ms


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


_DENY_MESSAGES = {
    policy.DenyReason.NO_GRANT: "you have no access to this door",
    policy.DenyReason.NOT_YET_VALID: "your access to this door has not started yet",
    policy.DenyReason.EXPIRED: "your access to this door has expired",
    policy.DenyReason.REVOKED: "your access to this door was revoked",
}
