"""Compatibility path `horsies.core.models.schedule`; prefer `from horsies import ...`."""

from __future__ import annotations

from horsies.config.schedules import (
    CronSchedule,
    DailySchedule,
    HourlySchedule,
    IntervalSchedule,
    MonthlySchedule,
    ScheduleConfig,
    SchedulePattern,
    TaskSchedule,
    Weekday,
    WeeklySchedule,
)

__all__ = [
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
