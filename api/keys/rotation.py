"""The rotation steps behind ``citykey keys ...``: the ring's lifecycle (api/keys/keyring.py)
guarded by what the gateways have acknowledged (api/keys/fleet.py).

- activate: only once every online gateway holds the key set that announced the next key
  (offline gateways catch up later: the sets after activation are signed by the retiring key,
  which they trust);
- retire: only once the key's last token has expired (``retiring_since`` + token lifetime +
  margin) and every gateway the broker knows of, offline ones included, holds a set that trusts
  the key's successor. Retiring earlier would strand a gateway that was offline throughout: it
  would trust neither the new tokens nor the sets that could teach it the new key.

``broker=None`` skips the fleet checks (``--force``).
"""

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from api.keys.fleet import FleetMember, describe, fleet_snapshot, lagging
from api.keys.keyring import (
    RETIRE_MARGIN_S,
    KeyEntry,
    KeyRingError,
    KeyState,
    activate,
    add_next,
    read_ring_file,
    retire,
)
from citykey_protocol.transport import BrokerAddress

Echo = Callable[[str], None]


class RotationBlockedError(KeyRingError):
    """Gateways have not acknowledged the key set this step needs."""

    def __init__(self, step: str, version: int, members: list[FleetMember]) -> None:
        super().__init__(
            f"not {step}: {len(members)} gateway(s) do not hold key set v{version} yet: "
            f"{describe(members)} (wait, or use --force)"
        )
        self.members = members


@dataclass(frozen=True, slots=True)
class FleetCheck:
    """How to check the fleet before a step (None in place of it: do not check)."""

    broker: BrokerAddress
    wait_s: float = 0.0
    poll_s: float = 2.0


def _when(value: float | None) -> str:
    if value is None:
        return "-"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ring_report(key_dir: Path, max_token_lifetime_s: float, now: float | None = None) -> str:
    """The ring, one line per key, for ``citykey keys status``."""
    now = time.time() if now is None else now
    ring = read_ring_file(key_dir)
    lines = [f"key ring {key_dir}: generation {ring.generation} (= key set ver)"]
    for entry in ring.entries:
        line = f"  {entry.kid}  {entry.state.value:<8}  created {_when(entry.created_at)}"
        if entry.state is KeyState.NEXT:
            line += f"  published in v{entry.published_generation}"
        if entry.state is KeyState.ACTIVE:
            line += f"  active since {_when(entry.activated_at)}"
        if entry.state is KeyState.RETIRING:
            after = entry.retire_after(max_token_lifetime_s)
            due = "now" if after < now else _when(after)
            line += f"  retiring since {_when(entry.retiring_since)}, may retire {due}"
        if entry.state is KeyState.RETIRED:
            line += f"  retired {_when(entry.retired_at)}"
        lines.append(line)
    return "\n".join(lines)


async def require_fleet(
    check: FleetCheck | None, step: str, version: int, *, include_offline: bool, echo: Echo
) -> None:
    """Wait (up to ``check.wait_s``) until the gateways hold key set ``version``; raise
    RotationBlockedError when some still do not."""
    if check is None:
        echo(f"fleet check skipped: not verifying that gateways hold key set v{version}")
        return
    deadline = time.monotonic() + check.wait_s
    while True:
        fleet = await fleet_snapshot(check.broker)
        behind = lagging(fleet.values(), version, include_offline=include_offline)
        if not behind:
            echo(f"{len(fleet)} gateway(s) known; all that must hold key set v{version} do")
            return
        if time.monotonic() >= deadline:
            raise RotationBlockedError(step, version, behind)
        echo(f"waiting for {len(behind)} gateway(s) to take key set v{version} ...")
        await asyncio.sleep(check.poll_s)


async def activate_checked(
    key_dir: Path, check: FleetCheck | None, echo: Echo
) -> tuple[KeyEntry, KeyEntry]:
    """Activate the next key once the online gateways trust it."""
    ring = read_ring_file(key_dir)
    pending = ring.in_state(KeyState.NEXT)
    if not pending:
        raise KeyRingError("no next key to activate; add one with 'citykey keys add-next'")
    version = pending[0].published_generation or ring.generation
    await require_fleet(check, "activating", version, include_offline=False, echo=echo)
    active, retiring = activate(key_dir)
    echo(f"key {active.kid} is active; {retiring.kid} is retiring")
    return active, retiring


async def retire_checked(
    key_dir: Path,
    check: FleetCheck | None,
    echo: Echo,
    *,
    max_token_lifetime_s: float,
    margin_s: float = RETIRE_MARGIN_S,
    only: set[str] | None = None,
    now: float | None = None,
) -> list[KeyEntry]:
    """Retire the retiring keys that are due, once every gateway trusts their successors."""
    now = time.time() if now is None else now
    ring = read_ring_file(key_dir)
    due = [
        entry
        for entry in ring.in_state(KeyState.RETIRING)
        if entry.retire_after(max_token_lifetime_s, margin_s) < now
        and (only is None or entry.kid in only)
    ]
    if not due:
        echo("no retiring key is due yet")
        return []
    version = max(entry.retiring_generation or ring.generation for entry in due)
    await require_fleet(check, "retiring", version, include_offline=True, echo=echo)
    retired = retire(
        key_dir,
        max_token_lifetime_s=max_token_lifetime_s,
        margin_s=margin_s,
        now=now,
        only={entry.kid for entry in due},
    )
    for entry in retired:
        echo(f"key {entry.kid} retired (no longer published; private key deleted)")
    return retired


async def rotate(
    key_dir: Path,
    echo: Echo,
    *,
    publish_check: FleetCheck | None,
    retire_check: FleetCheck | None,
    retire_keys: bool,
    max_token_lifetime_s: float,
    margin_s: float = RETIRE_MARGIN_S,
) -> None:
    """add-next (or resume with the next key already there), activate once the fleet trusts
    it, and, with ``retire_keys``, retire the old key once its last token has expired and the
    fleet trusts its successor."""
    ring = read_ring_file(key_dir)
    pending = ring.in_state(KeyState.NEXT)
    if pending:
        echo(f"resuming: key {pending[0].kid} is already next")
    else:
        entry = add_next(key_dir)
        echo(f"key {entry.kid} added as next (key set v{entry.published_generation})")
    _, retiring = await activate_checked(key_dir, publish_check, echo)
    if not retire_keys:
        after = _when(retiring.retire_after(max_token_lifetime_s, margin_s))
        echo(f"run 'citykey keys retire' after {after}")
        return
    wait_s = retiring.retire_after(max_token_lifetime_s, margin_s) - time.time()
    if wait_s > 0:
        echo(f"waiting {wait_s:.0f} s for the last token signed by {retiring.kid} to expire ...")
        await asyncio.sleep(wait_s + 0.1)
    await retire_checked(
        key_dir,
        retire_check,
        echo,
        max_token_lifetime_s=max_token_lifetime_s,
        margin_s=margin_s,
        only={retiring.kid},
    )
