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
    held_open_handle: asyncio.TimerHandle | None = None
    """Pending "held open" alarm: the door was opened after an unlock and is still open."""
    held_open: bool = False
    tampered: bool = False
    battery_pct: int | None = None


class SimulatedLock:
    """Emulates the lock hardware of one gateway."""

    def __init__(
        self,
        channels: list[int],
        *,
        actuation_delay_s: float = 0.0,
        clock: Callable[[], float] = time.time,
        held_open_after_s: float | None = None,
    ) -> None:
        self.channels = {channel: ChannelState() for channel in channels}
        self.actuation_delay_s = actuation_delay_s
        self.held_open_after_s = held_open_after_s
        """A door opened after an unlock and still open this long raises ``held_open``
        (``{"active": true}``; ``{"active": false}`` when it closes). None: never."""
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
        if not state.locked and self.held_open_after_s is not None:
            if state.held_open_handle is not None:
                state.held_open_handle.cancel()
            state.held_open_handle = asyncio.get_running_loop().call_later(
                self.held_open_after_s, self._held_open, channel
            )

    def close_door(self, channel: int) -> None:
        state = self.state(channel)
        state.door_open = False
        if state.held_open_handle is not None:
            state.held_open_handle.cancel()
            state.held_open_handle = None
        if state.held_open:
            # Before door_closed, so that the last word on the door is "closed".
            state.held_open = False
            self._emit(channel, "held_open", active=False)
        self._emit(channel, "door_closed")

    def _held_open(self, channel: int) -> None:
        state = self.channels[channel]
        state.held_open_handle = None
        if state.door_open and not state.held_open:
            state.held_open = True
            self._emit(channel, "held_open", active=True, limit_s=self.held_open_after_s)

    def tamper(self, channel: int, active: bool = True) -> None:
        """The enclosure or reader of ``channel`` was tampered with (``active=False``: it is
        back to normal)."""
        self.state(channel).tampered = active
        self._emit(channel, "tamper", active=active)

    def report_state(self, channel: int) -> None:
        """Say what the lock on ``channel`` knows now (bolt, door contact, battery), as real
        locks do when their gateway boots, so that a console has something to show before
        the first door moves."""
        state = self.state(channel)
        self._emit(channel, "locked" if state.locked else "unlocked")
        self._emit(channel, "door_opened" if state.door_open else "door_closed")
        if state.battery_pct is not None:
            self._emit(channel, "battery", pct=state.battery_pct)

    def battery(self, channel: int, pct: int) -> None:
        """The lock on ``channel`` reports its battery level (percent)."""
        self.state(channel).battery_pct = pct
        self._emit(channel, "battery", pct=pct)
