"""The lock driver interface. The simulated lock (firmware_sim) is the first implementation;
a GPIO/relay driver implements the same protocol."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


class LockDriverError(Exception):
    """The driver could not carry out an operation (hardware or bus fault)."""


class LockJammedError(LockDriverError):
    """The bolt did not move: the lock is jammed."""


@dataclass(frozen=True, slots=True)
class LockEvent:
    """Something the hardware reports on its own: relocked, door opened, forced open, ..."""

    channel: int
    kind: str
    ts: float
    data: dict[str, Any] = field(default_factory=dict)


LockEventListener = Callable[[LockEvent], None]


class LockDriver(Protocol):
    """What the gateway needs from lock hardware, one channel per door."""

    async def unlock(self, channel: int, seconds: float) -> float:
        """Release the lock on ``channel`` for ``seconds``; return the Unix time it relocks.

        Raises LockJammedError when the bolt does not move, LockDriverError on other faults.
        The driver relocks by itself; the gateway does not have to be alive for that.
        """
        ...

    async def hold_unlocked(self, channel: int, until: float) -> None:
        """Hold the lock on ``channel`` released until Unix time ``until``, then relock it.

        Passage mode. Replaces any relock already pending on the channel (a later or earlier
        one); an ``until`` already past relocks now. Like ``unlock``, the relock at ``until``
        is the driver's own job, so it happens on time even if the gateway is busy.
        Raises LockJammedError when the bolt does not move, LockDriverError on other faults.
        """
        ...

    async def lock(self, channel: int) -> None:
        """Relock ``channel`` now and cancel any pending relock (end of a hold, lockdown).

        Locking a locked channel is not an error. Raises LockDriverError on faults.
        """
        ...

    def subscribe(self, listener: LockEventListener) -> None:
        """Call ``listener`` for every event the hardware reports."""
        ...
