"""Keeps a running API's key ring in step with ``keyring.json`` and publishes its key set.

The operator changes the ring with ``citykey keys ...`` (api/keys/keyring.py), which replaces
``keyring.json`` atomically. Each API process notices within ``interval_s`` (it compares the
file's mtime, size and inode; SIGHUP makes it look at once), loads the new generation and swaps
it into the one KeyRing object everybody signs with. Then it publishes the signed key set,
retained, on ``citykey/v1/keys``. It publishes at start-up too, retries until the broker takes
it, and republishes every ``republish_s`` so that a broker that lost its retained messages
(restarted without persistence) has the set again. Republishing the same generation sends the
same bytes, which gateways ignore quietly.

A ring that does not load (a hand-edited file, a key file missing) is logged and skipped: the
process keeps signing with the last good ring and tries again when the file changes.
"""

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from api.background import cancel_and_wait
from api.keys.keyring import RING_FILE, KeyRing, KeyRingError
from api.relay.mqtt import MqttRelay, RelayError
from citykey_protocol.topics import KEYSET_TOPIC

log = logging.getLogger(__name__)

_FileSignature = tuple[int, int, int] | None

# Every watcher of this process, woken together by one SIGHUP handler.
_watchers: set["KeyRingWatcher"] = set()


def _on_sighup() -> None:
    for watcher in list(_watchers):
        watcher.wake()


class KeyRingWatcher:
    """Reloads ``keyring`` when ``key_dir/keyring.json`` changes and publishes its key set."""

    def __init__(
        self,
        keyring: KeyRing,
        key_dir: Path,
        relay: MqttRelay,
        issuer: str,
        *,
        interval_s: float = 1.0,
        republish_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keyring = keyring
        self._path = key_dir / RING_FILE
        self._key_dir = key_dir
        self._relay = relay
        self._issuer = issuer
        self._interval_s = interval_s
        self._republish_s = republish_s
        self._clock = clock
        self._signature: _FileSignature = None
        self._published: int | None = None
        """Generation whose key set the broker has taken (None: none yet)."""
        self._published_at = 0.0
        self._warned: int | None = None
        """Generation whose failed publication was logged (once, not at every retry)."""
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.reloads = 0

    async def start(self) -> "KeyRingWatcher":
        """Catch up with the file, publish, and watch from now on."""
        await self.check(force=True)
        await self.publish()
        self._task = asyncio.create_task(self._run(), name="keyring-watcher")
        if not _watchers:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                # Not the main thread, or no signals on this platform: polling alone will do.
                asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, _on_sighup)
        _watchers.add(self)
        return self

    async def stop(self) -> None:
        _watchers.discard(self)
        if not _watchers:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        await cancel_and_wait(self._task)

    def wake(self) -> None:
        """Look at the file now (SIGHUP)."""
        self._wake.set()

    async def check(self, *, force: bool = False) -> bool:
        """Reload the ring if the file changed (or ``force``); publish a new generation.
        True when the ring in use changed."""
        signature = self._file_signature()
        if not force and signature == self._signature:
            return False
        try:
            fresh = await asyncio.to_thread(KeyRing.load, self._key_dir, generate=False)
        except KeyRingError as exc:
            log.error(
                "key ring not reloaded, still signing with generation %d: %s",
                self.keyring.generation,
                exc,
            )
            return False
        # Remembered only after a good load, so a failed one is retried on the next change.
        self._signature = signature
        if _layout(fresh) == _layout(self.keyring):
            return False
        old = self.keyring.generation
        self.keyring.update(fresh)
        self.reloads += 1
        log.info(
            "key ring reloaded: generation %d -> %d, active key %s",
            old,
            fresh.generation,
            fresh.active.kid,
        )
        await self.publish()
        return True

    async def publish(self) -> bool:
        """Hand the current key set to the broker, retained; False (and retried later) when
        the broker is not reachable now."""
        generation = self.keyring.generation
        payload = self.keyring.signed_keyset(self._issuer).encode("ascii")
        try:
            await self._relay.publish_retained(KEYSET_TOPIC, payload)
        except RelayError as exc:
            if self._warned != generation:
                log.warning("key set %d not published yet (retrying): %s", generation, exc)
                self._warned = generation
            return False
        self._published = generation
        self._published_at = self._clock()
        return True

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.check()
                stale = self._published != self.keyring.generation
                if stale or self._clock() - self._published_at >= self._republish_s:
                    await self.publish()
            except Exception:  # the watcher must outlive any one bad look at the file
                log.exception("key ring watcher failed; retrying")

    def _file_signature(self) -> _FileSignature:
        try:
            stat = os.stat(self._path)
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


def _layout(ring: KeyRing) -> tuple[int, tuple[tuple[str, str], ...]]:
    return ring.generation, tuple((k.kid, k.state.value) for k in ring.keys)
