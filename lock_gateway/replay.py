"""Replay protection: every token id (jti) is accepted once while its token could be valid.

The guard keeps the seen jtis in memory (the hot path only ever reads a dict) and, when given a
file, also in SQLite so that a gateway that restarts still refuses the tokens it accepted just
before. Only the jtis of tokens whose signature held are ever recorded, so a forger cannot fill
the store or burn somebody else's jti.
"""

import contextlib
import sqlite3
import threading
import time
from collections import deque
from pathlib import Path
from typing import Literal

REPLAY_DB_FILE = "replay.sqlite3"
"""File name of the replay store inside the gateway's state directory."""

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS seen_jti (jti TEXT PRIMARY KEY, exp REAL NOT NULL) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS seen_jti_exp ON seen_jti (exp)",
)


class ReplayStoreError(Exception):
    """The guard could not record a jti, so the token must be refused (fail closed)."""


class ReplayStoreFullError(ReplayStoreError):
    """The guard holds ``max_entries`` unexpired jtis and will not forget any of them early."""


class ReplayGuard:
    """Bounded set of seen jtis, each kept until its token has expired (plus leeway).

    Tokens are short-lived with a fixed maximum lifetime, so expiry order is close to arrival
    order: expired entries are dropped from the front of a deque in O(1) amortized. An entry
    that expires earlier than one in front of it lingers until that one goes, which delays its
    removal by at most the token lifetime and never removes anything early. When the store is
    full the guard refuses new tokens (fail closed) rather than forget old ones.

    ``claim`` is atomic: of any number of threads or tasks presenting the same jti, exactly one
    is told it is new. Memory-only guards take a lock-free path when nothing is due for
    pruning (see ``claim``); everything else runs under one lock.

    Persistence (``path`` given): every claimed jti is also written to a SQLite file before
    ``claim`` returns, and the unexpired ones are loaded back when a guard opens the same file,
    so a restarted gateway refuses tokens it had already accepted. The file runs in WAL mode.
    With ``synchronous="NORMAL"`` (the default) a commit is safe against the gateway process
    crashing or being restarted (the data is in the OS page cache and the WAL), but the last
    commits before a power cut or kernel crash can be lost, because the WAL is only fsynced at
    checkpoints. After such a reboot a token accepted in the last moments before the cut could
    be accepted once more, and only until it expires (tokens live ``max_lifetime`` seconds, two
    minutes at most, and a gateway takes a good part of that to boot). That is the trade: no
    fsync, hence no SD-card write stall, on the unlock path. ``synchronous="FULL"`` closes the
    window at the cost of one fsync per accepted token (milliseconds on flash storage); refused
    tokens never write.

    Expiry is judged by the wall clock passed in as ``now``. A clock that jumps forward prunes
    entries early; a token still within its lifetime after the clock is set back again would
    then no longer be remembered. The gateway keeps its clock with NTP, which slews small errors.
    """

    def __init__(
        self,
        max_entries: int = 100_000,
        leeway: float = 5.0,
        *,
        path: Path | None = None,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        now: float | None = None,
    ) -> None:
        """Open a guard; with ``path``, load the still-unexpired jtis stored there.

        ``now`` is the current time used to prune expired rows on opening (default: the wall
        clock). Raises ReplayStoreError when the file cannot be opened or is not a replay store.
        """
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
        # jti -> its entry (exp, jti); the same tuple object sits in the deque, in arrival
        # order. The dict and the deque are only ever mutated in place, never replaced.
        self._entries: dict[str, tuple[float, str]] = {}
        self._order: deque[tuple[float, str]] = deque()
        self._max_entries = max_entries
        self._leeway = leeway
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._closed = False
        if path is not None:
            self._db = self._open(path, synchronous, time.time() if now is None else now)

    def _open(
        self, path: Path, synchronous: Literal["NORMAL", "FULL"], now: float
    ) -> sqlite3.Connection:
        horizon = now - self._leeway
        db: sqlite3.Connection | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # check_same_thread=False: the guard may be called from worker threads; every use
            # of the connection is under self._lock, which is what sqlite3 needs.
            db = sqlite3.connect(path, check_same_thread=False, timeout=5.0)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={synchronous}")
            for statement in _SCHEMA:
                db.execute(statement)
            db.execute("DELETE FROM seen_jti WHERE exp < ?", (horizon,))
            rows = db.execute("SELECT jti, exp FROM seen_jti ORDER BY exp").fetchall()
            db.commit()
        except (OSError, sqlite3.Error) as exc:
            if db is not None:
                db.close()
            raise ReplayStoreError(f"replay store {path} unusable: {exc}") from exc
        for jti, exp in rows:
            # Loaded even beyond max_entries (the bound may have been lowered): forgetting a
            # stored jti would reopen a replay window; being full only refuses new tokens.
            entry = (exp, jti)
            self._entries[jti] = entry
            self._order.append(entry)
        return db

    def seen(self, jti: str) -> bool:
        """True when ``jti`` was already claimed (cheap pre-check, no side effect)."""
        return jti in self._entries

    def claim(self, jti: str, exp: float, now: float) -> bool:
        """Record ``jti`` (its token expires at ``exp``); False when it was already recorded.

        Raises ReplayStoreFullError when the bound is reached, ReplayStoreError when the
        file cannot be written or the guard is closed; the jti is then not recorded and the
        token must be refused.
        """
        # Whatever the path, the one step that decides "new or seen" is dict.setdefault: a
        # single operation on a str key, atomic in CPython (and per-object locked in
        # free-threaded builds), so of several callers with the same jti exactly one finds its
        # own entry in the dict, even when one takes the lock-free path and another the lock.
        if self._db is None and not self._closed:
            try:
                prune_due = self._order[0][0] < now - self._leeway
            except IndexError:  # empty, possibly emptied by a pruner a moment ago
                prune_due = False
            if not prune_due:
                # The hot path: memory only, nothing to prune, no lock. A deque is thread-safe
                # for appends on the right while the locked path pops on the left.
                entries = self._entries
                entry = (exp, jti)
                if entries.setdefault(jti, entry) is not entry:
                    return False
                if len(entries) > self._max_entries:
                    # Checked after inserting, so racing callers can never leave the guard
                    # above its bound: each one that sees it exceeded takes its entry back out.
                    del entries[jti]
                    raise ReplayStoreFullError(f"{self._max_entries} unexpired token ids held")
                self._order.append(entry)
                return True
        with self._lock:
            if self._closed:
                raise ReplayStoreError("replay guard is closed")
            pruned = self._prune(now)
            entries = self._entries
            entry = (exp, jti)
            if entries.setdefault(jti, entry) is not entry:
                return False
            if len(entries) > self._max_entries:
                del entries[jti]
                raise ReplayStoreFullError(f"{self._max_entries} unexpired token ids held")
            fresh = True
            if self._db is not None:
                try:
                    # False: another process sharing the file recorded it first. Keep it in
                    # memory either way, so the next look-up is cheap.
                    fresh = self._persist(self._db, jti, exp, now, pruned)
                except ReplayStoreError:
                    del entries[jti]
                    raise
            self._order.append(entry)
            return fresh

    def _persist(
        self, db: sqlite3.Connection, jti: str, exp: float, now: float, pruned: bool
    ) -> bool:
        try:
            if pruned:
                # Same transaction as the insert: one commit, and the file stays as bounded
                # as the memory.
                db.execute("DELETE FROM seen_jti WHERE exp < ?", (now - self._leeway,))
            db.execute("INSERT INTO seen_jti (jti, exp) VALUES (?, ?)", (jti, float(exp)))
            db.commit()
        except sqlite3.IntegrityError:
            db.rollback()
            return False
        except (sqlite3.Error, ValueError, OverflowError) as exc:
            with contextlib.suppress(sqlite3.Error):
                db.rollback()
            raise ReplayStoreError(f"could not record token id: {exc}") from exc
        return True

    def _prune(self, now: float) -> bool:
        # Under self._lock. Pops only entries in front of the deque, whose dict entries are
        # exactly these tuples (the identity check keeps a lock-free claimer's fresh entry).
        horizon = now - self._leeway
        order, entries = self._order, self._entries
        pruned = False
        while order and order[0][0] < horizon:
            entry = order.popleft()
            if entries.get(entry[1]) is entry:
                del entries[entry[1]]
            pruned = True
        return pruned

    def prune(self, now: float) -> None:
        """Forget every jti whose token expired before ``now - leeway`` (memory and file)."""
        with self._lock:
            if self._prune(now) and self._db is not None:
                try:
                    self._db.execute("DELETE FROM seen_jti WHERE exp < ?", (now - self._leeway,))
                    self._db.commit()
                except sqlite3.Error as exc:
                    raise ReplayStoreError(f"could not prune: {exc}") from exc

    def close(self) -> None:
        """Close the file, if any. Afterwards every claim fails (fail closed)."""
        with self._lock:
            self._closed = True
            if self._db is not None:
                self._db.close()
                self._db = None

    def __len__(self) -> int:
        return len(self._entries)

    def __bool__(self) -> bool:
        # An empty guard is still a guard: never let ``guard or default`` swap it out.
        return True
