"""The horsies scheduler: enqueues the tasks of ``AppConfig(schedule=ScheduleConfig(...))`` when
their schedules come due.

Run it with ``horsies scheduler myapp.instance:app`` or programmatically with :func:`run_scheduler`;
embed it in your own event loop with :class:`Scheduler`. The schedule models (`ScheduleConfig`,
`TaskSchedule`, the patterns) live in core: ``from horsies import ScheduleConfig, ...``.
"""

from __future__ import annotations

from horsies_scheduler.service import Scheduler, prepare_scheduler, run_scheduler
from horsies_scheduler.validation import resolve_schedule, resolve_schedules

__all__ = [
    "Scheduler",
    "prepare_scheduler",
    "resolve_schedule",
    "resolve_schedules",
    "run_scheduler",
]
