"""When schedules come due: pure next-run arithmetic (no I/O, no clock reads).

The scheduler service stores each schedule's next run and asks this module for the one after;
everything here is a pure function of its arguments, so the rules are tested without a database.

Semantics (see docs/scheduling.md):

- `IntervalSchedule`: plain elapsed time, ``after + interval``; the timezone plays no part.
- Wall-clock patterns (hourly, daily, weekly, monthly, cron) define *slots*: local wall-clock
  times in the schedule's timezone (``09:00`` every day, ...). A slot fires at the first instant
  at which the local clock shows that time or later:

  - an ordinary local time fires at that time;
  - a local time that occurs twice (the clocks go back) fires once, at its first occurrence;
  - a local time that does not exist (the clocks go forward) fires at the first instant after the
    gap (a daily 02:30 in New York fires at 03:00 EDT on the day of the change).

  So a daily 09:00 schedule fires exactly once per local day at 09:00, on DST days too, and no
  slot is skipped or repeated. Slots that fall into the same gap collapse into one run.
- ``MonthlySchedule(day=31)`` runs on the last day of shorter months, so a month-end job runs
  every month instead of skipping February.

All returned datetimes are timezone-aware UTC.
"""

from __future__ import annotations

import bisect
import calendar
import datetime as dt
from dataclasses import dataclass
from typing import Final, assert_never

from horsies.config.schedules import (
    CronFields,
    CronSchedule,
    DailySchedule,
    HourlySchedule,
    IntervalSchedule,
    MonthlySchedule,
    SchedulePattern,
    Weekday,
    WeeklySchedule,
    parse_cron,
    resolve_timezone,
)

__all__ = [
    "DueRuns",
    "missed_runs",
    "next_run_after",
    "plan_due_runs",
    "resolve_timezone",
    "wall_clock_to_utc",
]

_MINUTE: Final = dt.timedelta(minutes=1)
_HOUR: Final = dt.timedelta(hours=1)
_DAY: Final = dt.timedelta(days=1)
_MIDNIGHT: Final = dt.time()
_WEEKDAY_INDEX: Final = {day: index for index, day in enumerate(Weekday)}  # monday = 0
# A valid cron expression matches within 400 years (the Gregorian cycle); beyond is a bug.
_CRON_SEARCH_YEARS: Final = 401


def _as_utc(value: dt.datetime, name: str) -> dt.datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")
    return value.astimezone(dt.UTC)


def _zone(tz: str | dt.tzinfo) -> dt.tzinfo:
    return resolve_timezone(tz) if isinstance(tz, str) else tz


def _local(instant: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    """The naive wall-clock reading of `zone` at `instant`."""
    return instant.astimezone(zone).replace(tzinfo=None, fold=0)


def wall_clock_to_utc(local: dt.datetime, tz: str | dt.tzinfo) -> dt.datetime:
    """The first instant (UTC) at which the wall clock of `tz` shows the naive `local` or later.

    For an ordinary local time that is the time itself; for a time that occurs twice it is the
    first occurrence; for a time skipped by a forward jump it is the end of the gap (the
    transition instant). `tz` is an IANA name or a tzinfo with PEP 495 ``fold`` support
    (`zoneinfo.ZoneInfo`, `datetime.timezone`).
    """
    zone = _zone(tz)
    naive = local.replace(tzinfo=None, fold=0)
    first = naive.replace(tzinfo=zone).astimezone(dt.UTC)  # fold=0: the earlier reading
    if _local(first, zone) == naive:
        return first
    # `naive` lies in a gap. fold=0 and fold=1 read it with the offsets before and after the
    # jump: one instant falls before the transition, the other after it. Bisect between them
    # for the transition (zone transitions happen on whole seconds).
    other = naive.replace(tzinfo=zone, fold=1).astimezone(dt.UTC)
    low, high = sorted((first, other))
    low_ts, high_ts = int(low.timestamp()), int(high.timestamp())
    if _local(high, zone) < naive:  # pragma: no cover - not a PEP 495 zone; best effort
        return high
    while high_ts - low_ts > 1:
        middle = (low_ts + high_ts) // 2
        if _local(dt.datetime.fromtimestamp(middle, dt.UTC), zone) >= naive:
            high_ts = middle
        else:
            low_ts = middle
    return dt.datetime.fromtimestamp(high_ts, dt.UTC)


def _next_at_least(values: tuple[int, ...], minimum: int) -> int | None:
    """The smallest entry of the sorted `values` that is >= `minimum`, or None."""
    index = bisect.bisect_left(values, minimum)
    return values[index] if index < len(values) else None


def _next_cron_slot(fields: CronFields, cursor: dt.datetime) -> dt.datetime:
    """The first whole minute strictly after the naive `cursor` that the expression matches."""
    t = cursor.replace(second=0, microsecond=0) + _MINUTE
    last_year = t.year + _CRON_SEARCH_YEARS
    while t.year <= last_year:
        if t.month not in fields.months:
            month = _next_at_least(fields.months, t.month + 1)
            if month is None:
                t = dt.datetime(t.year + 1, fields.months[0], 1)
            else:
                t = dt.datetime(t.year, month, 1)
            continue
        if not fields.matches_date(t.date()):
            t = dt.datetime.combine(t.date() + _DAY, _MIDNIGHT)
            continue
        hour = _next_at_least(fields.hours, t.hour)
        if hour is None:
            t = dt.datetime.combine(t.date() + _DAY, _MIDNIGHT)
            continue
        if hour != t.hour:
            t = t.replace(hour=hour, minute=0)
        minute = _next_at_least(fields.minutes, t.minute)
        if minute is None:
            t = t.replace(minute=0) + _HOUR
            continue
        return t.replace(minute=minute)
    raise RuntimeError(f"cron expression found no run within {_CRON_SEARCH_YEARS} years")


def _monthly_slot(year: int, month: int, pattern: MonthlySchedule) -> dt.datetime:
    day = min(pattern.day, calendar.monthrange(year, month)[1])  # short months: their last day
    return dt.datetime.combine(dt.date(year, month, day), pattern.time)


def _next_local_slot(
    pattern: HourlySchedule | DailySchedule | WeeklySchedule | MonthlySchedule | CronSchedule,
    cursor: dt.datetime,
) -> dt.datetime:
    """The first local (naive) slot of a wall-clock pattern strictly after the naive `cursor`."""
    match pattern:
        case HourlySchedule():
            slot = cursor.replace(minute=pattern.minute, second=pattern.second, microsecond=0)
            return slot if slot > cursor else slot + _HOUR
        case DailySchedule():
            slot = dt.datetime.combine(cursor.date(), pattern.time)
            return slot if slot > cursor else slot + _DAY
        case WeeklySchedule():
            weekdays = {_WEEKDAY_INDEX[day] for day in pattern.days}
            for offset in range(8):
                day = cursor.date() + offset * _DAY
                slot = dt.datetime.combine(day, pattern.time)
                if day.weekday() in weekdays and slot > cursor:
                    return slot
            raise AssertionError("a weekly schedule has a slot within eight days")
        case MonthlySchedule():
            slot = _monthly_slot(cursor.year, cursor.month, pattern)
            if slot > cursor:
                return slot
            if cursor.month == 12:
                return _monthly_slot(cursor.year + 1, 1, pattern)
            return _monthly_slot(cursor.year, cursor.month + 1, pattern)
        case CronSchedule():
            return _next_cron_slot(parse_cron(pattern.expression), cursor)
        case _:
            assert_never(pattern)


def next_run_after(
    pattern: SchedulePattern, after: dt.datetime, tz: str | dt.tzinfo = "UTC"
) -> dt.datetime:
    """The first run of `pattern` strictly after `after`, as an aware UTC datetime.

    `after` must be timezone-aware (any zone). `tz` is the schedule's timezone (an IANA name or
    a tzinfo) in which wall-clock patterns are read; an unknown name raises
    `ConfigurationError` (E205, a `ValueError`) ``Invalid timezone '<tz>': ...``. See the module
    docstring for DST behaviour.
    """
    start = _as_utc(after, "after")
    if isinstance(pattern, IntervalSchedule):
        return start + pattern.period
    zone = _zone(tz)
    cursor = _local(start, zone)
    while True:
        # Slots are visited in local order and their instants never decrease, so the first slot
        # whose instant lies after `start` is the answer. Only when `start` is in the second pass
        # of a repeated hour can a few slots (the first pass's) lie before it.
        slot = _next_local_slot(pattern, cursor)
        instant = wall_clock_to_utc(slot, zone)
        if instant > start:
            return instant
        cursor = slot


def missed_runs(
    pattern: SchedulePattern,
    tz: str | dt.tzinfo,
    next_run_at: dt.datetime,
    now: dt.datetime,
    *,
    limit: int | None = None,
) -> list[dt.datetime]:
    """The runs due by `now` for catch-up: one per missed slot, the overdue one included.

    `next_run_at` is the stored (overdue) next run; the result is ``[next_run_at, s1, s2, ...]``
    where each slot is `next_run_after` the previous one and every slot is <= `now`; empty when
    `next_run_at` is still in the future. With `limit`, only the earliest `limit` slots are
    returned: the caller stores ``next_run_after(last slot)``, which is still due, and picks up the
    rest on its next check, so a long outage never builds one huge batch.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    zone = _zone(tz)
    slot = _as_utc(next_run_at, "next_run_at")
    end = _as_utc(now, "now")
    runs: list[dt.datetime] = []
    while slot <= end and (limit is None or len(runs) < limit):
        runs.append(slot)
        slot = next_run_after(pattern, slot, zone)
    return runs


@dataclass(frozen=True)
class DueRuns:
    """What the scheduler does for one schedule at one check.

    Enqueue one task per entry of `slots` (in order; empty = nothing is due yet), then store
    `next_run_at`.
    """

    slots: tuple[dt.datetime, ...]
    next_run_at: dt.datetime


def plan_due_runs(
    pattern: SchedulePattern,
    tz: str | dt.tzinfo,
    next_run_at: dt.datetime,
    now: dt.datetime,
    *,
    catch_up_missed: bool,
    limit: int | None = None,
) -> DueRuns:
    """Decide the runs of a schedule whose stored next run is `next_run_at`, at time `now`.

    - Not due yet (`next_run_at` > `now`): no runs, `next_run_at` unchanged.
    - Without catch-up: one run for the overdue slot; the next run is computed from `now`, so
      slots missed during an outage are dropped.
    - With catch-up: one run per missed slot (`missed_runs`, the overdue one included); the next
      run follows the last of them, so the cadence is kept. `limit` bounds one batch (see
      `missed_runs`).
    """
    due = _as_utc(next_run_at, "next_run_at")
    current = _as_utc(now, "now")
    if due > current:
        return DueRuns(slots=(), next_run_at=due)
    zone = _zone(tz)
    if not catch_up_missed:
        return DueRuns(slots=(due,), next_run_at=next_run_after(pattern, current, zone))
    slots = missed_runs(pattern, zone, due, current, limit=limit)
    return DueRuns(slots=tuple(slots), next_run_at=next_run_after(pattern, slots[-1], zone))
