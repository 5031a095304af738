"""The gateway's estimate of its clock minus the API's, reported in every heartbeat.

Samples come from the ``iat`` of unlock tokens the gateway accepted: ``iat`` is the API's
clock when it signed, a moment before the command arrived. Only accepted tokens count, because
only their ``iat`` is authentic (a forged token could claim any time). Signed key sets and mode
messages are not used: they are retained and republished, so their ``iat`` says when they were
signed, not "now".

``iat`` is whole seconds, cut down from the API's clock, so the true signing time is on average
half a second later; a sample is ``local_now - (iat + 0.5)``. The estimate is the median of the
last ``size`` samples younger than ``max_age_s`` (a clock that NTP has corrected stops being
reported as wrong once the old samples age out); None without recent samples.

Accepted tokens are within the leeway by definition, so a clock so wrong that every token is
refused yields no sample here: the API then sees the offset from the heartbeat's ``ts`` instead
(api/gateways/tracker.py).
"""

import statistics
import time
from collections import deque
from collections.abc import Callable

IAT_RESOLUTION_S = 1.0


class ClockOffsetEstimator:
    def __init__(
        self,
        *,
        size: int = 20,
        max_age_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._samples: deque[tuple[float, float]] = deque(maxlen=size)
        self._max_age_s = max_age_s
        self._clock = clock
        self._monotonic = monotonic

    def observe(self, iat: int | float) -> None:
        """Record one authentic ``iat`` (API clock) received now."""
        offset = self._clock() - (iat + IAT_RESOLUTION_S / 2)
        self._samples.append((self._monotonic(), offset))

    def estimate(self) -> float | None:
        """Median offset of the recent samples, seconds (positive: the gateway is ahead)."""
        horizon = self._monotonic() - self._max_age_s
        recent = [offset for at, offset in self._samples if at >= horizon]
        if not recent:
            return None
        return round(statistics.median(recent), 3)
