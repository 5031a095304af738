"""The rate-limit arithmetic: a sliding window log, pure and clock-free.

"``count`` per ``window_s``" means exactly that: at most ``count`` events in any interval of
``window_s`` seconds. A key's state is the list of its admitted events still inside the
window (never more than ``count`` of them), so it fits in one row and one UPSERT
(api/limits/store.py does the same in SQL). A refused event is not recorded: hammering a
limited key does not extend its wait. Retry-After is when the oldest event that blocks the
next one leaves the window.

Why not a token bucket or GCRA (one number per key): with a burst of ``count`` they admit up
to 2 x ``count`` - 1 events in some ``window_s`` interval (a burst, then the refill), which
is not what "10 per minute" promises. Why not fixed windows: the same 2 x at a boundary.
"""

import math
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``count`` events in any ``window_s`` seconds."""

    count: int
    window_s: float

    def __post_init__(self) -> None:
        if self.count < 1 or self.window_s <= 0:
            raise ValueError("a limit needs count >= 1 and window_s > 0")


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after_s: float
    """0 when allowed; otherwise how long until one more event would be admitted."""
    next_after_s: float = 0.0
    """After an admitted event: how long until the *next* one would be (0: at once). Lets a
    caller refuse the request after the N-th failure without another round trip."""

    @property
    def retry_after_header(self) -> str:
        """Whole seconds for the Retry-After header, rounded up and at least 1."""
        return str(max(1, math.ceil(self.retry_after_s)))


def live_events(events: Iterable[float], now: float, limit: Limit) -> list[float]:
    """The events still inside the window at ``now``, oldest first."""
    return sorted(e for e in events if e > now - limit.window_s)


def wait_for_room(live: list[float], now: float, limit: Limit) -> float:
    """How long after ``now`` one more event fits, given the ``live`` events (sorted)."""
    if len(live) < limit.count:
        return 0.0
    return max(live[-limit.count] + limit.window_s - now, 0.0)


def admit(events: Iterable[float], now: float, limit: Limit) -> tuple[Verdict, list[float] | None]:
    """One event at ``now`` against a key's recorded ``events``.

    Returns the verdict and the key's new events (None when refused: nothing changes)."""
    live = live_events(events, now, limit)
    if len(live) < limit.count:
        recorded = sorted([*live, now])
        return Verdict(True, 0.0, wait_for_room(recorded, now, limit)), recorded
    return Verdict(False, wait_for_room(live, now, limit)), None
