"""Tests for horsies.config.schedules: every field, default and rule of the schedule models.

Field type/range violations raise pydantic's ValidationError; library rules raise
ConfigurationError E205 (collected into MultipleConfigurationErrors when several are found).
Also covers AppConfig.schedule and its log_config block, and the documented deep import
``horsies.core.models.schedule``.
"""

from __future__ import annotations

import datetime as dt
import logging
import traceback
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import horsies
import horsies.config.schedules as schedules_module
import pytest
from horsies import (
    AppConfig,
    CronSchedule,
    DailySchedule,
    HourlySchedule,
    IntervalSchedule,
    MonthlySchedule,
    PostgresConfig,
    ScheduleConfig,
    SchedulePattern,
    TaskSchedule,
    Weekday,
    WeeklySchedule,
)
from horsies.config.schedules import (
    SCHEDULE_NAME_MAX_LENGTH,
    CronFields,
    parse_cron,
    resolve_timezone,
)
from horsies.errors import ConfigurationError, ErrorCode, HorsiesError, MultipleConfigurationErrors
from pydantic import TypeAdapter, ValidationError

E205 = ErrorCode.CONFIG_INVALID_SCHEDULE
URL = "postgresql+psycopg://user:s3cret@localhost:5432/app"
PATTERN_ADAPTER: TypeAdapter[SchedulePattern] = TypeAdapter(SchedulePattern)


def schedule(**kwargs: Any) -> TaskSchedule:
    fields: dict[str, Any] = {
        "name": "nightly",
        "task_name": "tasks.nightly",
        "pattern": DailySchedule(time=dt.time(3, 0)),
    }
    fields.update(kwargs)
    return TaskSchedule(**fields)


def assert_schedule_error(error: BaseException, message: str) -> ConfigurationError:
    """A single E205 ConfigurationError with `message`, not wrapped in pydantic's error."""
    assert isinstance(error, ConfigurationError)
    assert not isinstance(error, MultipleConfigurationErrors)
    assert isinstance(error, ValueError)
    assert error.code is E205
    assert error.message == message
    assert error.help_text
    assert "ValidationError" not in "".join(traceback.format_exception(error))
    return error


def messages(error: BaseException) -> list[str]:
    assert isinstance(error, MultipleConfigurationErrors)
    assert all(member.code is E205 for member in error.errors)
    return [member.message for member in error.errors]


# --------------------------------------------------------------------------------------------------
# Weekday
# --------------------------------------------------------------------------------------------------


def test_weekday_is_a_str_enum_of_lower_case_names() -> None:
    assert [day.value for day in Weekday] == [
        "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
    ]  # fmt: skip
    assert [day.name for day in Weekday] == [day.value.upper() for day in Weekday]
    assert isinstance(Weekday.MONDAY, str)
    assert Weekday.FRIDAY == "friday"
    assert Weekday("sunday") is Weekday.SUNDAY


# --------------------------------------------------------------------------------------------------
# IntervalSchedule
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unit", "low", "high"),
    [("seconds", 1, 86_400), ("minutes", 1, 1_440), ("hours", 1, 168), ("days", 1, 365)],
)
def test_interval_unit_ranges(unit: str, low: int, high: int) -> None:
    assert getattr(IntervalSchedule.model_validate({unit: low}), unit) == low
    assert getattr(IntervalSchedule.model_validate({unit: high}), unit) == high
    for bad in (low - 1, high + 1):
        with pytest.raises(ValidationError):
            IntervalSchedule.model_validate({unit: bad})


def test_interval_defaults_and_type() -> None:
    interval = IntervalSchedule(minutes=30)
    assert interval.type == "interval"
    assert (interval.seconds, interval.hours, interval.days) == (None, None, None)


def test_interval_without_units_is_e205() -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        IntervalSchedule()
    assert_schedule_error(excinfo.value, "IntervalSchedule requires at least one time unit")
    with pytest.raises(ConfigurationError):
        IntervalSchedule(seconds=None, minutes=None, hours=None, days=None)


def test_interval_units_add_up() -> None:
    assert IntervalSchedule(hours=1, minutes=30).period == dt.timedelta(minutes=90)
    every = IntervalSchedule(days=1, hours=2, minutes=3, seconds=4)
    assert every.period == dt.timedelta(days=1, hours=2, minutes=3, seconds=4)
    assert IntervalSchedule(seconds=86_400).period == dt.timedelta(days=1)


def test_interval_describe() -> None:
    assert IntervalSchedule(minutes=30).describe() == "every 30m"
    assert IntervalSchedule(hours=1, minutes=30).describe() == "every 1h30m"
    assert IntervalSchedule(days=2, seconds=5).describe() == "every 2d5s"


# --------------------------------------------------------------------------------------------------
# HourlySchedule / DailySchedule / MonthlySchedule
# --------------------------------------------------------------------------------------------------


def test_hourly_fields() -> None:
    hourly = HourlySchedule(minute=5)
    assert (hourly.type, hourly.minute, hourly.second) == ("hourly", 5, 0)
    assert HourlySchedule(minute=59, second=59).second == 59
    assert HourlySchedule(minute=0).describe() == "hourly at :00:00"
    assert HourlySchedule(minute=5, second=7).describe() == "hourly at :05:07"


@pytest.mark.parametrize("fields", [{}, {"minute": -1}, {"minute": 60}, {"minute": 0, "second": 60},
                                    {"minute": 0, "second": -1}])  # fmt: skip
def test_hourly_ranges(fields: dict[str, int]) -> None:
    with pytest.raises(ValidationError):
        HourlySchedule.model_validate(fields)


def test_daily_fields_and_microseconds_ignored() -> None:
    daily = DailySchedule(time=dt.time(3, 4, 5, 678_901))
    assert daily.type == "daily"
    assert daily.time == dt.time(3, 4, 5)
    assert daily.describe() == "daily at 03:04:05"
    assert DailySchedule.model_validate({"time": "09:30"}).time == dt.time(9, 30)
    with pytest.raises(ValidationError):
        DailySchedule()  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        DailySchedule.model_validate({"time": "25:00"})


@pytest.mark.parametrize("model", [DailySchedule, WeeklySchedule, MonthlySchedule])
def test_wall_clock_time_with_tzinfo_is_e205(model: type[Any]) -> None:
    extra: dict[str, Any] = {"days": [Weekday.MONDAY]} if model is WeeklySchedule else {}
    extra |= {"day": 1} if model is MonthlySchedule else {}
    with pytest.raises(ConfigurationError) as excinfo:
        model(time=dt.time(9, tzinfo=dt.UTC), **extra)
    error = assert_schedule_error(excinfo.value, "schedule time must not carry a timezone")
    assert error.notes == ["time=09:00:00+00:00"]
    assert "timezone=" in (error.help_text or "")


def test_monthly_fields() -> None:
    monthly = MonthlySchedule(day=1, time=dt.time(0))
    assert monthly.type == "monthly"
    assert monthly.describe() == "monthly on day 1 at 00:00:00"
    assert MonthlySchedule(day=31, time=dt.time(0, 0, 0, 5)).time == dt.time(0)
    for bad in (0, 32):
        with pytest.raises(ValidationError):
            MonthlySchedule(day=bad, time=dt.time(0))


# --------------------------------------------------------------------------------------------------
# WeeklySchedule
# --------------------------------------------------------------------------------------------------


def test_weekly_fields() -> None:
    weekly = WeeklySchedule(days=[Weekday.MONDAY, Weekday.FRIDAY], time=dt.time(9, 0, 0, 1))
    assert weekly.type == "weekly"
    assert weekly.time == dt.time(9)
    assert weekly.describe() == "weekly on monday, friday at 09:00:00"
    from_strings = WeeklySchedule.model_validate({"days": ["sunday"], "time": "07:15"})
    assert from_strings.days == [Weekday.SUNDAY]


def test_weekly_needs_at_least_one_day() -> None:
    with pytest.raises(ValidationError):
        WeeklySchedule(days=[], time=dt.time(9))


def test_weekly_unknown_day_is_a_validation_error() -> None:
    with pytest.raises(ValidationError):
        WeeklySchedule.model_validate({"days": ["funday"], "time": "09:00"})


def test_weekly_duplicate_days_is_e205() -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        WeeklySchedule(days=[Weekday.MONDAY, Weekday.TUESDAY, Weekday.MONDAY], time=dt.time(9))
    error = assert_schedule_error(excinfo.value, "duplicate days in WeeklySchedule")
    assert error.notes == ["repeated: monday"]


# --------------------------------------------------------------------------------------------------
# CronSchedule and parse_cron
# --------------------------------------------------------------------------------------------------


def test_cron_positional_and_keyword_construction() -> None:
    positional = CronSchedule("*/5 * * * *")
    keyword = CronSchedule(expression="*/5 * * * *")
    assert positional == keyword
    assert positional.type == "cron"
    assert positional.describe() == "cron */5 * * * *"
    validated = CronSchedule.model_validate({"type": "cron", "expression": "0 9 * * 1"})
    assert validated.parsed.hours == (9,)
    with pytest.raises(TypeError):
        CronSchedule("* * * * *", expression="* * * * *")  # type: ignore[call-overload]
    with pytest.raises(ValidationError):
        CronSchedule()  # type: ignore[call-overload]
    with pytest.raises(ValidationError):
        CronSchedule("* * * * *", bogus=1)  # type: ignore[call-overload]


def test_cron_whitespace_is_normalised() -> None:
    assert CronSchedule("  0\t9  * *   mon ").expression == "0 9 * * mon"


def test_parse_cron_fields() -> None:
    fields = parse_cron("*/15 0-6/2 1,15,31 jan-mar,DEC mon-fri")
    assert fields == CronFields(
        minutes=(0, 15, 30, 45),
        hours=(0, 2, 4, 6),
        days=(1, 15, 31),
        months=(1, 2, 3, 12),
        weekdays=(1, 2, 3, 4, 5),
        day_of_month_wildcard=False,
        day_of_week_wildcard=False,
    )


def test_parse_cron_wildcards_steps_and_sundays() -> None:
    every = parse_cron("* * * * *")
    assert every.minutes == tuple(range(60))
    assert every.hours == tuple(range(24))
    assert every.days == tuple(range(1, 32))
    assert every.months == tuple(range(1, 13))
    assert every.weekdays == tuple(range(7))
    assert every.day_of_month_wildcard
    assert every.day_of_week_wildcard
    assert parse_cron("5/20 * * * *").minutes == (5, 25, 45)
    assert parse_cron("0 * * * 7").weekdays == (0,)
    assert parse_cron("0 * * * 5-7").weekdays == (0, 5, 6)
    assert parse_cron("0 * * * sun,SAT").weekdays == (0, 6)
    assert parse_cron("0 * */10 * *").days == (1, 11, 21, 31)
    assert parse_cron("0 * */10 * *").day_of_month_wildcard
    assert not parse_cron("0 * 1 * *").day_of_month_wildcard
    assert parse_cron("0 0 * * */2").day_of_week_wildcard
    assert parse_cron("*/90 * * * *").minutes == (0,)


def test_cron_day_rule() -> None:
    either = parse_cron("0 0 1 * mon")  # both restricted: the 1st OR a Monday
    assert either.matches_date(dt.date(2024, 6, 1))  # a Saturday, the 1st
    assert either.matches_date(dt.date(2024, 6, 3))  # a Monday
    assert not either.matches_date(dt.date(2024, 6, 4))
    both = parse_cron("0 0 */2 * mon")  # day-of-month starts with '*': both must match
    assert both.matches_date(dt.date(2024, 6, 3))  # Monday the 3rd
    assert not both.matches_date(dt.date(2024, 6, 10))  # Monday the 10th
    assert not both.matches_date(dt.date(2024, 6, 5))
    month = parse_cron("0 0 * jun *")
    assert month.matches_date(dt.date(2024, 6, 30))
    assert not month.matches_date(dt.date(2024, 7, 1))


@pytest.mark.parametrize(
    ("expression", "note"),
    [
        ("* * * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 4"),
        ("* * * * * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 6"),
        ("", "expected 5 fields (minute hour day-of-month month day-of-week), got 0"),
        ("60 * * * *", "minute field '60': value 60 out of range 0-59"),
        ("* 24 * * *", "hour field '24': value 24 out of range 0-23"),
        ("* * 0 * *", "day-of-month field '0': value 0 out of range 1-31"),
        ("* * * 13 *", "month field '13': value 13 out of range 1-12"),
        ("* * * * 8", "day-of-week field '8': value 8 out of range 0-7"),
        ("10-5 * * * *", "minute field '10-5': range '10-5' runs backwards"),
        ("*/0 * * * *", "minute field '*/0': step '0' must be a positive number"),
        ("*/x * * * *", "minute field '*/x': step 'x' must be a positive number"),
        ("1,,2 * * * *", "minute field '1,,2': cannot read ''"),
        ("*-5 * * * *", "minute field '*-5': cannot read '*-5'"),
        ("1-2-3 * * * *", "minute field '1-2-3': cannot read '1-2-3'"),
        ("? * * * *", "minute field '?': cannot read '?'"),
        ("mon * * * *", "minute field 'mon': 'mon' is not a number"),
        ("* * * foo *", "month field 'foo': 'foo' is not a number or a name"),
        ("* * * * monday", "day-of-week field 'monday': 'monday' is not a number or a name"),
        ("0 0 30 2 *", "day-of-month 30 never occurs in month 2: it would never run"),
        ("0 0 31 apr,jun *", "day-of-month 31 never occurs in month apr,jun: it would never run"),
    ],
)
def test_invalid_cron_is_e205(expression: str, note: str) -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        CronSchedule(expression)
    error = assert_schedule_error(excinfo.value, f"invalid cron expression '{expression}'")
    assert error.notes == [note]
    assert "minute hour day-of-month month day-of-week" in (error.help_text or "")


def test_cron_that_only_runs_on_a_date_or_weekday_is_valid() -> None:
    # Both day fields restricted: "the 30th of February OR any Monday" still runs.
    assert parse_cron("0 0 30 2 mon").days == (30,)
    assert parse_cron("0 0 29 2 *").days == (29,)  # leap years


def test_cron_errors_of_several_fields_are_collected() -> None:
    with pytest.raises(MultipleConfigurationErrors) as excinfo:
        CronSchedule("60 24 * * *")
    assert messages(excinfo.value) == ["invalid cron expression '60 24 * * *'"] * 2
    assert [member.notes for member in excinfo.value.errors] == [
        ["minute field '60': value 60 out of range 0-59"],
        ["hour field '24': value 24 out of range 0-23"],
    ]
    assert excinfo.value.report.phase_name == "CronSchedule"


# --------------------------------------------------------------------------------------------------
# Patterns in general
# --------------------------------------------------------------------------------------------------

ALL_PATTERNS: list[Any] = [
    IntervalSchedule(hours=1, minutes=30),
    HourlySchedule(minute=5, second=30),
    DailySchedule(time=dt.time(3)),
    WeeklySchedule(days=[Weekday.FRIDAY, Weekday.MONDAY], time=dt.time(9)),
    MonthlySchedule(day=31, time=dt.time(23, 59, 59)),
    CronSchedule("*/5 * * * *"),
]


@pytest.mark.parametrize("pattern", ALL_PATTERNS, ids=lambda p: p.type)
def test_pattern_round_trips_through_dicts_and_json(pattern: Any) -> None:
    assert PATTERN_ADAPTER.validate_python(pattern.model_dump()) == pattern
    assert PATTERN_ADAPTER.validate_json(pattern.model_dump_json()) == pattern
    assert type(pattern).model_validate_json(pattern.model_dump_json()) == pattern
    assert schedule(pattern=pattern.model_dump()).pattern == pattern


@pytest.mark.parametrize("pattern", ALL_PATTERNS, ids=lambda p: p.type)
def test_pattern_refuses_unknown_fields(pattern: Any) -> None:
    with pytest.raises(ValidationError):
        type(pattern).model_validate({**pattern.model_dump(), "every": 5})


@pytest.mark.parametrize("pattern", ALL_PATTERNS, ids=lambda p: p.type)
def test_pattern_type_is_fixed(pattern: Any) -> None:
    other = "daily" if pattern.type != "daily" else "hourly"
    with pytest.raises(ValidationError):
        type(pattern).model_validate({**pattern.model_dump(), "type": other})


def test_pattern_union_needs_a_known_type() -> None:
    with pytest.raises(ValidationError):
        PATTERN_ADAPTER.validate_python({"type": "yearly", "time": "09:00"})
    with pytest.raises(ValidationError):
        PATTERN_ADAPTER.validate_python({"time": "09:00"})


def test_pattern_rule_errors_come_out_of_the_union_unwrapped() -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        schedule(pattern={"type": "interval"})
    assert_schedule_error(excinfo.value, "IntervalSchedule requires at least one time unit")
    with pytest.raises(ConfigurationError) as excinfo:
        schedule(pattern={"type": "weekly", "days": ["monday", "monday"], "time": "09:00"})
    assert_schedule_error(excinfo.value, "duplicate days in WeeklySchedule")


# --------------------------------------------------------------------------------------------------
# TaskSchedule
# --------------------------------------------------------------------------------------------------


def test_task_schedule_defaults() -> None:
    entry = schedule()
    assert entry.name == "nightly"
    assert entry.task_name == "tasks.nightly"
    assert entry.pattern == DailySchedule(time=dt.time(3))
    assert entry.args == ()
    assert entry.kwargs == {}
    assert entry.queue_name is None
    assert entry.enabled is True
    assert entry.timezone == "UTC"
    assert entry.catch_up_missed is False
    assert entry.zone.utcoffset(dt.datetime(2024, 1, 1)) == dt.timedelta(0)
    assert schedule().kwargs is not entry.kwargs


def test_task_schedule_fields() -> None:
    entry = TaskSchedule.model_validate(
        {
            "name": "report",
            "task_name": "tasks.report",
            "pattern": {"type": "weekly", "days": ["monday"], "time": "09:00"},
            "args": [1, "two"],
            "kwargs": {"verbose": True},
            "queue_name": "reports",
            "enabled": False,
            "timezone": "Europe/Berlin",
            "catch_up_missed": True,
        }
    )
    assert entry.pattern == WeeklySchedule(days=[Weekday.MONDAY], time=dt.time(9))
    assert entry.args == (1, "two")
    assert entry.kwargs == {"verbose": True}
    assert (entry.queue_name, entry.enabled, entry.catch_up_missed) == ("reports", False, True)
    assert entry.zone == ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize("missing", ["name", "task_name", "pattern"])
def test_task_schedule_required_fields(missing: str) -> None:
    fields: dict[str, Any] = {"name": "a", "task_name": "t", "pattern": {"type": "hourly",
                                                                         "minute": 0}}  # fmt: skip
    del fields[missing]
    with pytest.raises(ValidationError):
        TaskSchedule.model_validate(fields)


def test_task_schedule_name_limits() -> None:
    assert schedule(name="x" * SCHEDULE_NAME_MAX_LENGTH).name == "x" * 255
    for bad in ("", "x" * (SCHEDULE_NAME_MAX_LENGTH + 1)):
        with pytest.raises(ValidationError):
            schedule(name=bad)
    with pytest.raises(ValidationError):
        schedule(task_name="")


def test_task_schedule_refuses_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        schedule(timezone_name="UTC")


@pytest.mark.parametrize(
    ("timezone", "reason"),
    [
        ("Mars/Olympus_Mons", "no such zone in the IANA time zone database"),
        ("utc", "no such zone in the IANA time zone database"),
        ("America", "no such zone in the IANA time zone database"),
        ("../etc/passwd", "ZoneInfo keys must"),
        ("/etc/localtime", "ZoneInfo keys may not be absolute paths"),
        ("", "ZoneInfo keys must be normalized relative paths"),
    ],
)
def test_task_schedule_invalid_timezone_is_e205(timezone: str, reason: str) -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        schedule(timezone=timezone)
    error = excinfo.value
    assert isinstance(error, ValueError)
    assert error.code is E205
    assert error.message.startswith(f"Invalid timezone '{timezone}': {reason}")
    assert error.notes == [f"timezone={timezone!r}"]
    assert "IANA" in (error.help_text or "")
    assert "ValidationError" not in "".join(traceback.format_exception(error))


def test_resolve_timezone() -> None:
    assert resolve_timezone("America/New_York") == ZoneInfo("America/New_York")
    assert resolve_timezone("UTC").utcoffset(None) == dt.timedelta(0)
    with pytest.raises(ValueError, match=r"\[E205\]: Invalid timezone 'Nowhere/City': ") as info:
        resolve_timezone("Nowhere/City")
    assert isinstance(info.value, ConfigurationError)
    assert info.value.message.startswith("Invalid timezone 'Nowhere/City': ")


def test_utc_resolves_without_a_zone_database(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(key: str) -> ZoneInfo:
        raise ZoneInfoNotFoundError(key)

    monkeypatch.setattr(schedules_module, "ZoneInfo", missing)
    assert resolve_timezone("UTC") is dt.UTC
    assert resolve_timezone("Etc/UTC") is dt.UTC
    assert schedule().zone is dt.UTC
    with pytest.raises(ConfigurationError, match="pip install tzdata"):
        resolve_timezone("Europe/Berlin")


def test_task_schedule_errors_of_one_schedule_are_collected() -> None:
    with pytest.raises(MultipleConfigurationErrors) as excinfo:
        TaskSchedule.model_validate(
            {"name": "a", "task_name": "t", "pattern": {"type": "interval"}, "timezone": "Nope"}
        )
    assert sorted(messages(excinfo.value)) == [
        "IntervalSchedule requires at least one time unit",
        "Invalid timezone 'Nope': no such zone in the IANA time zone database",
    ]
    assert excinfo.value.report.phase_name == "TaskSchedule"


def test_task_schedule_mixed_errors_stay_a_validation_error() -> None:
    # A plain field error next to a library error: pydantic's report, listing both.
    with pytest.raises(ValidationError) as excinfo:
        TaskSchedule.model_validate(
            {"name": "", "task_name": "t", "pattern": {"type": "interval"}, "timezone": "UTC"}
        )
    assert len(excinfo.value.errors()) == 2


def test_task_schedule_describe() -> None:
    assert schedule().describe() == "nightly: daily at 03:00:00 -> tasks.nightly"
    described = schedule(
        timezone="Europe/Berlin", queue_name="q", catch_up_missed=True, enabled=False
    ).describe()
    assert described == (
        "nightly: daily at 03:00:00 (Europe/Berlin, queue=q, catch_up_missed, disabled)"
        " -> tasks.nightly"
    )
    interval = schedule(pattern=IntervalSchedule(minutes=30), timezone="Europe/Berlin")
    assert interval.describe() == "nightly: every 30m -> tasks.nightly"


# --------------------------------------------------------------------------------------------------
# ScheduleConfig
# --------------------------------------------------------------------------------------------------


def test_schedule_config_defaults() -> None:
    config = ScheduleConfig()
    assert config.enabled is True
    assert config.schedules == []
    assert config.check_interval_seconds == 1
    assert ScheduleConfig().schedules is not config.schedules


@pytest.mark.parametrize(("value", "ok"), [(0, False), (1, True), (60, True), (61, False)])
def test_schedule_config_check_interval_range(value: int, ok: bool) -> None:
    if ok:
        assert ScheduleConfig(check_interval_seconds=value).check_interval_seconds == value
    else:
        with pytest.raises(ValidationError):
            ScheduleConfig(check_interval_seconds=value)


def test_schedule_config_duplicate_names_is_e205() -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        ScheduleConfig(
            schedules=[schedule(), schedule(name="other"), schedule(), schedule(name="other")]
        )
    error = assert_schedule_error(excinfo.value, "duplicate schedule names")
    assert error.notes == ["repeated: 'nightly', 'other'"]


def test_schedule_config_collects_the_errors_of_all_schedules() -> None:
    with pytest.raises(MultipleConfigurationErrors) as excinfo:
        ScheduleConfig.model_validate(
            {
                "schedules": [
                    {"name": "a", "task_name": "t", "pattern": {"type": "interval"}},
                    {"name": "b", "task_name": "t", "pattern": {"type": "hourly", "minute": 1},
                     "timezone": "Bad/Zone"},
                    {"name": "c", "task_name": "t", "pattern": {"type": "cron",
                                                                "expression": "99 * * * *"}},
                ]
            }
        )  # fmt: skip
    assert messages(excinfo.value) == [
        "IntervalSchedule requires at least one time unit",
        "Invalid timezone 'Bad/Zone': no such zone in the IANA time zone database",
        "invalid cron expression '99 * * * *'",
    ]
    assert excinfo.value.report.phase_name == "ScheduleConfig"


def test_schedule_config_refuses_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        ScheduleConfig.model_validate({"enabled": True, "interval": 5})


def test_schedule_config_enabled_schedules() -> None:
    config = ScheduleConfig(
        schedules=[schedule(name="a"), schedule(name="b", enabled=False), schedule(name="c")]
    )
    assert [entry.name for entry in config.enabled_schedules()] == ["a", "c"]


def test_schedule_config_json_round_trip() -> None:
    config = ScheduleConfig(
        schedules=[
            schedule(name=f"s{index}", pattern=pattern, args=(1,), kwargs={"k": [1, 2]})
            for index, pattern in enumerate(ALL_PATTERNS)
        ],
        check_interval_seconds=5,
    )
    assert ScheduleConfig.model_validate_json(config.model_dump_json()) == config


# --------------------------------------------------------------------------------------------------
# AppConfig.schedule and log_config
# --------------------------------------------------------------------------------------------------


def app_config(**kwargs: Any) -> AppConfig:
    return AppConfig(broker=PostgresConfig(database_url=URL), **kwargs)


def test_app_config_schedule_defaults_to_none() -> None:
    config = app_config()
    assert config.schedule is None
    assert "schedule:" not in config.describe()


def test_app_config_accepts_a_schedule_config() -> None:
    schedule_config = ScheduleConfig(schedules=[schedule()])
    assert app_config(schedule=schedule_config).schedule == schedule_config
    from_dict = AppConfig.model_validate(
        {
            "broker": {"database_url": URL},
            "schedule": {
                "schedules": [
                    {"name": "x", "task_name": "t", "pattern": {"type": "daily", "time": "03:00"}}
                ]
            },
        }
    )
    assert from_dict.schedule is not None
    assert from_dict.schedule.schedules[0].pattern == DailySchedule(time=dt.time(3))


def test_app_config_schedule_errors_are_unwrapped() -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        AppConfig.model_validate(
            {
                "broker": {"database_url": URL},
                "schedule": {"schedules": [{"name": "x", "task_name": "t",
                                            "pattern": {"type": "interval"}}]},
            }
        )  # fmt: skip
    assert_schedule_error(excinfo.value, "IntervalSchedule requires at least one time unit")


def test_log_config_schedule_block(caplog: pytest.LogCaptureFixture) -> None:
    config = app_config(
        schedule=ScheduleConfig(
            schedules=[
                schedule(name="sync", pattern=IntervalSchedule(minutes=30)),
                schedule(name="tick", pattern=HourlySchedule(minute=5), enabled=False),
                schedule(name="nightly", pattern=DailySchedule(time=dt.time(3))),
                schedule(
                    name="report",
                    pattern=WeeklySchedule(days=[Weekday.MONDAY, Weekday.FRIDAY], time=dt.time(9)),
                    timezone="America/New_York",
                ),
                schedule(name="billing", pattern=MonthlySchedule(day=1, time=dt.time(0))),
                schedule(name="poll", pattern=CronSchedule("*/5 * * * *")),
            ],
            check_interval_seconds=5,
        )
    )
    logger = logging.getLogger("test.horsies.config.schedules")
    with caplog.at_level(logging.INFO, logger=logger.name):
        config.log_config(logger)
    lines = [line.strip() for line in caplog.records[0].getMessage().splitlines()]
    block = lines[lines.index("schedule:") :]
    assert block == [
        "schedule:",
        "enabled: True",
        "schedules: 6 (5 enabled)",
        "- sync: every 30m -> tasks.nightly",
        "- tick: hourly at :05:00 (disabled) -> tasks.nightly",
        "- nightly: daily at 03:00:00 -> tasks.nightly",
        "- report: weekly on monday, friday at 09:00:00 (America/New_York) -> tasks.nightly",
        "- billing: monthly on day 1 at 00:00:00 -> tasks.nightly",
        "- poll: cron */5 * * * * -> tasks.nightly",
        "check_interval: 5s",
    ]
    assert lines.index("recovery:") < lines.index("schedule:")
    raw = caplog.records[0].getMessage().splitlines()
    assert raw[raw.index("  schedule:") + 1] == "    enabled: True"


# --------------------------------------------------------------------------------------------------
# Public names (README list, the documented deep import)
# --------------------------------------------------------------------------------------------------

SCHEDULE_NAMES = [
    "CronSchedule",
    "DailySchedule",
    "HourlySchedule",
    "IntervalSchedule",
    "MonthlySchedule",
    "ScheduleConfig",
    "SchedulePattern",
    "TaskSchedule",
    "Weekday",
    "WeeklySchedule",
]


def test_schedule_names_are_exported_from_horsies() -> None:
    for name in SCHEDULE_NAMES:
        assert name in horsies.__all__
        assert getattr(horsies, name) is getattr(schedules_module, name)


def test_deep_import_path() -> None:
    from horsies.core.models import schedule as deep

    # What `from horsies.core.models.schedule import *` brings: every public name of the module.
    assert sorted(name for name in vars(deep) if not name.startswith("_")) == SCHEDULE_NAMES
    for name in SCHEDULE_NAMES:
        assert getattr(deep, name) is getattr(horsies, name)


def test_errors_are_horsies_errors() -> None:
    with pytest.raises(HorsiesError):
        IntervalSchedule()
