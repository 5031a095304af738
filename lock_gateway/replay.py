"""Replay protection: every token id (jti) is accepted once while its token could be valid."""

import threading
from collections import deque


class ReplayGuard:
    """Bounded set of seen jtis, each kept until its token has expired (plus leeway).

    Tokens are short-lived with a fixed maximum lifetime, so expiry order is close to arrival
    order: expired entries are dropped from the front of a deque in O(1) amortized. When the
    store is full the guard refuses new tokens (fail closed) rather than forget old ones.
    """

    def __init__(self, max_entries: int = 100_000, leeway: float = 5.0) -> None:
        self._expiry: dict[str, float] = {}
        self._order: deque[tuple[float, str]] = deque()
        self._max_entries = max_entries
        self._leeway = leeway
        self._lock = threading.Lock()

    def seen(self, jti: str) -> bool:
        """True when ``jti`` was already claimed (cheap pre-check, no side effect)."""
        return jti in self._expiry

    def claim(self, jti: str, exp: float, now: float) -> bool:
        """Record ``jti``; False when it was already there or the store is full."""
        with self._lock:
            self._prune(now)
            if jti in self._expiry or len(self._expiry) >= self._max_entries:
                return False
            self._expiry[jti] = exp
            self._order.append((exp, jti))
            return True

    def _prune(self, now: float) -> None:
        horizon = now - self._leeway
        order, expiry = self._order, self._expiry
        while order and order[0][0] < horizon:
            _, jti = order.popleft()
            expiry.pop(jti, None)

    def __len__(self) -> int:
        return len(self._expiry)
