"""Tests for horsies.schedule_calc: next runs of every pattern, DST, day 31 in short months (the
month's last day), catch-up of missed slots.

Besides worked examples, the calculator is checked against an independent brute force: a simulated
wall clock of the zone, read minute by minute, where a slot fires at the first instant the clock
shows that local time or later (so a time skipped by a forward jump fires when the clock jumps past
it, and a time shown twice fires once). Iterating `next_run_after` must produce exactly the same
runs: none skipped, none repeated.
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
import itertools
import zoneinfo
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from horsies import (
    CronSchedule,
    DailySchedule,
    HourlySchedule,
    IntervalSchedule,
    MonthlySchedule,
    Weekday,
    WeeklySchedule,
)
from horsies.errors import ConfigurationError, ErrorCode
from horsies.schedule_calc import (
    DueRuns,
    missed_runs,
    next_run_after,
    plan_due_runs,
    wall_clock_to_utc,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

UTC = dt.UTC
NY = "America/New_York"
SECOND = dt.timedelta(seconds=1)
MINUTE = dt.timedelta(minutes=1)
WEEKDAYS = list(Weekday)  # index = date.weekday()

WallClockPattern = HourlySchedule | DailySchedule | WeeklySchedule | MonthlySchedule | CronSchedule


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def local(instant: dt.datetime, zone: str) -> dt.datetime:
    """Aware local time of `instant` in `zone` (for readable assertions)."""
    return instant.astimezone(ZoneInfo(zone))


def runs(pattern: Any, start: dt.datetime, count: int, tz: str = "UTC") -> list[dt.datetime]:
    found: list[dt.datetime] = []
    current = start
    for _ in range(count):
        current = next_run_after(pattern, current, tz)
        found.append(current)
    return found


def runs_until(pattern: Any, start: dt.datetime, end: dt.datetime, tz: Any) -> list[dt.datetime]:
    """Every run in (start, end] by iterating next_run_after."""
    found: list[dt.datetime] = []
    current = next_run_after(pattern, start, tz)
    while current <= end:
        found.append(current)
        current = next_run_after(pattern, current, tz)
    return found


# --------------------------------------------------------------------------------------------------
# IntervalSchedule
# --------------------------------------------------------------------------------------------------


def test_interval_is_plain_elapsed_time() -> None:
    every = IntervalSchedule(hours=1, minutes=30)
    start = utc(2024, 3, 10, 5, 0, 0, 123)
    assert next_run_after(every, start) == start + dt.timedelta(minutes=90)
    # The timezone plays no part, across DST changes neither.
    assert next_run_after(every, start, NY) == start + dt.timedelta(minutes=90)
    assert runs(IntervalSchedule(days=1), utc(2024, 3, 9, 12), 3, NY) == [
        utc(2024, 3, 10, 12),
        utc(2024, 3, 11, 12),
        utc(2024, 3, 12, 12),
    ]


def test_results_are_utc_for_any_aware_input() -> None:
    berlin = dt.datetime(2024, 6, 1, 12, tzinfo=ZoneInfo("Europe/Berlin"))
    result = next_run_after(IntervalSchedule(seconds=5), berlin)
    assert result.tzinfo is UTC
    assert result == utc(2024, 6, 1, 10, 0, 5)
    daily = next_run_after(DailySchedule(time=dt.time(9)), berlin, "Europe/Berlin")
    assert daily.tzinfo is UTC
    assert daily == utc(2024, 6, 2, 7)


@pytest.mark.parametrize("pattern", [IntervalSchedule(seconds=1), HourlySchedule(minute=0)])
def test_naive_instants_are_refused(pattern: Any) -> None:
    with pytest.raises(ValueError, match="after must be a timezone-aware datetime"):
        next_run_after(pattern, dt.datetime(2024, 1, 1))


def test_unknown_timezone_raises_when_computing() -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        next_run_after(DailySchedule(time=dt.time(9)), utc(2024, 1, 1), "Mars/Base")
    assert isinstance(excinfo.value, ValueError)
    assert excinfo.value.code is ErrorCode.CONFIG_INVALID_SCHEDULE
    assert excinfo.value.message.startswith("Invalid timezone 'Mars/Base': ")


def test_tzinfo_objects_are_accepted() -> None:
    daily = DailySchedule(time=dt.time(9))
    plus_five = dt.timezone(dt.timedelta(hours=5))
    assert next_run_after(daily, utc(2024, 1, 1), plus_five) == utc(2024, 1, 1, 4)
    assert next_run_after(daily, utc(2023, 12, 31, 23), ZoneInfo("Asia/Tokyo")) == utc(2024, 1, 1)
    assert next_run_after(daily, utc(2024, 1, 1), "Asia/Tokyo") == utc(2024, 1, 2)


# --------------------------------------------------------------------------------------------------
# Wall-clock patterns: worked examples (UTC)
# --------------------------------------------------------------------------------------------------


def test_hourly() -> None:
    hourly = HourlySchedule(minute=5, second=30)
    assert next_run_after(hourly, utc(2024, 1, 1, 10, 0)) == utc(2024, 1, 1, 10, 5, 30)
    assert next_run_after(hourly, utc(2024, 1, 1, 10, 5, 29)) == utc(2024, 1, 1, 10, 5, 30)
    # Strictly after: the slot itself and anything later in the hour go to the next hour.
    assert next_run_after(hourly, utc(2024, 1, 1, 10, 5, 30)) == utc(2024, 1, 1, 11, 5, 30)
    assert next_run_after(hourly, utc(2024, 1, 1, 10, 5, 30, 1)) == utc(2024, 1, 1, 11, 5, 30)
    assert next_run_after(hourly, utc(2024, 12, 31, 23, 59)) == utc(2025, 1, 1, 0, 5, 30)


def test_daily() -> None:
    daily = DailySchedule(time=dt.time(3))
    assert next_run_after(daily, utc(2024, 1, 1, 2, 59, 59)) == utc(2024, 1, 1, 3)
    assert next_run_after(daily, utc(2024, 1, 1, 3)) == utc(2024, 1, 2, 3)
    assert next_run_after(daily, utc(2024, 2, 28, 12)) == utc(2024, 2, 29, 3)
    assert next_run_after(daily, utc(2023, 12, 31, 12)) == utc(2024, 1, 1, 3)


def test_weekly() -> None:
    weekly = WeeklySchedule(days=[Weekday.FRIDAY, Weekday.MONDAY], time=dt.time(9))
    monday = utc(2024, 6, 3, 8)  # a Monday
    assert next_run_after(weekly, monday) == utc(2024, 6, 3, 9)  # today, still ahead
    assert next_run_after(weekly, utc(2024, 6, 3, 9)) == utc(2024, 6, 7, 9)  # Friday
    assert next_run_after(weekly, utc(2024, 6, 7, 10)) == utc(2024, 6, 10, 9)  # wraps to Monday
    once = WeeklySchedule(days=[Weekday.WEDNESDAY], time=dt.time(0))
    assert next_run_after(once, utc(2024, 6, 5)) == utc(2024, 6, 12)  # a full week later
    every_day = WeeklySchedule(days=list(Weekday), time=dt.time(12))
    assert runs(every_day, utc(2024, 6, 1), 3) == [utc(2024, 6, d, 12) for d in (1, 2, 3)]


def test_monthly() -> None:
    monthly = MonthlySchedule(day=15, time=dt.time(6, 30))
    assert next_run_after(monthly, utc(2024, 1, 1)) == utc(2024, 1, 15, 6, 30)
    assert next_run_after(monthly, utc(2024, 1, 15, 6, 30)) == utc(2024, 2, 15, 6, 30)
    assert next_run_after(monthly, utc(2024, 12, 20)) == utc(2025, 1, 15, 6, 30)


def test_monthly_day_31_runs_on_the_last_day_of_short_months() -> None:
    assert runs(MonthlySchedule(day=31, time=dt.time(0)), utc(2024, 1, 1), 13) == [
        utc(2024, m, calendar.monthrange(2024, m)[1]) for m in range(1, 13)
    ] + [utc(2025, 1, 31)]
    assert runs(MonthlySchedule(day=31, time=dt.time(12)), utc(2023, 2, 1), 2) == [
        utc(2023, 2, 28, 12),
        utc(2023, 3, 31, 12),
    ]
    assert runs(MonthlySchedule(day=30, time=dt.time(12)), utc(2024, 2, 1), 2) == [
        utc(2024, 2, 29, 12),
        utc(2024, 3, 30, 12),
    ]
    # On the last day of a short month, once the run is past, the next is the following month.
    assert next_run_after(MonthlySchedule(day=31, time=dt.time(0)), utc(2024, 4, 30, 0, 1)) == utc(
        2024, 5, 31
    )


@pytest.mark.parametrize(
    ("expression", "start", "expected"),
    [
        ("*/5 * * * *", utc(2024, 1, 1, 10, 2), [utc(2024, 1, 1, 10, m) for m in (5, 10, 15)]),
        ("*/5 * * * *", utc(2024, 1, 1, 10, 5), [utc(2024, 1, 1, 10, m) for m in (10, 15, 20)]),
        ("5/20 * * * *", utc(2024, 1, 1, 10), [utc(2024, 1, 1, 10, m) for m in (5, 25, 45)]),
        ("59 23 31 12 *", utc(2024, 6, 1), [utc(2024, 12, 31, 23, 59), utc(2025, 12, 31, 23, 59)]),
        # 09:00 on weekdays: Friday 7 June 2024, then Monday.
        ("0 9 * * mon-fri", utc(2024, 6, 7, 8), [utc(2024, 6, 7, 9), utc(2024, 6, 10, 9)]),
        # Both day fields restricted: the 1st OR a Sunday (June 2024: Sun 2, 9, ..., Mon 1 July).
        ("0 0 1 * 0", utc(2024, 5, 31), [utc(2024, 6, 1), utc(2024, 6, 2), utc(2024, 6, 9)]),
        # Day-of-month starts with '*': odd days that are also Mondays.
        ("0 0 */2 * 1", utc(2024, 6, 1), [utc(2024, 6, 3), utc(2024, 6, 17), utc(2024, 7, 1)]),
        ("0 0 29 2 *", utc(2024, 3, 1), [utc(2028, 2, 29), utc(2032, 2, 29)]),
        (
            "30 4 1,15 jan,jul *",
            utc(2024, 1, 20),
            [utc(2024, 7, 1, 4, 30), utc(2024, 7, 15, 4, 30)],
        ),
        ("0 0 * * 7", utc(2024, 6, 1), [utc(2024, 6, 2), utc(2024, 6, 9)]),  # 7 = Sunday
        ("0 12 31 * *", utc(2024, 1, 31, 13), [utc(2024, 3, 31, 12), utc(2024, 5, 31, 12)]),
        ("* * * * *", utc(2024, 1, 1, 0, 0, 59, 999_999), [utc(2024, 1, 1, 0, 1)]),
    ],
)
def test_cron(expression: str, start: dt.datetime, expected: list[dt.datetime]) -> None:
    assert runs(CronSchedule(expression), start, len(expected)) == expected


def test_cron_searches_decades_for_rare_dates() -> None:
    # 29 February on a Sunday ('*/7' = {0}; it starts with '*', so both day fields must match).
    assert runs(CronSchedule("0 0 29 2 */7"), utc(2004, 3, 1), 2) == [
        utc(2032, 2, 29),
        utc(2060, 2, 29),
    ]


# --------------------------------------------------------------------------------------------------
# DST and other offset changes
# --------------------------------------------------------------------------------------------------


def test_daily_runs_at_local_time_on_both_dst_days() -> None:
    daily = DailySchedule(time=dt.time(9))
    spring = runs(daily, utc(2024, 3, 9, 15), 3, NY)
    assert [local(r, NY).isoformat() for r in spring] == [
        "2024-03-10T09:00:00-04:00",
        "2024-03-11T09:00:00-04:00",
        "2024-03-12T09:00:00-04:00",
    ]
    assert spring[0] == utc(2024, 3, 10, 13)
    autumn = runs(daily, utc(2024, 11, 2, 14), 3, NY)
    assert [local(r, NY).isoformat() for r in autumn] == [
        "2024-11-03T09:00:00-05:00",
        "2024-11-04T09:00:00-05:00",
        "2024-11-05T09:00:00-05:00",
    ]
    assert autumn[1] - autumn[0] == dt.timedelta(days=1)
    assert spring[0] - utc(2024, 3, 9, 14) == dt.timedelta(hours=23)


def test_nonexistent_time_fires_when_the_clocks_jump_past_it() -> None:
    daily = DailySchedule(time=dt.time(2, 30))  # 02:00-03:00 does not exist on 10 March in NY
    assert runs(daily, utc(2024, 3, 9, 12), 2, NY) == [
        utc(2024, 3, 10, 7),  # 03:00 EDT, the first instant after the gap
        utc(2024, 3, 11, 6, 30),  # 02:30 EDT
    ]
    assert next_run_after(daily, utc(2024, 3, 10, 6, 59, 59), NY) == utc(2024, 3, 10, 7)
    assert next_run_after(daily, utc(2024, 3, 10, 7), NY) == utc(2024, 3, 11, 6, 30)


def test_ambiguous_time_fires_once_at_its_first_occurrence() -> None:
    daily = DailySchedule(time=dt.time(1, 30))  # 01:00-02:00 happens twice on 3 November in NY
    assert runs(daily, utc(2024, 11, 2, 12), 3, NY) == [
        utc(2024, 11, 3, 5, 30),  # 01:30 EDT
        utc(2024, 11, 4, 6, 30),  # the next day, 01:30 EST (not 01:30 EST on the 3rd)
        utc(2024, 11, 5, 6, 30),
    ]
    # Asked during the second pass of the repeated hour: the slot is already behind.
    assert next_run_after(daily, utc(2024, 11, 3, 6, 15), NY) == utc(2024, 11, 4, 6, 30)


def test_hourly_across_dst() -> None:
    hourly = HourlySchedule(minute=30)
    autumn = runs(hourly, utc(2024, 11, 3, 4), 3, NY)
    assert [local(r, NY).strftime("%H:%M%z") for r in autumn] == [
        "00:30-0400",
        "01:30-0400",
        "02:30-0500",  # 01:30 EST is the repeated 01:30: it does not fire again
    ]
    spring = runs(hourly, utc(2024, 3, 10, 6), 3, NY)
    assert [local(r, NY).strftime("%H:%M%z") for r in spring] == [
        "01:30-0500",
        "03:00-0400",  # 02:30 does not exist: runs at the jump
        "03:30-0400",
    ]


def test_cron_slots_inside_a_gap_collapse_into_one_run() -> None:
    every_20 = CronSchedule("*/20 * * * *")
    found = runs_until(every_20, utc(2024, 3, 10, 6, 30), utc(2024, 3, 10, 7, 30), NY)
    assert [local(r, NY).strftime("%H:%M%z") for r in found] == [
        "01:40-0500",
        "03:00-0400",  # 02:00, 02:20, 02:40 and 03:00 all fire once at the jump
        "03:20-0400",
    ]


def test_wall_clock_to_utc() -> None:
    assert wall_clock_to_utc(dt.datetime(2024, 6, 1, 9), NY) == utc(2024, 6, 1, 13)
    assert wall_clock_to_utc(dt.datetime(2024, 3, 10, 2, 30), NY) == utc(2024, 3, 10, 7)
    assert wall_clock_to_utc(dt.datetime(2024, 3, 10, 2), NY) == utc(2024, 3, 10, 7)
    assert wall_clock_to_utc(dt.datetime(2024, 3, 10, 3), NY) == utc(2024, 3, 10, 7)
    assert wall_clock_to_utc(dt.datetime(2024, 11, 3, 1, 30), NY) == utc(2024, 11, 3, 5, 30)
    assert wall_clock_to_utc(dt.datetime(2024, 11, 3, 1, 30, fold=1), NY) == utc(2024, 11, 3, 5, 30)
    # Lord Howe Island moves its clocks by 30 minutes (02:00 -> 02:30 on 6 October 2024).
    assert wall_clock_to_utc(dt.datetime(2024, 10, 6, 2, 15), "Australia/Lord_Howe") == utc(
        2024, 10, 5, 15, 30
    )
    # Samoa skipped 30 December 2011 entirely (UTC-10 -> UTC+14).
    assert wall_clock_to_utc(dt.datetime(2011, 12, 30, 12), "Pacific/Apia") == utc(2011, 12, 30, 10)
    assert wall_clock_to_utc(
        dt.datetime(2024, 1, 1, 5), dt.timezone(-dt.timedelta(hours=3))
    ) == utc(2024, 1, 1, 8)


def test_a_skipped_day() -> None:
    daily = DailySchedule(time=dt.time(12))
    found = runs(daily, utc(2011, 12, 29, 0), 3, "Pacific/Apia")
    assert [local(r, "Pacific/Apia").isoformat() for r in found] == [
        "2011-12-29T12:00:00-10:00",
        "2011-12-31T00:00:00+14:00",  # 30 December 12:00 never existed
        "2011-12-31T12:00:00+14:00",
    ]


def test_midnight_transitions() -> None:
    # Santiago springs forward at 24:00 (00:00-01:00 does not exist on 8 September 2024).
    daily = DailySchedule(time=dt.time(0))
    found = runs(daily, utc(2024, 9, 6, 12), 3, "America/Santiago")
    assert [local(r, "America/Santiago").isoformat() for r in found] == [
        "2024-09-07T00:00:00-04:00",
        "2024-09-08T01:00:00-03:00",
        "2024-09-09T00:00:00-03:00",
    ]


# --------------------------------------------------------------------------------------------------
# missed_runs / plan_due_runs: one run per missed slot with catch-up, else one run now
# --------------------------------------------------------------------------------------------------

HOURLY = HourlySchedule(minute=0)


def test_missed_runs_include_the_overdue_slot() -> None:
    # Down from 09:30 to 12:30: the 10:00 (overdue), 11:00 and 12:00 slots were missed.
    assert missed_runs(HOURLY, "UTC", utc(2024, 1, 1, 10), utc(2024, 1, 1, 12, 30)) == [
        utc(2024, 1, 1, 10),
        utc(2024, 1, 1, 11),
        utc(2024, 1, 1, 12),
    ]
    assert missed_runs(HOURLY, "UTC", utc(2024, 1, 1, 10), utc(2024, 1, 1, 12)) == [
        utc(2024, 1, 1, 10),
        utc(2024, 1, 1, 11),
        utc(2024, 1, 1, 12),
    ]
    assert missed_runs(HOURLY, "UTC", utc(2024, 1, 1, 10), utc(2024, 1, 1, 10)) == [
        utc(2024, 1, 1, 10)
    ]
    assert missed_runs(HOURLY, "UTC", utc(2024, 1, 1, 10), utc(2024, 1, 1, 9, 59)) == []


def test_missed_runs_limit() -> None:
    args = (HOURLY, "UTC", utc(2024, 1, 1, 10), utc(2024, 1, 2, 10))
    assert len(missed_runs(*args)) == 25
    assert missed_runs(*args, limit=2) == [utc(2024, 1, 1, 10), utc(2024, 1, 1, 11)]
    with pytest.raises(ValueError, match="limit must be at least 1"):
        missed_runs(*args, limit=0)


def test_missed_runs_interval_keeps_the_cadence() -> None:
    every = IntervalSchedule(minutes=10)
    found = missed_runs(every, "UTC", utc(2024, 1, 1, 10, 3), utc(2024, 1, 1, 10, 35))
    assert found == [utc(2024, 1, 1, 10, m) for m in (3, 13, 23, 33)]


def test_missed_runs_refuse_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="next_run_at must be a timezone-aware"):
        missed_runs(HOURLY, "UTC", dt.datetime(2024, 1, 1), utc(2024, 1, 1))
    with pytest.raises(ValueError, match="now must be a timezone-aware"):
        missed_runs(HOURLY, "UTC", utc(2024, 1, 1), dt.datetime(2024, 1, 1))


def test_plan_not_due() -> None:
    plan = plan_due_runs(
        HOURLY, "UTC", utc(2024, 1, 1, 11), utc(2024, 1, 1, 10, 59), catch_up_missed=True
    )
    assert plan == DueRuns(slots=(), next_run_at=utc(2024, 1, 1, 11))


def test_plan_without_catch_up_runs_once_and_restarts_from_now() -> None:
    plan = plan_due_runs(
        HOURLY, "UTC", utc(2024, 1, 1, 10), utc(2024, 1, 1, 12, 30), catch_up_missed=False
    )
    assert plan == DueRuns(slots=(utc(2024, 1, 1, 10),), next_run_at=utc(2024, 1, 1, 13))
    every = IntervalSchedule(minutes=10)
    plan = plan_due_runs(
        every, "UTC", utc(2024, 1, 1, 10), utc(2024, 1, 1, 10, 0, 1), catch_up_missed=False
    )
    assert plan == DueRuns(slots=(utc(2024, 1, 1, 10),), next_run_at=utc(2024, 1, 1, 10, 10, 1))


def test_plan_with_catch_up_runs_every_missed_slot() -> None:
    plan = plan_due_runs(
        HOURLY, "UTC", utc(2024, 1, 1, 10), utc(2024, 1, 1, 12, 30), catch_up_missed=True
    )
    assert plan == DueRuns(
        slots=(utc(2024, 1, 1, 10), utc(2024, 1, 1, 11), utc(2024, 1, 1, 12)),
        next_run_at=utc(2024, 1, 1, 13),
    )
    # On time (only the due slot): one run, cadence kept for intervals.
    every = IntervalSchedule(minutes=10)
    plan = plan_due_runs(
        every, "UTC", utc(2024, 1, 1, 10), utc(2024, 1, 1, 10, 0, 1), catch_up_missed=True
    )
    assert plan == DueRuns(slots=(utc(2024, 1, 1, 10),), next_run_at=utc(2024, 1, 1, 10, 10))


def test_plan_with_catch_up_in_batches_loses_nothing() -> None:
    start, now = utc(2024, 1, 1, 10), utc(2024, 1, 3, 10, 30)
    everything = plan_due_runs(HOURLY, NY, start, now, catch_up_missed=True)
    batched: list[dt.datetime] = []
    due = start
    while True:
        plan = plan_due_runs(HOURLY, NY, due, now, catch_up_missed=True, limit=7)
        if not plan.slots:
            break
        assert len(plan.slots) <= 7
        batched.extend(plan.slots)
        due = plan.next_run_at
    assert tuple(batched) == everything.slots
    assert due == everything.next_run_at == utc(2024, 1, 3, 11)
    assert len(batched) == 49


# --------------------------------------------------------------------------------------------------
# Brute force: a simulated wall clock
# --------------------------------------------------------------------------------------------------


def slot_matches(pattern: WallClockPattern, slot: dt.datetime) -> bool:
    """Does the naive local time `slot` belong to `pattern`? (written independently of the code)"""
    if isinstance(pattern, HourlySchedule):
        return (slot.minute, slot.second, slot.microsecond) == (pattern.minute, pattern.second, 0)
    if isinstance(pattern, CronSchedule):
        fields = pattern.parsed
        parts = pattern.expression.split()
        day_ok = slot.day in fields.days
        weekday_ok = (slot.weekday() + 1) % 7 in fields.weekdays
        both = parts[2].startswith("*") or parts[4].startswith("*")
        return (
            (slot.second, slot.microsecond) == (0, 0)
            and slot.minute in fields.minutes
            and slot.hour in fields.hours
            and slot.month in fields.months
            and ((day_ok and weekday_ok) if both else (day_ok or weekday_ok))
        )
    if slot.time() != pattern.time:
        return False
    if isinstance(pattern, DailySchedule):
        return True
    if isinstance(pattern, WeeklySchedule):
        return WEEKDAYS[slot.weekday()] in pattern.days
    last_day = calendar.monthrange(slot.year, slot.month)[1]
    return slot.day == min(pattern.day, last_day)


def grid_second(pattern: WallClockPattern) -> int:
    """All slots of a pattern share this second-of-minute."""
    if isinstance(pattern, HourlySchedule):
        return pattern.second
    if isinstance(pattern, CronSchedule):
        return 0
    return pattern.time.second


def reading(instant: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def brute_force_runs(
    pattern: WallClockPattern, zone: ZoneInfo, start: dt.datetime, end: dt.datetime
) -> list[dt.datetime]:
    """Runs in (start, end]: watch the clock; a slot fires the first time the clock reaches it.

    The clock is read once a minute, at the pattern's second-of-minute (slots lie on that grid
    since all offsets after 1970 are whole minutes). When the clock jumps forward past slots, they
    fire at the first whole second at which the clock shows them or later.
    """
    second = grid_second(pattern)
    # Highest reading so far: slots at or below it have already fired (or lie before `start`);
    # look back a day to include the first pass of a repeated hour.
    highest = reading(start, zone)
    probe = start - dt.timedelta(days=1)
    while probe < start:
        highest = max(highest, reading(probe, zone))
        probe += MINUTE
    instant = start.replace(second=second, microsecond=0)
    if instant <= start:
        instant += MINUTE
    fired: set[dt.datetime] = set()
    while instant <= end + MINUTE:  # a jump just before `end` shows at the next grid point
        shown = reading(instant, zone)
        if shown - highest == MINUTE:  # the usual tick: the clock shows the next grid point
            if slot_matches(pattern, shown):
                fired.add(instant)
            highest = shown
        elif shown > highest:
            candidate = highest.replace(second=second, microsecond=0)
            if candidate <= highest:
                candidate += MINUTE
            while candidate <= shown:
                if slot_matches(pattern, candidate):
                    fire = instant
                    if candidate < shown:  # the clock jumped: find when it passed the slot
                        fire = instant - MINUTE + SECOND
                        while reading(fire, zone) < candidate:
                            fire += SECOND
                    fired.add(fire)
                candidate += MINUTE
            highest = shown
        instant += MINUTE
    return sorted(fire for fire in fired if start < fire <= end)


# Zones with interesting offset changes: northern/southern DST, 30-minute DST, midnight
# transitions, 45-minute offsets, negative DST, Ramadan suspensions, a skipped day.
DST_ZONES = [
    "America/New_York",
    "Europe/Berlin",
    "Europe/London",
    "Europe/Dublin",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "America/Santiago",
    "America/Havana",
    "Asia/Tehran",
    "Pacific/Chatham",
    "Pacific/Apia",
    "Africa/Casablanca",
    "America/St_Johns",
]
OTHER_ZONES = ["UTC", "Asia/Kolkata", "Asia/Kathmandu", "Asia/Tokyo"]


@functools.cache
def transitions(zone_name: str) -> tuple[dt.datetime, ...]:
    """Approximate instants (within an hour) of the zone's offset changes, 2000-2037."""
    zone = ZoneInfo(zone_name)
    found: list[dt.datetime] = []
    day = utc(2000, 1, 1, 12)
    offset = day.astimezone(zone).utcoffset()
    while day.year < 2038:
        following = day + dt.timedelta(days=1)
        next_offset = following.astimezone(zone).utcoffset()
        if next_offset != offset:
            hour = day
            while hour.astimezone(zone).utcoffset() == offset:
                hour += dt.timedelta(hours=1)
            found.append(hour)
            offset = next_offset
        day = following
    return tuple(found)


@functools.cache
def all_zones() -> list[str]:
    return sorted(zoneinfo.available_timezones())


TIMES = st.builds(
    dt.time,
    hour=st.one_of(st.sampled_from([0, 1, 2, 3, 23]), st.integers(0, 23)),
    minute=st.one_of(st.sampled_from([0, 15, 30, 59]), st.integers(0, 59)),
    second=st.one_of(st.just(0), st.integers(0, 59)),
)
CRON = st.builds(
    lambda *fields: CronSchedule(" ".join(fields)),
    st.one_of(
        st.sampled_from(["0", "30", "59", "*/15", "5,35", "0-10/5", "*/7", "*"]),
        st.integers(5, 30).map(lambda step: f"*/{step}"),
    ),
    st.sampled_from(["*", "0-3", "1,2", "2", "*/3", "23", "0", "1-2", "22-23"]),
    st.sampled_from(["*", "1", "*/2", "10-20", "31", "29", "1,15"]),
    st.sampled_from(["*", "3", "10,11", "mar-apr", "*/2", "sep-nov"]),
    st.sampled_from(["*", "mon-fri", "0,6", "sun", "*/2", "1"]),
)
PATTERNS: st.SearchStrategy[WallClockPattern] = st.one_of(
    st.builds(
        HourlySchedule, minute=st.integers(0, 59), second=st.one_of(st.just(0), st.integers(0, 59))
    ),
    st.builds(DailySchedule, time=TIMES),
    st.builds(
        WeeklySchedule,
        days=st.lists(st.sampled_from(WEEKDAYS), min_size=1, max_size=7, unique=True),
        time=TIMES,
    ),
    st.builds(MonthlySchedule, day=st.integers(1, 31), time=TIMES),
    CRON,
)


@st.composite
def zone_and_instant(draw: st.DrawFn) -> tuple[str, dt.datetime]:
    """A zone and an instant, often within a day or two of one of the zone's offset changes."""
    zone = draw(
        st.one_of(
            st.sampled_from(DST_ZONES),
            st.sampled_from(OTHER_ZONES),
            st.sampled_from(all_zones()),
        )
    )
    changes = transitions(zone)
    if changes and draw(st.booleans()):
        center = draw(st.sampled_from(changes))
        offset = draw(st.integers(-2 * 86_400, 86_400))
        instant = center + dt.timedelta(seconds=offset)
    else:
        instant = utc(2000, 1, 1) + dt.timedelta(seconds=draw(st.integers(0, 38 * 365 * 86_400)))
    if draw(st.booleans()):
        instant += dt.timedelta(microseconds=draw(st.integers(0, 999_999)))
    return zone, instant


def gap_before(instant: dt.datetime, zone: ZoneInfo) -> tuple[dt.datetime, dt.datetime] | None:
    """The local times the clock skipped just before `instant`, if it jumped forward there."""
    before, shown = reading(instant - SECOND, zone), reading(instant, zone)
    return (before, shown) if shown - before > SECOND else None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pattern=PATTERNS, zone_instant=zone_and_instant())
def test_next_run_is_after_the_instant_and_on_the_pattern(
    pattern: WallClockPattern, zone_instant: tuple[str, dt.datetime]
) -> None:
    zone_name, after = zone_instant
    zone = ZoneInfo(zone_name)
    result = next_run_after(pattern, after, zone_name)
    assert result.tzinfo is UTC
    assert result > after
    assert result.microsecond == 0
    shown = reading(result, zone)
    if not slot_matches(pattern, shown):
        # Only allowed at a forward jump that skipped one of the pattern's slots.
        gap = gap_before(result, zone)
        assert gap is not None, (result, shown)
        skipped = gap[0].replace(second=grid_second(pattern), microsecond=0)
        found = False
        while skipped < gap[1]:
            found = found or (skipped > gap[0] and slot_matches(pattern, skipped))
            skipped += MINUTE
        assert found, (result, gap)
    # Nothing of the pattern fires between `after` and the result (checked when close by).
    if result - after <= dt.timedelta(days=3):
        assert brute_force_runs(pattern, zone, after, result) == [result]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pattern=PATTERNS, zone_instant=zone_and_instant(), days=st.integers(1, 3))
def test_iterating_matches_the_simulated_clock(
    pattern: WallClockPattern, zone_instant: tuple[str, dt.datetime], days: int
) -> None:
    zone_name, start = zone_instant
    end = start + dt.timedelta(days=days)
    zone = ZoneInfo(zone_name)
    expected = brute_force_runs(pattern, zone, start, end)
    assert runs_until(pattern, start, end, zone_name) == expected
    assert len(set(expected)) == len(expected)


# Per zone, patterns whose slots fall into its gap and its repeated hour (New York: 02:00-03:00
# skipped, 01:00-02:00 twice; Lord Howe: 02:00-02:30 skipped, 01:30-02:00 twice; Santiago:
# 00:00-01:00 skipped, 23:00-24:00 twice).
YEAR_CASES: dict[str, list[WallClockPattern]] = {
    "America/New_York": [
        HourlySchedule(minute=30),
        DailySchedule(time=dt.time(2, 30)),
        DailySchedule(time=dt.time(1, 30)),
        CronSchedule("*/20 0-3 * * *"),
    ],
    "Australia/Lord_Howe": [
        HourlySchedule(minute=45, second=10),
        DailySchedule(time=dt.time(2, 15)),
        DailySchedule(time=dt.time(1, 45)),
        WeeklySchedule(days=[Weekday.SUNDAY, Weekday.SATURDAY], time=dt.time(2, 15, 10)),
    ],
    "America/Santiago": [
        DailySchedule(time=dt.time(0)),
        DailySchedule(time=dt.time(23, 30)),
        MonthlySchedule(day=31, time=dt.time(0, 30)),
        CronSchedule("*/20 22-23,0-1 * * *"),
    ],
}


def year_cases() -> Iterator[Any]:
    for zone, patterns in YEAR_CASES.items():
        for pattern in patterns:
            yield pytest.param(zone, pattern, id=f"{zone}-{pattern.describe()}")


@pytest.mark.parametrize(("zone_name", "pattern"), list(year_cases()))
def test_a_full_year_matches_the_simulated_clock(zone_name: str, pattern: WallClockPattern) -> None:
    start, end = utc(2024, 1, 1), utc(2025, 1, 1)
    zone = ZoneInfo(zone_name)
    found = runs_until(pattern, start, end, zone_name)
    assert found == brute_force_runs(pattern, zone, start, end)
    if isinstance(pattern, DailySchedule):
        # Exactly one run per local day (the year's local days that start within the window).
        local_days = [reading(run, zone).date() for run in found]
        assert len(set(local_days)) == len(local_days)
        assert len(found) in (365, 366, 367)


def test_daily_once_per_local_day_in_every_dst_zone() -> None:
    for zone_name in DST_ZONES:
        zone = ZoneInfo(zone_name)
        for slot_time in (dt.time(0), dt.time(1, 30), dt.time(2, 30), dt.time(9)):
            found = runs_until(
                DailySchedule(time=slot_time), utc(2024, 1, 2), utc(2025, 1, 1), zone
            )
            days = [reading(run, zone).date() for run in found]
            assert len(set(days)) == len(days), (zone_name, slot_time)
            # Consecutive runs are about a day apart (at most the zone's largest jump off).
            gaps = {b - a for a, b in itertools.pairwise(found)}
            assert all(dt.timedelta(hours=20) <= gap <= dt.timedelta(hours=28) for gap in gaps), (
                zone_name,
                slot_time,
                sorted(gaps),
            )


@settings(max_examples=150, deadline=None)
@given(
    pattern=st.one_of(PATTERNS, st.builds(IntervalSchedule, minutes=st.integers(1, 1_440))),
    zone_instant=zone_and_instant(),
    hours_down=st.integers(0, 72),
    limit=st.one_of(st.none(), st.integers(1, 5)),
)
def test_missed_runs_are_consecutive_slots(
    pattern: Any, zone_instant: tuple[str, dt.datetime], hours_down: int, limit: int | None
) -> None:
    zone_name, earlier = zone_instant
    due = next_run_after(pattern, earlier, zone_name)
    now = due + dt.timedelta(hours=hours_down, seconds=1)
    found = missed_runs(pattern, zone_name, due, now, limit=limit)
    assert found[0] == due
    assert all(slot <= now for slot in found)
    for previous, current in itertools.pairwise(found):
        assert current == next_run_after(pattern, previous, zone_name)
    if limit is None or len(found) < limit:
        assert next_run_after(pattern, found[-1], zone_name) > now
    assume(limit is None)
    plan = plan_due_runs(pattern, zone_name, due, now, catch_up_missed=True)
    assert plan.slots == tuple(found)
    assert plan.next_run_at == next_run_after(pattern, found[-1], zone_name) > now
    single = plan_due_runs(pattern, zone_name, due, now, catch_up_missed=False)
    assert single.slots == (due,)
    assert single.next_run_at == next_run_after(pattern, now, zone_name)
