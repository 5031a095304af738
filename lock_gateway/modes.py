"""Gateway modes: lockdown and doors held unlocked (passage mode), from signed mode messages.

The pieces, from the wire inwards:

- ModeVerifier: the message is a JWS signed by a trusted key, typed as a mode message, from
  our issuer, for this gateway, with well-typed claims. PyJWT does the JWS work: a mode message
  arrives a few times a day, so clarity wins over the hand-tuned path unlock tokens take.
- ModeState and ``plan``: the state machine, pure. ``plan(old, new, doors, now)`` says what the
  hardware must do to go from one mode to the next (or, from the empty mode, to re-establish a
  mode after a restart).
- ModeStore: the applied mode on disk (write, fsync, rename), so a restart keeps a lockdown and
  a passage window even when the retained message is gone from the broker.
- ModeController: ties them to the driver and guards unlocks. The daemon only routes messages
  to it, asks it before actuating and reports its version in the status.

Ordering is by version only: a message must carry a higher ``ver`` than the mode held, so a
replayed or reordered older message is refused, and the same message arriving again (the
retained copy, at every reconnect) is recognised and ignored.
"""

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec

from citykey_protocol.codes import ModeRejection
from citykey_protocol.modes import MAX_MODE_BYTES, MODE_TOKEN_TYPE, ModeClaims, claims_from_dict
from lock_gateway.driver import LockDriver, LockDriverError
from lock_gateway.keys import KeySet
from lock_gateway.signed_message import SignedMessageError, decode_signed_message

log = logging.getLogger(__name__)

MODE_STATE_FILE = "mode.json"
"""Name of the applied mode's file in the gateway's state directory."""
_STORE_FORMAT = 1


class ModeRejectedError(Exception):
    """A mode message was refused; the gateway keeps its mode. ``reason`` is a stable code."""

    def __init__(self, reason: ModeRejection, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


class GatewayLockedDownError(Exception):
    """The gateway is in lockdown: no door may be unlocked."""


class ModeStoreError(Exception):
    """The stored mode exists but cannot be read."""


@dataclass(frozen=True, slots=True)
class ModeState:
    """The mode a gateway applies. Version 0 with nothing set is the mode of a new gateway."""

    version: int = 0
    lockdown: bool = False
    holds: Mapping[str, float] = field(default_factory=dict)
    """Door id -> Unix time its hold ends. Always empty in lockdown."""

    @classmethod
    def from_claims(cls, claims: ModeClaims, doors: Mapping[str, int]) -> "ModeState":
        """The mode a verified message asks for, limited to this gateway's doors (a door the
        API knows but this gateway's configuration does not is ignored, not fatal: the rest of
        the message, above all a lockdown, still applies)."""
        if claims.lockdown:
            return cls(claims.ver, True, {})
        holds = {h.door: float(h.until) for h in claims.holds if h.door in doors}
        return cls(claims.ver, False, holds)

    def held_until(self, door: str, now: float) -> float | None:
        """When the hold on ``door`` ends, if it is held now."""
        until = self.holds.get(door)
        return until if until is not None and until > now else None

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "lockdown": self.lockdown, "holds": dict(self.holds)}


@dataclass(frozen=True, slots=True)
class Actuation:
    """One thing the hardware must do: hold ``door`` unlocked until ``until``, or lock it."""

    action: Literal["hold", "lock"]
    door: str
    channel: int
    until: float | None = None


def plan(old: ModeState, new: ModeState, doors: Mapping[str, int], now: float) -> list[Actuation]:
    """What takes the hardware from mode ``old`` to mode ``new`` at ``now``.

    Lockdown locks every door (also doors a citizen has just opened). Otherwise each hold that
    is new or changed is (re)applied, each hold that has ended or was dropped is relocked, and
    an unchanged hold is left alone (the driver's own timer ends it). From the empty mode this
    re-establishes ``new`` after a restart: holds still running are held again until their end,
    ended ones relocked.
    """
    if new.lockdown:
        return [Actuation("lock", door, channel) for door, channel in sorted(doors.items())]
    actions: list[Actuation] = []
    for door, until in sorted(new.holds.items()):
        channel = doors.get(door)
        if channel is None:
            continue  # stored before this door left the gateway's configuration
        if until <= now:
            actions.append(Actuation("lock", door, channel))
        elif old.lockdown or old.holds.get(door) != until:
            actions.append(Actuation("hold", door, channel, until))
    actions.extend(
        Actuation("lock", door, doors[door])
        for door in sorted(old.holds)
        if door not in new.holds and door in doors
    )
    return actions


class ModeVerifier:
    """Checks that a mode message is authentic and meant for this gateway."""

    def __init__(self, keys: KeySet, issuer: str, gateway_id: str) -> None:
        self._keys = keys
        self._issuer = issuer
        self._gateway_id = gateway_id

    def verify(self, payload: bytes) -> ModeClaims:
        """The claims of an authentic mode message; raise ModeRejectedError otherwise."""
        try:
            decoded = decode_signed_message(
                payload,
                keys=self._keys,
                token_type=MODE_TOKEN_TYPE,
                max_bytes=MAX_MODE_BYTES,
                issuer=self._issuer,
                audience=self._gateway_id,
            )
        except SignedMessageError as exc:
            raise ModeRejectedError(exc.reason, exc.detail) from exc
        try:
            return claims_from_dict(decoded)
        except msgspec.ValidationError as exc:
            raise ModeRejectedError(ModeRejection.BAD_CLAIMS, _short(exc)) from exc


class ModeStore:
    """The applied mode in a JSON file; no file (``path`` None) keeps it in memory only."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def load(self) -> tuple[ModeState, str | None] | None:
        """The stored mode and the message it came from; None when nothing is stored.

        Raises ModeStoreError when a file is there but unreadable. It is not verified again:
        the file is as trusted as the key cache beside it, and a lockdown must survive the
        rotation of the key that signed it.
        """
        if self.path is None:
            return None
        try:
            document = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ModeStoreError(f"{self.path}: {exc}") from exc
        try:
            if document["format"] != _STORE_FORMAT:
                raise ValueError(f"unknown format {document['format']!r}")
            holds = {str(door): float(until) for door, until in document["holds"].items()}
            state = ModeState(int(document["version"]), bool(document["lockdown"]), holds)
            token = document.get("token")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModeStoreError(f"{self.path}: {exc}") from exc
        return state, token if isinstance(token, str) else None

    def save(self, state: ModeState, token: str) -> None:
        """Write atomically and durably (temporary file, fsync, rename): after a crash the
        file holds the old mode or the new one, never half of either."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        document = {"format": _STORE_FORMAT, **state.to_json(), "token": token}
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w") as handle:
            json.dump(document, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)


class ModeController:
    """The gateway's mode: verifies and applies mode messages, keeps them across restarts, and
    guards every unlock against lockdown and against cutting a hold short."""

    def __init__(
        self,
        *,
        gateway_id: str,
        issuer: str,
        doors: Mapping[str, int],
        driver: LockDriver,
        keys: KeySet,
        state_path: Path | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._gateway_id = gateway_id
        self._doors = dict(doors)
        self._driver = driver
        self._verifier = ModeVerifier(keys, issuer, gateway_id)
        self._store = ModeStore(state_path)
        self._clock = clock
        self._state = ModeState()
        self._token: str | None = None
        # One mode change at a time, in arrival order (asyncio.Lock is FIFO).
        self._lock = asyncio.Lock()

    @property
    def state(self) -> ModeState:
        return self._state

    @property
    def version(self) -> int:
        """Version of the mode applied (0: none yet); reported in the status as the ack."""
        return self._state.version

    @property
    def lockdown(self) -> bool:
        return self._state.lockdown

    def held_until(self, door: str) -> float | None:
        """When the hold on ``door`` ends, if passage mode holds it unlocked now."""
        return self._state.held_until(door, self._clock())

    async def restore(self) -> None:
        """Load the stored mode and re-establish it on the hardware (call once, at start).

        An unreadable store fails closed: the gateway starts in lockdown (version 0, so the
        first authentic message replaces it), because it cannot know whether it was in one.
        """
        async with self._lock:
            try:
                stored = self._store.load()
            except ModeStoreError as exc:
                log.error("%s: stored mode unreadable, starting in lockdown: %s", self._gid, exc)
                stored = ModeState(0, True, {}), None
            if stored is None:
                return
            state, self._token = stored
            self._state = state
            log.info(
                "%s: restored mode version %d (lockdown=%s, %d holds)",
                self._gid,
                state.version,
                state.lockdown,
                len(state.holds),
            )
            await self._actuate(plan(ModeState(), state, self._doors, self._clock()))

    async def receive(self, payload: bytes) -> bool:
        """Verify and apply one mode message. True when applied; False when it is the mode
        already held (the retained copy again). Raises ModeRejectedError when refused."""
        claims = self._verifier.verify(payload)
        token = payload.decode("ascii")
        async with self._lock:
            current = self._state
            if claims.ver == current.version and token == self._token:
                return False
            if claims.ver <= current.version:
                raise ModeRejectedError(
                    ModeRejection.STALE_VERSION, f"{claims.ver} <= {current.version}"
                )
            new = ModeState.from_claims(claims, self._doors)
            unknown = sorted({h.door for h in claims.holds} - set(self._doors))
            if unknown:
                log.warning("%s: mode %d names unknown doors %s", self._gid, claims.ver, unknown)
            self._state, self._token = new, token
            try:
                self._store.save(new, token)
            except OSError as exc:
                # The mode still takes effect now; only a restart could lose it.
                log.error("%s: could not store mode %d: %s", self._gid, new.version, exc)
            log.info(
                "%s: applying mode %d (lockdown=%s, holds=%s)",
                self._gid,
                new.version,
                new.lockdown,
                dict(new.holds),
            )
            await self._actuate(plan(current, new, self._doors, self._clock()))
            return True

    async def unlock(self, door: str, channel: int, seconds: float) -> float:
        """Unlock ``door`` for ``seconds`` unless in lockdown; return when it relocks.

        A door held open longer than asked is left alone (a plain unlock would replace the
        hold's relock with an earlier one). Raises GatewayLockedDownError in lockdown, and the
        driver's errors.
        """
        if self._state.lockdown:
            raise GatewayLockedDownError
        held = self.held_until(door)
        if held is not None and held >= self._clock() + seconds:
            return held
        until = await self._driver.unlock(channel, seconds)
        if self._state.lockdown:
            # A lockdown was applied while the bolt moved: undo, and refuse.
            with contextlib.suppress(LockDriverError):
                await self._driver.lock(channel)
            raise GatewayLockedDownError
        return until

    async def _actuate(self, actions: list[Actuation]) -> None:
        for action in actions:
            try:
                if action.action == "hold":
                    assert action.until is not None
                    await self._driver.hold_unlocked(action.channel, action.until)
                else:
                    await self._driver.lock(action.channel)
            except LockDriverError as exc:
                # One faulty door must not keep the others from locking or holding.
                log.error("%s: %s of %s failed: %s", self._gid, action.action, action.door, exc)

    @property
    def _gid(self) -> str:
        return self._gateway_id


def _short(exc: BaseException) -> str:
    return str(exc)[:200]
