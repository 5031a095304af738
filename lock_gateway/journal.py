"""The gateway's event journal: every event is written to SQLite with a sequence number before
it is published, and published until the API acknowledges it.

Two pieces:

- EventJournal: the SQLite file (WAL) in the gateway's state directory, or an in-memory
  database when there is none (tests, demo). ``append`` gives each event the next sequence
  number and commits before returning, so nothing is published that is not on disk first.
  Acknowledged events are deleted; unacknowledged ones are never dropped to make room.
- JournalPublisher: per broker connection, sends the unacknowledged events in sequence order
  (a window of them in flight), applies the API's acknowledgements (EventAck on ``evack``) and
  sends again what was not acknowledged: after a reconnect, when the API reports a gap, and
  when no acknowledgement came for a while.

Sequence numbers. A new journal starts at the wall clock in milliseconds, not at 1, and its
first event is ``journal_started``. Numbers are never reused: the last one is persisted with
every append, and a journal that was lost (a new SD card, an in-memory journal after a
restart) starts above every number the old one could have used, unless the old one averaged
more than 1,000 events per second or the clock went back (a gateway needs a correct clock
anyway: it refuses every token otherwise). The API keys its exactly-once storage on
(gateway, seq), so reuse would make it drop new events as duplicates; this is why.

When full (``max_events`` unacknowledged events), the journal keeps what it has and refuses
the new event instead of dropping the oldest. The oldest unacknowledged events are the start
of the outage, often the only record of how an incident began, and a flood (a flapping
sensor, or someone provoking one) must not be able to push them out. What it could not keep
is counted by kind and time, persisted, and reported as a ``journal_overflow`` event as soon
as there is room again, so the loss is stated, never silent; the sequence stays gapless. An
event that must not happen without a record (``required=True``, e.g. an offline unlock) is
refused with JournalFullError instead, and the caller refuses the action. At 80 % the journal
appends a ``journal_near_full`` event (once, re-armed below 70 %) and the gateway reports the
fill level in every heartbeat.

Durability: WAL with ``synchronous=NORMAL``, like the replay store: a commit survives the
process crashing; the last commits before a power cut can be lost (no fsync per event).
"""

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiomqtt
import msgspec

from citykey_protocol import messages
from citykey_protocol.messages import (
    JOURNAL_NEAR_FULL_EVENT,
    JOURNAL_OVERFLOW_EVENT,
    JOURNAL_STARTED_EVENT,
    GatewayEvent,
)
from citykey_protocol.topics import GatewayTopics

log = logging.getLogger(__name__)

JOURNAL_DB_FILE = "journal.sqlite3"
"""File name of the journal inside the gateway's state directory."""
NEAR_FULL_FRACTION = 0.8
NEAR_FULL_REARM_FRACTION = 0.7
MAX_DATA_BYTES = 4096
"""Event data larger than this (as JSON) is replaced by a note saying so."""

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, "
    "door TEXT, ts REAL NOT NULL, data TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder(dict[str, Any])


class JournalError(Exception):
    """The journal could not record an event (file error, or closed)."""


class JournalFullError(JournalError):
    """The journal holds ``max_events`` unacknowledged events and drops none of them."""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One journaled event."""

    seq: int
    kind: str
    door: str | None
    ts: float
    data: dict[str, Any]


@dataclass(slots=True)
class _Overflow:
    """Events refused while full, summarised until there is room to report them."""

    count: int = 0
    first_ts: float | None = None
    last_ts: float | None = None
    kinds: Counter[str] | None = None

    def note(self, kind: str, ts: float) -> None:
        self.count += 1
        self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
        self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)
        if self.kinds is None:
            self.kinds = Counter()
        self.kinds[kind[:64]] += 1

    def as_data(self) -> dict[str, Any]:
        return {
            "dropped": self.count,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "kinds": dict(self.kinds or {}),
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> "_Overflow":
        kinds = data.get("kinds")
        return cls(
            count=int(data.get("dropped", 0)),
            first_ts=data.get("first_ts"),
            last_ts=data.get("last_ts"),
            kinds=Counter({str(k): int(v) for k, v in kinds.items()})
            if isinstance(kinds, dict)
            else None,
        )


def _encode_data(data: dict[str, Any]) -> str:
    try:
        raw = _json_encoder.encode(data)
    except (TypeError, ValueError, msgspec.EncodeError) as exc:
        raw = _json_encoder.encode({"unencodable": str(exc)[:200]})
    if len(raw) > MAX_DATA_BYTES:
        raw = _json_encoder.encode({"truncated": True, "bytes": len(raw)})
    return raw.decode()


class EventJournal:
    """Bounded, persistent, sequence-numbered event log of one gateway. Not async: every call
    is a short SQLite transaction, safe to make from a driver callback."""

    def __init__(
        self,
        path: Path | None,
        *,
        max_events: int = 50_000,
        clock: Callable[[], float] = time.time,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
    ) -> None:
        """Open (or create) the journal at ``path``; None keeps it in memory.

        Raises JournalError when the file cannot be opened or is not a journal."""
        if max_events < 2:
            raise ValueError("max_events must be at least 2")
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
        self.path = path
        self.max_events = max_events
        self._clock = clock
        self._lock = threading.Lock()
        self._closed = False
        try:
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
            # check_same_thread=False: every use of the connection is under self._lock.
            self._db = sqlite3.connect(
                ":memory:" if path is None else path, check_same_thread=False, timeout=5.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            for statement in _SCHEMA:
                self._db.execute(statement)
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            self._db.commit()
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(f"journal {path} unusable: {exc}") from exc
        self.created = not meta
        if self.created:
            first = max(1, int(clock() * 1000))
            self._first_seq, self._last_seq, self._acked = first, first - 1, first - 1
            self._near_full = False
            self._overflow = _Overflow()
            self._append_rows(
                [(JOURNAL_STARTED_EVENT, None, {"first_seq": first, "persistent": bool(path)})],
                clock(),
                initial=True,
            )
        else:
            try:
                self._first_seq = int(meta["first_seq"])
                self._last_seq = int(meta["last_seq"])
                self._acked = int(meta["acked"])
                self._near_full = meta.get("near_full") == "1"
                overflow = meta.get("overflow")
                self._overflow = (
                    _Overflow.from_data(_json_decoder.decode(overflow)) if overflow else _Overflow()
                )
            except (KeyError, ValueError, TypeError, msgspec.DecodeError) as exc:
                self._db.close()
                raise JournalError(f"journal {path} has bad metadata: {exc}") from exc

    # What it holds
    @property
    def first_seq(self) -> int:
        """Sequence number of this journal's ``journal_started`` event."""
        return self._first_seq

    @property
    def last_seq(self) -> int:
        """The last sequence number given out."""
        return self._last_seq

    @property
    def acked(self) -> int:
        """Every event up to this sequence number is acknowledged (and deleted)."""
        return self._acked

    @property
    def unacked(self) -> int:
        """Events not yet acknowledged (numbers are gapless, so no query is needed)."""
        return self._last_seq - self._acked

    @property
    def fill(self) -> float:
        """Share of the bound taken by unacknowledged events, 0..1."""
        return min(1.0, self.unacked / self.max_events)

    @property
    def near_full(self) -> bool:
        return self.unacked >= NEAR_FULL_FRACTION * self.max_events

    @property
    def dropped(self) -> int:
        """Events refused while full and not yet reported."""
        return self._overflow.count

    # Writing
    def append(
        self,
        kind: str,
        door: str | None,
        data: dict[str, Any],
        *,
        ts: float | None = None,
        required: bool = False,
    ) -> int | None:
        """Journal one event and commit; return its sequence number.

        When the journal is full or its file fails, the event is counted for the
        ``journal_overflow`` report and None is returned; with ``required`` JournalFullError
        or JournalError is raised instead, and the caller must not act without the record."""
        at = self._clock() if ts is None else ts
        with self._lock:
            if self._closed:
                if required:
                    raise JournalError("journal is closed")
                log.error("journal closed: %s event not recorded", kind)
                return None
            if self.unacked >= self.max_events:
                if required:
                    raise JournalFullError(f"{self.unacked} unacknowledged events held")
                self._note_overflow(kind, at)
                return None
            rows: list[tuple[str, str | None, dict[str, Any]]] = [(kind, door, data)]
            if not self._near_full and self.unacked + 1 >= NEAR_FULL_FRACTION * self.max_events:
                rows.append(
                    (
                        JOURNAL_NEAR_FULL_EVENT,
                        None,
                        {"unacked": self.unacked + 2, "max_events": self.max_events},
                    )
                )
            try:
                return self._append_rows(rows, at)
            except JournalError:
                if required:
                    raise
                self._overflow.note(kind, at)  # in memory: the file is what failed
                return None

    def _append_rows(
        self,
        rows: list[tuple[str, str | None, dict[str, Any]]],
        ts: float,
        *,
        initial: bool = False,
    ) -> int:
        """Insert ``rows`` with the next numbers in one transaction; the first one's number."""
        first = self._last_seq + 1
        last = self._last_seq + len(rows)
        near_full = self._near_full or any(r[0] == JOURNAL_NEAR_FULL_EVENT for r in rows)
        try:
            self._db.executemany(
                "INSERT INTO events (seq, kind, door, ts, data) VALUES (?, ?, ?, ?, ?)",
                [
                    (first + i, kind[:64], door, float(ts), _encode_data(data))
                    for i, (kind, door, data) in enumerate(rows)
                ],
            )
            meta = {"last_seq": str(last), "near_full": "1" if near_full else "0"}
            if initial:
                meta |= {"first_seq": str(self._first_seq), "acked": str(self._acked)}
            self._db.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                list(meta.items()),
            )
            self._db.commit()
        except (sqlite3.Error, ValueError, OverflowError) as exc:
            with contextlib.suppress(sqlite3.Error):
                self._db.rollback()
            log.error("journal write failed: %s", exc)
            raise JournalError(f"could not journal: {exc}") from exc
        self._last_seq = last
        self._near_full = near_full
        return first

    def _note_overflow(self, kind: str, ts: float) -> None:
        self._overflow.note(kind, ts)
        if self._overflow.count == 1:
            log.error("journal full (%d unacknowledged): events are being refused", self.unacked)
        try:
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES ('overflow', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (_json_encoder.encode(self._overflow.as_data()).decode(),),
            )
            self._db.commit()
        except sqlite3.Error as exc:
            log.error("journal could not persist its overflow count: %s", exc)

    def acknowledge(self, up_to_seq: int) -> int:
        """The API stored everything up to ``up_to_seq``: forget those events. Returns how
        many were released. Reports a pending overflow once there is room for it."""
        with self._lock:
            if self._closed:
                return 0
            if up_to_seq > self._last_seq:
                log.warning(
                    "acknowledgement up to %d is beyond the last event %d; clamped",
                    up_to_seq,
                    self._last_seq,
                )
                up_to_seq = self._last_seq
            if up_to_seq <= self._acked:
                return 0
            released = up_to_seq - self._acked
            rearm = (self._last_seq - up_to_seq) < NEAR_FULL_REARM_FRACTION * self.max_events
            try:
                self._db.execute("DELETE FROM events WHERE seq <= ?", (up_to_seq,))
                self._db.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [
                        ("acked", str(up_to_seq)),
                        ("near_full", "0" if rearm else "1" if self._near_full else "0"),
                    ],
                )
                self._db.commit()
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._db.rollback()
                log.error("journal could not release acknowledged events: %s", exc)
                return 0
            self._acked = up_to_seq
            if rearm:
                self._near_full = False
            if self._overflow.count and self.unacked < self.max_events:
                self._report_overflow()
            return released

    def _report_overflow(self) -> None:
        summary = self._overflow.as_data()
        try:
            self._append_rows([(JOURNAL_OVERFLOW_EVENT, None, summary)], self._clock())
            self._db.execute("DELETE FROM meta WHERE key = 'overflow'")
            self._db.commit()
        except (JournalError, sqlite3.Error):
            return  # stays counted; reported at the next acknowledgement
        log.warning("journal reported %d events it could not keep", summary["dropped"])
        self._overflow = _Overflow()

    # Reading
    def read(self, after_seq: int, limit: int) -> list[JournalEntry]:
        """Up to ``limit`` unacknowledged events with a number above ``after_seq``, in order."""
        with self._lock:
            if self._closed:
                return []
            rows = self._db.execute(
                "SELECT seq, kind, door, ts, data FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (max(after_seq, self._acked), limit),
            ).fetchall()
        entries = []
        for seq, kind, door, ts, data in rows:
            try:
                decoded = _json_decoder.decode(data)
            except msgspec.DecodeError:
                decoded = {"undecodable": True}
            entries.append(JournalEntry(seq, kind, door, ts, decoded))
        return entries

    def close(self) -> None:
        """Close the file; afterwards appends are refused (and counted nowhere)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()


class JournalPublisher:
    """Publishes a journal's unacknowledged events, in order, until the API acknowledges them.

    Per connection (``run``) it starts again after the last acknowledged event: QoS 1 messages
    in flight when a connection dies are lost with the clean session. At most ``window``
    events are sent and unacknowledged at a time, so an API that is down costs one window,
    not the whole journal. The journal's first event (``journal_started``) goes alone until
    it is acknowledged: the API learns where this journal's numbers begin before it sees any
    later one. When no acknowledgement comes for ``resend_s`` the publisher sends again from
    the last acknowledged event, a small probe window at first, waiting twice as long each
    time (up to ``max_resend_s``) while the API stays silent.
    """

    def __init__(
        self,
        journal: EventJournal,
        gateway_id: str,
        *,
        resend_s: float = 15.0,
        max_resend_s: float | None = None,
        window: int = 500,
        probe: int = 20,
        chunk: int = 100,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if resend_s <= 0 or window < 1 or probe < 1 or chunk < 1:
            raise ValueError("resend_s, window, probe and chunk must be positive")
        self._journal = journal
        self._gateway_id = gateway_id
        self._topic = GatewayTopics(gateway_id).events
        self._resend_s = resend_s
        self._max_resend_s = max_resend_s if max_resend_s is not None else 20 * resend_s
        self._full_window = window
        self._probe = probe
        self._chunk = chunk
        self._clock = clock
        self._wakeup = asyncio.Event()
        self._window = window
        self._interval = resend_s
        self._cursor = journal.acked
        self._rewind_to: int | None = None
        self._last_progress = clock()
        self._last_rewind: tuple[int, float] = (-1, 0.0)
        self.published = 0
        """Event messages handed to the broker (resends included)."""
        self.resends = 0
        """Times the publisher went back to the last acknowledged event."""

    def notify(self) -> None:
        """New events were journaled."""
        self._wakeup.set()

    def on_ack(self, payload: object) -> None:
        """Apply an EventAck from the API (bad payloads are logged and ignored)."""
        if not isinstance(payload, bytes | bytearray):
            return
        try:
            ack = messages.event_ack_decoder.decode(payload)
        except messages.DecodeError as exc:
            log.warning("%s: malformed event ack dropped: %s", self._gateway_id, exc)
            return
        if ack.gateway_id != self._gateway_id:
            return
        before = self._journal.acked
        self._journal.acknowledge(ack.up_to_seq)
        now = self._clock()
        if self._journal.acked > before:
            self._last_progress = now
            self._interval = self._resend_s
            self._window = self._full_window
        if ack.resend:
            # The API misses events after up_to_seq. Acks of batches it stored before our
            # resend reached it say the same thing again: go back once per watermark and
            # second, not at every one of them.
            watermark = self._journal.acked
            last_seq, last_at = self._last_rewind
            if watermark != last_seq or now - last_at > 1.0:
                self._rewind(watermark, now)
        self._wakeup.set()

    def _rewind(self, to_seq: int, now: float) -> None:
        self._rewind_to = to_seq
        self._last_rewind = (to_seq, now)
        self._last_progress = now
        self.resends += 1

    async def run(self, client: aiomqtt.Client) -> None:
        """Publish over ``client`` until cancelled (the daemon cancels it with the
        connection)."""
        self._cursor = self._journal.acked
        self._rewind_to = None
        self._window = self._full_window
        self._interval = self._resend_s
        self._last_progress = self._clock()
        while True:
            try:
                await self._serve(client)
            except aiomqtt.MqttError as exc:
                # A publish that failed or timed out: its PUBACK may never come. Go back to
                # the last acknowledged event and carry on; if the connection is gone, the
                # daemon cancels this task when it notices.
                log.info("%s: journal publish failed (%s); resending", self._gateway_id, exc)
                self._rewind(self._journal.acked, self._clock())
                await asyncio.sleep(1.0)
            except Exception:
                # A bug here must not end event delivery for the rest of the connection.
                log.exception("%s: journal publisher failed; restarting", self._gateway_id)
                await asyncio.sleep(1.0)

    async def _serve(self, client: aiomqtt.Client) -> None:
        journal = self._journal
        while True:
            self._wakeup.clear()
            acked = journal.acked
            if self._rewind_to is not None:
                self._cursor = self._rewind_to
                self._rewind_to = None
            self._cursor = max(self._cursor, acked)
            window = 1 if acked < journal.first_seq else self._window
            budget = window - (self._cursor - acked)
            if budget > 0 and journal.last_seq > self._cursor:
                entries = journal.read(self._cursor, min(budget, self._chunk))
                if entries:
                    if self._cursor == acked:
                        self._last_progress = self._clock()  # nothing was outstanding
                    await self._send(client, entries)
                    self._cursor = entries[-1].seq
                    continue
            timeout = None
            if self._cursor > journal.acked:
                timeout = max(0.0, self._last_progress + self._interval - self._clock())
            try:
                async with asyncio.timeout(timeout):
                    await self._wakeup.wait()
            except TimeoutError:
                # Nothing acknowledged for a whole interval: the API may be down, or missed
                # what was sent. Probe again from the last acknowledged event.
                log.info(
                    "%s: no event ack for %.0fs; resending after %d",
                    self._gateway_id,
                    self._interval,
                    journal.acked,
                )
                self._rewind(journal.acked, self._clock())
                self._window = min(self._probe, self._full_window)
                self._interval = min(self._interval * 2, self._max_resend_s)

    async def _send(self, client: aiomqtt.Client, entries: list[JournalEntry]) -> None:
        payloads = [
            messages.encode(
                GatewayEvent(
                    gateway_id=self._gateway_id,
                    kind=e.kind,
                    ts=e.ts,
                    door=e.door,
                    data=e.data,
                    seq=e.seq,
                )
            )
            for e in entries
        ]
        # Started in order, so the broker receives them in sequence order; awaited together,
        # so a chunk costs one round trip, not one per event.
        await asyncio.gather(
            *(client.publish(self._topic, p, qos=1, timeout=10.0) for p in payloads)
        )
        self.published += len(payloads)
