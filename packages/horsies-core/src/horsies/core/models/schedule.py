"""Compatibility path `horsies.core.models.schedule`; prefer `from horsies import ...`."""

# Each name is re-exported explicitly (`import X as X`), so type checkers see it here too.
# ruff: noqa: PLC0414
from horsies.config.schedules import CronSchedule as CronSchedule
from horsies.config.schedules import DailySchedule as DailySchedule
from horsies.config.schedules import HourlySchedule as HourlySchedule
from horsies.config.schedules import IntervalSchedule as IntervalSchedule
from horsies.config.schedules import MonthlySchedule as MonthlySchedule
from horsies.config.schedules import ScheduleConfig as ScheduleConfig
from horsies.config.schedules import SchedulePattern as SchedulePattern
from horsies.config.schedules import TaskSchedule as TaskSchedule
from horsies.config.schedules import Weekday as Weekday
from horsies.config.schedules import WeeklySchedule as WeeklySchedule
