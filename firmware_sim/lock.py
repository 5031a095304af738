"""A simulated multi-channel lock: locked -> unlocked for N seconds -> relocked, a door contact,
configurable actuation delay and jams. Implements lock_gateway.driver.LockDriver."""

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lock_gateway.driver import LockDriverError, LockEvent, LockEventListener, LockJammedError


@dataclass(slots=True)
class ChannelState:
    """The emulated hardware state of one door."""

    locked: bool = True
    door_open: bool = False
    jammed: bool = False
    unlocked_until: float | None = None
    relock_handle: asyncio.TimerHandle | None = None
    held_until: float | None = None
    """Set while the channel is held unlocked (passage mode) until that Unix time."""
    unlock_count: int = 0
    history: list[tuple[float, str]] = field(default_factory=list)


class SimulatedLock:
    """Emulates the lock hardware of one gateway."""

    def __init__(
        self,
        channels: list[int],
        *,
        actuation_delay_s: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.channels = {channel: ChannelState() for channel in channels}
        self.actuation_delay_s = actuation_delay_s
        self._clock = clock
        self._listeners: list[LockEventListener] = []

    def subscribe(self, listener: LockEventListener) -> None:
        self._listeners.append(listener)

    def _emit(self, channel: int, kind: str, **data: object) -> None:
        now = self._clock()
        self.channels[channel].history.append((now, kind))
        event = LockEvent(channel=channel, kind=kind, ts=now, data=dict(data))
        for listener in self._listeners:
            listener(event)

    def state(self, channel: int) -> ChannelState:
        try:
            return self.channels[channel]
        except KeyError:
            raise LockDriverError(f"no such channel {channel}") from None

    async def unlock(self, channel: int, seconds: float) -> float:
        """Release the bolt; it relocks by itself after ``seconds``."""
        state = self.state(channel)
        if self.actuation_delay_s > 0:
            await asyncio.sleep(self.actuation_delay_s)
        if state.jammed:
            self._emit(channel, "jammed")
            raise LockJammedError(f"channel {channel} is jammed")
        if state.relock_handle is not None:
            state.relock_handle.cancel()
        state.locked = False
        state.held_until = None  # a plain unlock replaces a hold's relock with its own
        state.unlock_count += 1
        state.unlocked_until = self._clock() + seconds
        state.relock_handle = asyncio.get_running_loop().call_later(seconds, self._relock, channel)
        self._emit(channel, "unlocked", until=state.unlocked_until)
        return state.unlocked_until

    async def hold_unlocked(self, channel: int, until: float) -> None:
        """Release the bolt and keep it released until Unix time ``until`` (passage mode),
        then relock by itself. An ``until`` already past relocks now."""
        state = self.state(channel)
        if until <= self._clock():
            await self.lock(channel)
            return
        if not state.locked and state.held_until == until:
            return  # already held until then: nothing moves, nothing to report
        if self.actuation_delay_s > 0:
            await asyncio.sleep(self.actuation_delay_s)
        if state.jammed:
            self._emit(channel, "jammed")
            raise LockJammedError(f"channel {channel} is jammed")
        if state.relock_handle is not None:
            state.relock_handle.cancel()
        state.locked = False
        state.unlocked_until = until
        state.held_until = until
        delay = max(until - self._clock(), 0.0)
        state.relock_handle = asyncio.get_running_loop().call_later(delay, self._relock, channel)
        self._emit(channel, "unlocked", until=until, hold=True)

    async def lock(self, channel: int) -> None:
        """Relock now, cancelling any pending relock; a locked channel stays as it is."""
        state = self.state(channel)
        if not state.locked and state.jammed:
            self._emit(channel, "jammed")
            raise LockJammedError(f"channel {channel} is jammed")
        if state.relock_handle is not None:
            state.relock_handle.cancel()
            state.relock_handle = None
        if state.locked:
            state.held_until = None
            state.unlocked_until = None
            return
        self._relock(channel)

    def _relock(self, channel: int) -> None:
        state = self.channels[channel]
        state.locked = True
        state.unlocked_until = None
        state.held_until = None
        state.relock_handle = None
        self._emit(channel, "locked")

    # Physical world, driven by tests and the demo.
    def jam(self, channel: int, jammed: bool = True) -> None:
        self.state(channel).jammed = jammed

    def open_door(self, channel: int) -> None:
        state = self.state(channel)
        state.door_open = True
        self._emit(channel, "door_opened" if not state.locked else "door_forced_open")

    def close_door(self, channel: int) -> None:
        self.state(channel).door_open = False
        self._emit(channel, "door_closed")
