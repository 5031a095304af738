"""How long an offline token may live: no longer than the access that justified it.

An online unlock is decided at the instant it is asked for. An offline token is used later,
when the API cannot be asked, so it must not outlive the decision: a token issued at 21:59 for
a library that closes to the citizen at 22:00 must stop working at 22:00, not 15 minutes later.
``allowed_until`` finds the last instant, up to a limit, until which the policy allows without
a break, by stepping through the policy (a pure function) and bisecting the step where it
first refuses. Granularity: one second; a closing and reopening within one step (30 s) would
go unnoticed, which opening hours written in minutes cannot produce.
"""

from collections.abc import Sequence
from datetime import datetime, timedelta

from api.access import policy

STEP = timedelta(seconds=30)
RESOLUTION = timedelta(seconds=1)


def allowed_until(
    door: policy.DoorFacts,
    rules: Sequence[policy.AccessRule],
    now: datetime,
    limit: datetime,
) -> datetime | None:
    """The last instant in [now, limit] up to which ``rules`` allow the door continuously
    (``limit`` when they allow throughout); None when they do not allow at ``now``."""
    if not policy.decide(door, rules, now).allowed:
        return None
    good = now
    while good < limit:
        probe = min(good + STEP, limit)
        if policy.decide(door, rules, probe).allowed:
            good = probe
            continue
        bad = probe
        while bad - good > RESOLUTION:
            middle = good + (bad - good) / 2
            if policy.decide(door, rules, middle).allowed:
                good = middle
            else:
                bad = middle
        return good
    return limit
