"""Pure decisions of the scheduler service: config hashes, what is due, when to wake up.

The next-run arithmetic itself (every pattern, timezones and DST, short months, catch-up) is
`horsies.schedule_calc`, in core; this module adds what the service loop decides around it. No I/O
and no clock reads: times are passed in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Final

from horsies.broker.schedules import ScheduleState
from horsies.codec import dumps_json
from horsies.config.schedules import SchedulePattern
from horsies.schedule_calc import missed_runs, next_run_after, plan_due_runs

__all__ = [
    "ERROR_BACKOFF_MAX_S",
    "MIN_WAKE_S",
    "WakePlan",
    "config_hash",
    "due_names",
    "error_backoff",
    "missed_runs",
    "next_run_after",
    "plan_due_runs",
]

MIN_WAKE_S: Final = 0.001
"""Shortest sleep between two checks when a run is due at once (never a busy loop)."""

ERROR_BACKOFF_MAX_S: Final = 30.0
"""Longest wait between two checks while the database keeps failing."""


def config_hash(pattern: SchedulePattern, timezone: str) -> str:
    """SHA-256 hex of the codec JSON of ``{"pattern": pattern.model_dump(), "timezone": tz}``.

    Only the pattern and the timezone take part: changing a schedule's arguments, queue, task or
    catch-up setting keeps its stored next run.
    """
    text = dumps_json({"pattern": pattern.model_dump(), "timezone": timezone})
    return hashlib.sha256(text.encode()).hexdigest()


def due_names(
    names: Sequence[str], states: Mapping[str, ScheduleState], now: datetime
) -> list[str]:
    """The schedules among `names` to look at now, most overdue first.

    Due: a stored next run at or before `now`. Schedules without a state row, or whose row has no
    next run, come first (their row is initialised). The rest are left for later.
    """
    missing = [name for name in names if name not in states or states[name].next_run_at is None]
    due: list[tuple[datetime, str]] = []
    for name in names:
        state = states.get(name)
        if state is not None and state.next_run_at is not None and state.next_run_at <= now:
            due.append((state.next_run_at, name))
    return [*missing, *(name for _, name in sorted(due))]


class WakePlan:
    """When the service should check again, on the local monotonic clock.

    Starts at "one check interval from now" (the safety net that notices rows changed by other
    schedulers) and moves earlier for every known next run. A next run is read together with the
    database clock, so the wait is measured against the database's time, not this host's wall
    clock: schedulers on hosts with skewed clocks still wake on time.
    """

    def __init__(self, check_interval_s: float, now_mono: float) -> None:
        self.deadline = now_mono + float(check_interval_s)

    def add(self, next_run_at: datetime | None, db_now: datetime, received_mono: float) -> None:
        """Account for a next run read at database time `db_now`, received at `received_mono`
        (None: unknown, e.g. another scheduler is running it; the interval bound stands)."""
        if next_run_at is not None:
            due_in = (next_run_at - db_now).total_seconds()
            self.deadline = min(self.deadline, received_mono + due_in)

    def delay(self, now_mono: float) -> float:
        """Seconds to sleep from `now_mono`, at least :data:`MIN_WAKE_S`."""
        return max(MIN_WAKE_S, self.deadline - now_mono)


def error_backoff(consecutive_errors: int, check_interval_s: float) -> float:
    """Seconds to wait after `consecutive_errors` (>= 1) failed checks in a row: the check
    interval, doubling per further failure, at most :data:`ERROR_BACKOFF_MAX_S` (or the interval
    when that is longer)."""
    exponent = min(max(consecutive_errors - 1, 0), 16)
    return max(float(check_interval_s), min(ERROR_BACKOFF_MAX_S, check_interval_s * 2**exponent))
