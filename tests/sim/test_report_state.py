"""Simulated locks report bolt, door contact and battery on request (demo consoles)."""

from firmware_sim.lock import SimulatedLock
from lock_gateway.driver import LockEvent


def test_a_lock_reports_what_it_knows() -> None:
    lock = SimulatedLock([1, 2], clock=lambda: 1_000.0)
    seen: list[LockEvent] = []
    lock.subscribe(seen.append)
    lock.state(2).door_open = True
    lock.state(2).battery_pct = 71
    lock.report_state(1)
    lock.report_state(2)
    assert [(e.channel, e.kind, e.data) for e in seen] == [
        (1, "locked", {}),
        (1, "door_closed", {}),
        (2, "locked", {}),
        (2, "door_opened", {}),
        (2, "battery", {"pct": 71}),
    ]
