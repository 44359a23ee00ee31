"""Schedule models: which task `horsies scheduler` enqueues, and when.

A `ScheduleConfig` (attached as ``AppConfig(schedule=...)``) lists `TaskSchedule`s; each names a
registered task and a pattern saying when it runs::

    ScheduleConfig(schedules=[
        TaskSchedule(name="sync", task_name="tasks.sync", pattern=IntervalSchedule(minutes=30)),
        TaskSchedule(
            name="report",
            task_name="tasks.report",
            pattern=WeeklySchedule(days=[Weekday.MONDAY, Weekday.FRIDAY], time=time(9, 0)),
            timezone="Europe/Berlin",
        ),
        TaskSchedule(name="poll", task_name="tasks.poll", pattern=CronSchedule("*/5 * * * *")),
    ])

Patterns:

- `IntervalSchedule`: every fixed amount of elapsed time (timezone irrelevant);
- `HourlySchedule`, `DailySchedule`, `WeeklySchedule`, `MonthlySchedule`: wall-clock times in the
  schedule's `timezone` (``MonthlySchedule(day=31)`` runs on the last day of shorter months);
- `CronSchedule`: a standard five-field cron expression, also in wall-clock time.

Every pattern has a literal ``type`` field, so a plain dict such as
``{"type": "daily", "time": "03:00"}`` is accepted wherever a pattern is expected.

Errors follow the other config models: a field outside its type or range raises pydantic's
`ValidationError`; a rule the library adds (interval without units, duplicate weekdays, duplicate
schedule names, an invalid cron expression, an unknown timezone) raises `ConfigurationError` E205,
several problems found in one model together as `MultipleConfigurationErrors`. Both are
`ValueError`s. When the next run happens is computed by `horsies.schedule_calc`.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, Self, TypeAlias, overload
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from horsies.config.model import ConfigModel, repetition_error
from horsies.errors import ConfigurationError, ErrorCode, HorsiesError, raise_collected

__all__ = [
    "SCHEDULE_NAME_MAX_LENGTH",
    "CronFields",
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
    "parse_cron",
    "resolve_timezone",
]

_SCHEDULE_CODE: Final = ErrorCode.CONFIG_INVALID_SCHEDULE

SCHEDULE_NAME_MAX_LENGTH: Final = 255
"""Schedule names are the primary key of ``horsies_schedule_state`` (VARCHAR(255))."""


# --------------------------------------------------------------------------------------------------
# Timezones
# --------------------------------------------------------------------------------------------------

# Names that mean UTC even on a system without the IANA database (slim containers, Windows
# without the tzdata package), so the default timezone always works.
_UTC_NAMES: Final = frozenset({"UTC", "Etc/UTC"})


def resolve_timezone(name: str) -> dt.tzinfo:
    """The time zone named `name` in the IANA database (``"UTC"``, ``"Europe/Berlin"``, ...).

    Raises `ConfigurationError` (E205, also a `ValueError`) with the message
    ``Invalid timezone '<name>': <reason>`` for unknown or malformed names. ``"UTC"`` and
    ``"Etc/UTC"`` resolve even where the zone database is missing.
    """
    try:
        return ZoneInfo(name)
    except ZoneInfoNotFoundError:
        if name in _UTC_NAMES:
            return dt.UTC
        reason = "no such zone in the IANA time zone database"
    except (ValueError, OSError) as exc:  # malformed keys, non-TZif files, unreadable files
        reason = str(exc) or type(exc).__name__
    raise ConfigurationError(
        f"Invalid timezone '{name}': {reason}",
        code=_SCHEDULE_CODE,
        notes=[f"timezone={name!r}"],
        help_text=(
            "use an IANA time zone name such as 'UTC', 'Europe/Berlin' or 'America/New_York'\n"
            "(names are case-sensitive); if the name is right, this system lacks the time zone\n"
            "database: pip install tzdata"
        ),
    )


# --------------------------------------------------------------------------------------------------
# Cron expressions
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CronField:
    label: str
    low: int
    high: int
    names: Mapping[str, int]


# Fixed English names (not calendar.month_abbr, which follows the locale).
_MONTH_NAMES: Final = {
    "jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6,
    "jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12,
}  # fmt: skip
_WEEKDAY_NAMES: Final = {
    "sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6,
}  # fmt: skip

_CRON_FIELDS: Final = (
    _CronField("minute", 0, 59, {}),
    _CronField("hour", 0, 23, {}),
    _CronField("day-of-month", 1, 31, {}),
    _CronField("month", 1, 12, _MONTH_NAMES),
    _CronField("day-of-week", 0, 7, _WEEKDAY_NAMES),
)
_CRON_ITEM_RE: Final = re.compile(r"^(?P<start>\*|\w+)(?:-(?P<end>\w+))?(?:/(?P<step>\w+))?$")
_CRON_HELP: Final = (
    "a cron expression has five fields: minute hour day-of-month month day-of-week,\n"
    "each '*', a value, a range 'a-b', a list 'a,b' or a step '*/n', 'a-b/n';\n"
    "months and weekdays may be names (jan-dec, sun-sat; 0 and 7 are Sunday),\n"
    "e.g. '*/5 * * * *' (every 5 minutes) or '0 9 * * mon-fri' (09:00 on weekdays)"
)
# Longest length of each month in any year (February: 29 in leap years).
_MONTH_MAX_DAYS: Final = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


@dataclass(frozen=True)
class CronFields:
    """A parsed cron expression: the allowed values of each field, sorted ascending.

    `weekdays` uses 0 = Sunday ... 6 = Saturday (a 7 in the expression is stored as 0).
    Day rule (as in Vixie cron and cronie): when the day-of-month or the day-of-week field starts
    with ``*`` (`day_of_month_wildcard` / `day_of_week_wildcard`), a date must match both fields;
    when both are restricted, a date matching either one matches (``0 0 1 * mon`` runs on the 1st
    and on every Monday).
    """

    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: tuple[int, ...]
    day_of_month_wildcard: bool
    day_of_week_wildcard: bool

    def matches_date(self, date: dt.date) -> bool:
        """True if the expression runs on `date` (month, day-of-month and day-of-week rules)."""
        if date.month not in self.months:
            return False
        in_days = date.day in self.days
        in_weekdays = date.isoweekday() % 7 in self.weekdays
        if self.day_of_month_wildcard or self.day_of_week_wildcard:
            return in_days and in_weekdays
        return in_days or in_weekdays


def _cron_value(text: str, field: _CronField) -> int:
    if text.isdigit():
        value = int(text)
    elif text.lower() in field.names:
        value = field.names[text.lower()]
    else:
        raise ValueError(f"'{text}' is not a number" + (" or a name" if field.names else ""))
    if not field.low <= value <= field.high:
        raise ValueError(f"value {value} out of range {field.low}-{field.high}")
    return value


def _cron_item(item: str, field: _CronField) -> range:
    match = _CRON_ITEM_RE.fullmatch(item)
    if match is None:
        raise ValueError(f"cannot read '{item}'")
    start_text, end_text, step_text = match.group("start", "end", "step")
    step = 1
    if step_text is not None:
        if not step_text.isdigit() or int(step_text) < 1:
            raise ValueError(f"step '{step_text}' must be a positive number")
        step = int(step_text)
    if start_text == "*":
        if end_text is not None:
            raise ValueError(f"cannot read '{item}'")
        return range(field.low, field.high + 1, step)
    start = _cron_value(start_text, field)
    if end_text is None:
        # "5/15" means "5-max/15"; a lone value is just itself.
        end = field.high if step_text is not None else start
    else:
        end = _cron_value(end_text, field)
        if end < start:
            raise ValueError(f"range '{item}' runs backwards")
    return range(start, end + 1, step)


def _cron_field(text: str, field: _CronField) -> tuple[int, ...]:
    values: set[int] = set()
    for item in text.split(","):
        values.update(_cron_item(item, field))
    if field.label == "day-of-week" and 7 in values:
        values.discard(7)
        values.add(0)
    return tuple(sorted(values))


def _cron_error(expression: str, note: str) -> ConfigurationError:
    return ConfigurationError(
        f"invalid cron expression '{expression}'",
        code=_SCHEDULE_CODE,
        notes=[note],
        help_text=_CRON_HELP,
    )


@functools.lru_cache(maxsize=256)
def parse_cron(expression: str) -> CronFields:
    """Parse a five-field cron expression (``"*/5 * * * *"``) into its allowed values.

    Results are cached (the scheduler asks for every next run). Raises `ConfigurationError`
    (E205) naming each faulty field (several together as `MultipleConfigurationErrors`), and for
    expressions that can never run (``0 0 30 2 *``).
    """
    parts = expression.split()
    if len(parts) != len(_CRON_FIELDS):
        raise _cron_error(
            expression,
            f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(parts)}",
        )
    parsed: list[tuple[int, ...]] = []
    errors: list[HorsiesError] = []
    for text, field in zip(parts, _CRON_FIELDS, strict=True):
        try:
            parsed.append(_cron_field(text, field))
        except ValueError as exc:
            errors.append(_cron_error(expression, f"{field.label} field '{text}': {exc}"))
    raise_collected(errors, "CronSchedule")
    minutes, hours, days, months, weekdays = parsed
    fields = CronFields(
        minutes=minutes,
        hours=hours,
        days=days,
        months=months,
        weekdays=weekdays,
        day_of_month_wildcard=parts[2].startswith("*"),
        day_of_week_wildcard=parts[4].startswith("*"),
    )
    both_required = fields.day_of_month_wildcard or fields.day_of_week_wildcard
    if both_required and not any(day <= _MONTH_MAX_DAYS[month] for month in months for day in days):
        raise _cron_error(
            expression,
            f"day-of-month {parts[2]} never occurs in month {parts[3]}: it would never run",
        )
    return fields


# --------------------------------------------------------------------------------------------------
# Patterns
# --------------------------------------------------------------------------------------------------


class Weekday(StrEnum):
    """A day of the week for `WeeklySchedule`; the value is the lower-case English name."""

    MONDAY = "monday"
    TUESDAY = "tuesday"
    WEDNESDAY = "wednesday"
    THURSDAY = "thursday"
    FRIDAY = "friday"
    SATURDAY = "saturday"
    SUNDAY = "sunday"


def _wall_clock_time(value: dt.time) -> dt.time:
    """A pattern's time of day: naive, whole seconds (microseconds are ignored)."""
    if value.tzinfo is not None:
        raise ConfigurationError(
            "schedule time must not carry a timezone",
            code=_SCHEDULE_CODE,
            notes=[f"time={value.isoformat()}"],
            help_text=(
                "give a plain time such as time(9, 0) and set the schedule's timezone,\n"
                "e.g. TaskSchedule(..., timezone='Europe/Berlin')"
            ),
        )
    return value.replace(microsecond=0, fold=0)


class _Pattern(ConfigModel):
    """Base of the schedule patterns."""

    def describe(self) -> str:
        """A short human-readable description (``"daily at 03:00:00"``), used in logs."""
        raise NotImplementedError


class IntervalSchedule(_Pattern):
    """Run every fixed amount of elapsed time; the units add up (``hours=1, minutes=30`` = 90 min).

    The next run is the previous instant plus the interval; the timezone plays no part. At least
    one unit is required (E205).
    """

    type: Literal["interval"] = "interval"
    seconds: int | None = Field(default=None, ge=1, le=86_400)
    minutes: int | None = Field(default=None, ge=1, le=1_440)
    hours: int | None = Field(default=None, ge=1, le=168)
    days: int | None = Field(default=None, ge=1, le=365)

    @model_validator(mode="after")
    def _check_units(self) -> Self:
        if all(unit is None for unit in (self.seconds, self.minutes, self.hours, self.days)):
            raise ConfigurationError(
                "IntervalSchedule requires at least one time unit",
                code=_SCHEDULE_CODE,
                help_text=(
                    "set seconds, minutes, hours and/or days (they add up),\n"
                    "e.g. IntervalSchedule(minutes=30) or IntervalSchedule(hours=1, minutes=30)"
                ),
            )
        return self

    @property
    def period(self) -> dt.timedelta:
        """The interval as a timedelta (the sum of the given units)."""
        return dt.timedelta(
            days=self.days or 0,
            hours=self.hours or 0,
            minutes=self.minutes or 0,
            seconds=self.seconds or 0,
        )

    def describe(self) -> str:
        """``every 30m``, ``every 1h30m``, ``every 2d12h``, ..."""
        units = ((self.days, "d"), (self.hours, "h"), (self.minutes, "m"), (self.seconds, "s"))
        return "every " + "".join(f"{value}{unit}" for value, unit in units if value is not None)


class HourlySchedule(_Pattern):
    """Run every hour at ``:minute:second`` local time."""

    type: Literal["hourly"] = "hourly"
    minute: int = Field(ge=0, le=59)
    second: int = Field(default=0, ge=0, le=59)

    def describe(self) -> str:
        """``hourly at :05:00``."""
        return f"hourly at :{self.minute:02d}:{self.second:02d}"


class _AtTimeOfDay(_Pattern):
    """A pattern that runs at a local wall-clock `time`. Each subclass declares the field itself,
    so that it keeps its place in the dumped model (which the scheduler hashes)."""

    @field_validator("time", check_fields=False)
    @classmethod
    def _check_time(cls, value: dt.time) -> dt.time:
        return _wall_clock_time(value)


class DailySchedule(_AtTimeOfDay):
    """Run every day at `time` local time (microseconds are ignored)."""

    type: Literal["daily"] = "daily"
    time: dt.time

    def describe(self) -> str:
        """``daily at 03:00:00``."""
        return f"daily at {self.time:%H:%M:%S}"


class WeeklySchedule(_AtTimeOfDay):
    """Run on each of `days` at `time` local time (at least one day, no duplicates)."""

    type: Literal["weekly"] = "weekly"
    days: list[Weekday] = Field(min_length=1)
    time: dt.time

    @model_validator(mode="after")
    def _check_days(self) -> Self:
        repeated = repetition_error(
            [day.value for day in self.days],
            "duplicate days in WeeklySchedule",
            code=_SCHEDULE_CODE,
            help_text="list each weekday once, e.g. days=[Weekday.MONDAY, Weekday.FRIDAY]",
        )
        if repeated is not None:
            raise repeated
        return self

    def describe(self) -> str:
        """``weekly on monday, friday at 09:00:00``."""
        days = ", ".join(day.value for day in self.days)
        return f"weekly on {days} at {self.time:%H:%M:%S}"


class MonthlySchedule(_AtTimeOfDay):
    """Run every month on `day` at `time` local time.

    Months shorter than `day` run on their last day (``day=31`` runs on 30 April and on 28 or
    29 February).
    """

    type: Literal["monthly"] = "monthly"
    day: int = Field(ge=1, le=31)
    time: dt.time

    def describe(self) -> str:
        """``monthly on day 1 at 00:00:00``."""
        return f"monthly on day {self.day} at {self.time:%H:%M:%S}"


class CronSchedule(_Pattern):
    """Run whenever a standard five-field cron expression matches, in local time.

    ``CronSchedule("*/5 * * * *")`` and ``CronSchedule(expression="0 9 * * mon-fri")`` are
    equivalent. Fields: minute (0-59), hour (0-23), day of month (1-31), month (1-12 or
    jan-dec), day of week (0-7 or sun-sat; 0 and 7 are Sunday); each field takes ``*``, values,
    ranges ``a-b``, lists ``a,b`` and steps ``*/n``, ``a-b/n``, ``a/n``. Day-of-month and
    day-of-week combine as in Vixie cron (see `CronFields`). Runs have minute precision.
    Whitespace between the fields is normalised to single spaces.
    """

    type: Literal["cron"] = "cron"
    expression: str

    @overload
    def __init__(self, expression: str, /) -> None: ...

    @overload
    def __init__(self, /, *, expression: str, type: Literal["cron"] = "cron") -> None: ...

    def __init__(self, expression: str | None = None, /, **data: Any) -> None:
        if expression is not None:
            if "expression" in data:
                raise TypeError("CronSchedule() got the expression both by position and by name")
            data["expression"] = expression
        super().__init__(**data)

    @field_validator("expression")
    @classmethod
    def _check_expression(cls, value: str) -> str:
        parse_cron(value)
        return " ".join(value.split())

    @property
    def parsed(self) -> CronFields:
        """The parsed expression."""
        return parse_cron(self.expression)

    def describe(self) -> str:
        """``cron */5 * * * *``."""
        return f"cron {self.expression}"


SchedulePattern: TypeAlias = Annotated[
    IntervalSchedule
    | HourlySchedule
    | DailySchedule
    | WeeklySchedule
    | MonthlySchedule
    | CronSchedule,
    Field(discriminator="type"),
]
"""Any schedule pattern; a dict with a ``type`` key ("interval", "hourly", ...) also validates."""


# --------------------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------------------


class TaskSchedule(ConfigModel):
    """One schedule: enqueue `task_name` with `args`/`kwargs` whenever `pattern` comes due.

    `name` identifies the schedule (its state row survives restarts under this name, so keep it
    stable). `queue_name` overrides the task's queue (CUSTOM mode only). Wall-clock patterns are
    read in `timezone`, an IANA name checked when the schedule is built (E205). Disabled
    schedules are ignored entirely. With `catch_up_missed`, runs missed while no scheduler was
    running are all enqueued when it comes back (use it where every period matters, such as
    syncs; avoid it for notifications).
    """

    name: str = Field(min_length=1, max_length=SCHEDULE_NAME_MAX_LENGTH)
    task_name: str = Field(min_length=1)
    pattern: SchedulePattern
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = Field(default_factory=dict[str, Any])
    queue_name: str | None = None
    enabled: bool = True
    timezone: str = "UTC"
    catch_up_missed: bool = False

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        resolve_timezone(value)
        return value

    @property
    def zone(self) -> dt.tzinfo:
        """`timezone` resolved to a tzinfo."""
        return resolve_timezone(self.timezone)

    def describe(self) -> str:
        """One line for logs: ``nightly: daily at 03:00:00 (Europe/Berlin) -> reports.build``."""
        extras: list[str] = []
        if self.timezone not in _UTC_NAMES and not isinstance(self.pattern, IntervalSchedule):
            extras.append(self.timezone)
        if self.queue_name is not None:
            extras.append(f"queue={self.queue_name}")
        if self.catch_up_missed:
            extras.append("catch_up_missed")
        if not self.enabled:
            extras.append("disabled")
        suffix = f" ({', '.join(extras)})" if extras else ""
        return f"{self.name}: {self.pattern.describe()}{suffix} -> {self.task_name}"


class ScheduleConfig(ConfigModel):
    """The scheduler's configuration: the schedules and how often due ones are looked for.

    `enabled` is the master switch. Schedule names must be unique (E205). The scheduler checks
    for due schedules every `check_interval_seconds` (1-60).
    """

    enabled: bool = True
    schedules: list[TaskSchedule] = Field(default_factory=list[TaskSchedule])
    check_interval_seconds: int = Field(default=1, ge=1, le=60)

    @model_validator(mode="after")
    def _check_names(self) -> Self:
        repeated = repetition_error(
            [f"'{schedule.name}'" for schedule in self.schedules],
            "duplicate schedule names",
            code=_SCHEDULE_CODE,
            help_text=(
                "give every TaskSchedule a different name: the name identifies its\n"
                "stored state (last and next run)"
            ),
        )
        if repeated is not None:
            raise repeated
        return self

    def enabled_schedules(self) -> list[TaskSchedule]:
        """The schedules with ``enabled=True``, in configuration order."""
        return [schedule for schedule in self.schedules if schedule.enabled]

    def describe_lines(self) -> list[str]:
        """The ``schedule:`` block of `AppConfig.describe` (without indentation)."""
        lines = [
            f"enabled: {self.enabled}",
            f"schedules: {len(self.schedules)} ({len(self.enabled_schedules())} enabled)",
        ]
        lines.extend(f"- {schedule.describe()}" for schedule in self.schedules)
        lines.append(f"check_interval: {self.check_interval_seconds}s")
        return lines
