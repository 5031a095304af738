"""The gateway's event journal on its own: numbering that survives restarts and is never
reused, the bound, the near-full report, the overflow report. SQLite files in a temporary
directory; the clock is faked where time matters."""

from pathlib import Path

import pytest

from citykey_protocol.messages import (
    JOURNAL_NEAR_FULL_EVENT,
    JOURNAL_OVERFLOW_EVENT,
    JOURNAL_STARTED_EVENT,
)
from lock_gateway.journal import (
    JOURNAL_DB_FILE,
    MAX_DATA_BYTES,
    EventJournal,
    JournalError,
    JournalFullError,
)


class FakeClock:
    def __init__(self, now: float = 1_767_225_600.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def kinds(journal: EventJournal) -> list[str]:
    return [e.kind for e in journal.read(0, 10_000)]


def test_a_new_journal_starts_at_the_clock_with_journal_started() -> None:
    clock = FakeClock()
    journal = EventJournal(None, clock=clock)
    first = int(clock.now * 1000)
    assert journal.first_seq == first
    assert journal.last_seq == first
    assert journal.acked == first - 1
    (entry,) = journal.read(0, 10)
    assert (entry.seq, entry.kind) == (first, JOURNAL_STARTED_EVENT)
    assert entry.data == {"first_seq": first, "persistent": False}


def test_numbers_survive_a_restart_and_are_never_reused(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_DB_FILE
    clock = FakeClock()
    journal = EventJournal(path, clock=clock)
    seqs = [journal.append("door_opened", "d1", {}) for _ in range(3)]
    assert seqs == [journal.first_seq + 1, journal.first_seq + 2, journal.first_seq + 3]
    journal.acknowledge(journal.last_seq)  # everything delivered: the rows are deleted
    assert journal.read(0, 10) == []
    journal.close()

    reopened = EventJournal(path, clock=clock)
    assert not reopened.created
    assert reopened.last_seq == seqs[-1]
    assert reopened.acked == seqs[-1]
    assert reopened.append("door_closed", "d1", {}) == seqs[-1] + 1  # not reused
    assert kinds(reopened) == ["door_closed"]  # no second journal_started
    reopened.close()
    print(f"\njournal numbers across a restart: {seqs} then {seqs[-1] + 1}")


def test_unacknowledged_events_survive_a_restart_in_order(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_DB_FILE
    journal = EventJournal(path, clock=FakeClock())
    for pct in (50, 40, 30):
        journal.append("battery", "d1", {"pct": pct})
    journal.acknowledge(journal.first_seq)  # only journal_started was stored
    journal.close()
    reopened = EventJournal(path, clock=FakeClock())
    entries = reopened.read(reopened.acked, 10)
    assert [e.data["pct"] for e in entries] == [50, 40, 30]
    assert [e.seq for e in entries] == list(range(reopened.acked + 1, reopened.last_seq + 1))
    reopened.close()


def test_a_lost_journal_restarts_above_the_old_numbers() -> None:
    clock = FakeClock()
    old = EventJournal(None, clock=clock)
    for _ in range(500):
        old.append("door_opened", "d1", {})
    clock.now += 1.0  # the gateway restarts a second later with its journal in memory
    new = EventJournal(None, clock=clock)
    assert new.first_seq > old.last_seq


def test_the_journal_is_bounded_and_reports_what_it_refused() -> None:
    clock = FakeClock()
    journal = EventJournal(None, max_events=10, clock=clock)
    while journal.unacked < 10:
        assert journal.append("door_opened", "d1", {}) is not None
    full_at = journal.last_seq
    clock.now += 1
    assert journal.append("door_forced_open", "d1", {}) is None
    clock.now += 1
    assert journal.append("tamper", "d1", {"active": True}) is None
    with pytest.raises(JournalFullError):
        journal.append("offline_unlock", "d1", {}, required=True)
    assert journal.last_seq == full_at  # nothing was dropped to make room
    assert journal.dropped == 2

    journal.acknowledge(journal.first_seq + 4)
    assert journal.dropped == 0
    last = journal.read(0, 100)[-1]
    assert last.kind == JOURNAL_OVERFLOW_EVENT
    assert last.seq == full_at + 1  # gapless
    assert last.data["dropped"] == 2
    assert last.data["kinds"] == {"door_forced_open": 1, "tamper": 1}
    assert last.data["first_ts"] < last.data["last_ts"]
    print(f"\nfull journal of 10: refused 2 events, reported as {last.data}")


def test_an_overflow_count_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_DB_FILE
    journal = EventJournal(path, max_events=4, clock=FakeClock())
    while journal.append("door_opened", "d1", {}) is not None:
        pass
    journal.close()
    reopened = EventJournal(path, max_events=4, clock=FakeClock())
    assert reopened.dropped == 1
    reopened.acknowledge(reopened.last_seq)
    assert kinds(reopened) == [JOURNAL_OVERFLOW_EVENT]
    reopened.close()


def test_near_full_is_reported_once_and_re_armed_below_70_percent() -> None:
    journal = EventJournal(None, max_events=10, clock=FakeClock())
    for _ in range(6):
        journal.append("door_opened", "d1", {})
    assert kinds(journal).count(JOURNAL_NEAR_FULL_EVENT) == 0
    journal.append("door_closed", "d1", {})  # 8 of 10 with the report itself
    assert kinds(journal).count(JOURNAL_NEAR_FULL_EVENT) == 1
    assert journal.near_full
    assert journal.fill == pytest.approx(0.9)
    report = next(e for e in journal.read(0, 100) if e.kind == JOURNAL_NEAR_FULL_EVENT)
    assert report.data == {"unacked": 9, "max_events": 10}
    journal.append("door_opened", "d1", {})
    assert kinds(journal).count(JOURNAL_NEAR_FULL_EVENT) == 1  # not again

    journal.acknowledge(journal.first_seq + 6)  # 3 left: below 70 %
    for _ in range(4):
        journal.append("door_opened", "d1", {})
    assert kinds(journal).count(JOURNAL_NEAR_FULL_EVENT) == 1  # re-armed: reported again
    print(f"\nnear-full reported at {report.data['unacked']} of {report.data['max_events']}")


def test_acknowledgements_are_monotonic_and_clamped() -> None:
    journal = EventJournal(None, clock=FakeClock())
    journal.append("door_opened", "d1", {})
    assert journal.acknowledge(journal.last_seq + 1000) == 2  # clamped to what exists
    assert journal.acked == journal.last_seq
    assert journal.acknowledge(journal.first_seq) == 0  # older ack: nothing to do


def test_oversized_and_unencodable_data_are_replaced_by_a_note() -> None:
    journal = EventJournal(None, clock=FakeClock())
    journal.append("note", None, {"blob": "x" * (MAX_DATA_BYTES + 1)})
    journal.append("note", None, {"obj": object()})
    big, odd = journal.read(journal.first_seq, 10)
    assert big.data == {"truncated": True, "bytes": MAX_DATA_BYTES + 12}  # {"blob":"..."}
    assert "unencodable" in odd.data


def test_a_closed_journal_refuses_required_events() -> None:
    journal = EventJournal(None, clock=FakeClock())
    journal.close()
    assert journal.append("door_opened", "d1", {}) is None
    with pytest.raises(JournalError):
        journal.append("offline_unlock", "d1", {}, required=True)


def test_a_file_that_is_not_a_journal_is_refused(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_DB_FILE
    path.write_bytes(b"not a database at all, " * 100)
    with pytest.raises(JournalError):
        EventJournal(path)
