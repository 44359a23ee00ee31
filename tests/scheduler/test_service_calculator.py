"""The service's pure decisions: config hashes (a changed schedule is
noticed), what is due, when to wake, backoff."""

from __future__ import annotations

import datetime as dt

import pytest
from horsies import CronSchedule, DailySchedule, HourlySchedule, IntervalSchedule
from horsies.broker.locks import advisory_key, schedule_lock_key
from horsies.broker.schedules import ScheduleState
from horsies_scheduler.calculator import (
    ERROR_BACKOFF_MAX_S,
    MIN_WAKE_S,
    WakePlan,
    config_hash,
    due_names,
    error_backoff,
)

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
SECOND = dt.timedelta(seconds=1)


def state(name: str, next_run_at: dt.datetime | None) -> ScheduleState:
    return ScheduleState(
        schedule_name=name,
        last_run_at=None,
        next_run_at=next_run_at,
        last_task_id=None,
        run_count=0,
        config_hash="h",
        updated_at=None,
    )


# -- config hash -----------------------------------------------------------------------------------


def test_config_hash_is_sha256_hex_and_stable() -> None:
    digest = config_hash(IntervalSchedule(minutes=5), "UTC")
    assert len(digest) == 64
    assert int(digest, 16) >= 0
    assert digest == config_hash(IntervalSchedule(minutes=5), "UTC")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ((IntervalSchedule(minutes=5), "UTC"), (IntervalSchedule(minutes=6), "UTC")),
        ((IntervalSchedule(minutes=5), "UTC"), (IntervalSchedule(seconds=300), "UTC")),
        ((DailySchedule(time=dt.time(9)), "UTC"), (DailySchedule(time=dt.time(9)), "Europe/Paris")),
        ((DailySchedule(time=dt.time(9)), "UTC"), (HourlySchedule(minute=0), "UTC")),
        ((CronSchedule("0 9 * * *"), "UTC"), (CronSchedule("0 10 * * *"), "UTC")),
    ],
)
def test_config_hash_changes_with_pattern_or_timezone(
    a: tuple[IntervalSchedule | DailySchedule | HourlySchedule | CronSchedule, str],
    b: tuple[IntervalSchedule | DailySchedule | HourlySchedule | CronSchedule, str],
) -> None:
    assert config_hash(*a) != config_hash(*b)


def test_config_hash_ignores_cosmetic_differences() -> None:
    # Microseconds of a time are ignored; cron whitespace is normalised; dicts equal models.
    assert config_hash(DailySchedule(time=dt.time(9, 0, 0, 5)), "UTC") == config_hash(
        DailySchedule(time=dt.time(9)), "UTC"
    )
    assert config_hash(CronSchedule("*/5  *  * * *"), "UTC") == config_hash(
        CronSchedule("*/5 * * * *"), "UTC"
    )


def test_schedule_lock_key_follows_the_spec() -> None:
    assert schedule_lock_key("nightly") == advisory_key("horsies-schedule:nightly")
    assert -(2**63) <= schedule_lock_key("nightly") < 2**63
    assert schedule_lock_key("a") != schedule_lock_key("b")


# -- due schedules ---------------------------------------------------------------------------------


def test_due_names_are_missing_rows_first_then_most_overdue() -> None:
    states = {
        "late": state("late", T0 - 10 * SECOND),
        "later": state("later", T0 - 60 * SECOND),
        "now": state("now", T0),
        "future": state("future", T0 + SECOND),
        "unset": state("unset", None),
    }
    names = ["future", "late", "missing", "now", "later", "unset"]
    assert due_names(names, states, T0) == ["missing", "unset", "later", "late", "now"]


def test_due_names_ignores_rows_of_other_schedules() -> None:
    states = {"other": state("other", T0 - SECOND)}
    assert due_names(["mine"], states, T0) == ["mine"]
    assert due_names([], states, T0) == []


# -- waking up -------------------------------------------------------------------------------------


def test_wake_plan_defaults_to_the_check_interval() -> None:
    plan = WakePlan(5, now_mono=100.0)
    assert plan.delay(100.0) == 5.0
    plan.add(None, T0, 100.0)
    assert plan.delay(101.0) == 4.0


def test_wake_plan_wakes_at_the_earliest_next_run_by_the_database_clock() -> None:
    plan = WakePlan(60, now_mono=100.0)
    plan.add(T0 + 30 * SECOND, T0, received_mono=100.5)  # due 30 s after it was read
    plan.add(T0 + 10 * SECOND, T0 + 2 * SECOND, received_mono=101.0)  # due 8 s after read
    assert plan.delay(102.0) == pytest.approx(7.0)


def test_wake_plan_never_sleeps_less_than_the_minimum() -> None:
    plan = WakePlan(1, now_mono=0.0)
    plan.add(T0 - SECOND, T0, received_mono=0.0)  # already due (a catch-up still running)
    assert plan.delay(0.0) == MIN_WAKE_S


def test_error_backoff_doubles_up_to_the_cap() -> None:
    assert [error_backoff(n, 1) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert error_backoff(1, 60) == 60  # never shorter than the check interval
    assert error_backoff(50, 1) == ERROR_BACKOFF_MAX_S
