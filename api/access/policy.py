"""The access decision: may this user open this door at this time, and if not, why not."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from api.access.models import Grant
from api.common import as_utc


class DenyReason(StrEnum):
    """Stable reason codes shown to citizens and written to the audit log."""

    NO_GRANT = "no_grant"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: DenyReason | None = None
    grant_id: str | None = None

    @classmethod
    def allow(cls, grant_id: str) -> "Decision":
        return cls(True, None, grant_id)

    @classmethod
    def deny(cls, reason: DenyReason) -> "Decision":
        return cls(False, reason)


# When several grants fail, the most useful reason wins: one that will pass later first.
_REASON_PRIORITY = (DenyReason.NOT_YET_VALID, DenyReason.EXPIRED, DenyReason.REVOKED)


def decide(grants: Iterable[Grant], now: datetime) -> Decision:
    """Allow when any grant is live at ``now``; otherwise the most helpful deny reason."""
    reasons: set[DenyReason] = set()
    for grant in grants:
        if grant.revoked_at is not None and as_utc(grant.revoked_at) <= now:
            reasons.add(DenyReason.REVOKED)
        elif grant.valid_from is not None and as_utc(grant.valid_from) > now:
            reasons.add(DenyReason.NOT_YET_VALID)
        elif grant.valid_until is not None and as_utc(grant.valid_until) <= now:
            reasons.add(DenyReason.EXPIRED)
        else:
            return Decision.allow(grant.id)
    for reason in _REASON_PRIORITY:
        if reason in reasons:
            return Decision.deny(reason)
    return Decision.deny(DenyReason.NO_GRANT)
