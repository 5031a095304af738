"""Weekly schedules become calendar blocks: half-hour slots, midnight crossings split."""

from datetime import time

from api.schedules import Schedule, TimeRange
from api.web.console.calendar import SLOTS, Block, blocks_of, by_day


def test_a_day_range_snaps_outwards_to_half_hours() -> None:
    schedule = Schedule(weekly=[TimeRange(weekday=0, start=time(7, 15), end=time(16, 10))])
    [block] = blocks_of(schedule, "Choir", "grant")
    assert (block.weekday, block.start, block.end) == (0, 14, 33)
    assert block.title == "Choir: 07:15–16:10"


def test_a_range_across_midnight_is_split_into_two_days() -> None:
    schedule = Schedule(weekly=[TimeRange(weekday=6, start=time(22), end=time(2))])
    late, early = blocks_of(schedule, "Night", "public")
    assert (late.weekday, late.start, late.end) == (6, 44, SLOTS)
    assert (early.weekday, early.start, early.end) == (0, 0, 4)


def test_a_range_ending_at_midnight_draws_one_block() -> None:
    schedule = Schedule(weekly=[TimeRange(weekday=2, start=time(18), end=time(0))])
    assert [(b.weekday, b.start, b.end) for b in blocks_of(schedule, "x", "grant")] == [
        (2, 36, SLOTS)
    ]


def test_blocks_are_grouped_by_weekday_in_time_order() -> None:
    blocks = [
        Block(1, 30, 40, "b", "grant", "b"),
        Block(1, 10, 20, "a", "grant", "a"),
        Block(4, 0, 2, "c", "public", "c"),
    ]
    days = by_day(blocks)
    assert [b.label for b in days[1]] == ["a", "b"]
    assert [b.label for b in days[4]] == ["c"]
    assert sum(len(d) for d in days) == 3
