"""Start-up validation of the enabled schedules, and their resolution into broker targets.

The task must be registered (E300), its queue must resolve under the app's queue rules (E205),
and every required parameter of the task function must be given (E205). Arguments the function
cannot accept and arguments the codec cannot serialize are reported here too (E205), so that they
fail at start-up rather than at every run. Every enabled schedule is checked and all problems are
reported together (one alone is raised as itself).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from horsies.broker.enqueue import EnqueueRequest
from horsies.broker.schedules import ScheduleTarget
from horsies.codec import PayloadTooLargeError, args_to_json, check_payload_size, kwargs_to_json
from horsies.config.schedules import TaskSchedule
from horsies.errors import (
    ConfigurationError,
    ErrorCode,
    HorsiesError,
    MultipleValidationErrors,
    NotRegistered,
    raise_collected,
)

from horsies_scheduler.calculator import config_hash

if TYPE_CHECKING:
    from horsies.app import Horsies
    from horsies.tasks.function import TaskFunction

__all__ = ["check_app", "resolve_schedule", "resolve_schedules"]

_CODE: Final = ErrorCode.CONFIG_INVALID_SCHEDULE
_LISTED_TASKS_MAX: Final = 20


def _unlocated(error: HorsiesError) -> HorsiesError:
    # The schedule is configured in the user's app module, which we cannot point at from here.
    return error.with_location(None)


def _not_registered(app: Horsies, schedule: TaskSchedule) -> HorsiesError:
    names = sorted(app.tasks)
    shown = ", ".join(names[:_LISTED_TASKS_MAX]) or "(none)"
    if len(names) > _LISTED_TASKS_MAX:
        shown += f", ... ({len(names)} in all)"
    error = NotRegistered(
        schedule.task_name,
        f"scheduled task '{schedule.task_name}' not registered",
        notes=[f"schedule '{schedule.name}'", f"available tasks: {shown}"],
        help_text=(
            "check the task name, and that the module defining the task is imported by the app\n"
            "(app.discover_tasks([...]) lists the task modules the scheduler imports)"
        ),
    )
    return _unlocated(error)


def _resolve_queue(
    app: Horsies, schedule: TaskSchedule, task: TaskFunction[..., Any]
) -> tuple[str, int]:
    queue_name = schedule.queue_name if schedule.queue_name is not None else task.task_queue_name
    try:
        return app.resolve_queue(queue_name)
    except HorsiesError as exc:
        code = f"[{exc.code.value}] " if exc.code is not None else ""
        error = ConfigurationError(
            f"invalid queue configuration for schedule '{schedule.name}'",
            code=_CODE,
            notes=[f"{code}{exc.message}", *exc.notes],
            help_text=(
                "in DEFAULT mode leave TaskSchedule.queue_name unset; in CUSTOM mode set it\n"
                "(or the task's queue_name) to one of the configured custom_queues\n"
                f"valid queues: {', '.join(app.get_valid_queue_names())}"
            ),
        )
        raise _unlocated(error) from exc


def _check_arguments(schedule: TaskSchedule, task: TaskFunction[..., Any]) -> None:
    arguments = task.arguments
    missing = arguments.missing(schedule.args, schedule.kwargs)
    if missing:
        error = ConfigurationError(
            f"schedule '{schedule.name}' is missing required params for task '{task.task_name}'",
            code=_CODE,
            notes=[f"missing: {', '.join(missing)}", f"task signature: {arguments.signature}"],
            help_text="pass them in TaskSchedule(args=(...), kwargs={...})",
        )
        raise _unlocated(error)
    problem = arguments.problem(schedule.args, schedule.kwargs)
    if problem is not None:
        error = ConfigurationError(
            f"schedule '{schedule.name}' passes arguments task '{task.task_name}' does not accept",
            code=_CODE,
            notes=[problem, f"task signature: {arguments.signature}"],
            help_text="make TaskSchedule(args=(...), kwargs={...}) match the task's parameters",
        )
        raise _unlocated(error)


def _check_serializable(schedule: TaskSchedule, max_payload_bytes: int | None) -> None:
    try:
        args_json = args_to_json(schedule.args) if schedule.args else None
        kwargs_json = kwargs_to_json(schedule.kwargs) if schedule.kwargs else None
    except Exception as exc:
        error = ConfigurationError(
            f"arguments of schedule '{schedule.name}' cannot be serialized",
            code=_CODE,
            notes=[f"{type(exc).__name__}: {exc}"],
            help_text="use JSON-friendly values, pydantic models or dataclasses as arguments",
        )
        raise _unlocated(error) from exc
    try:
        # Every run sends these arguments: refuse at start-up what every send would refuse.
        check_payload_size("arguments", (args_json, kwargs_json), max_payload_bytes)
    except PayloadTooLargeError as exc:
        error = ConfigurationError(  # the note says what to do
            f"arguments of schedule '{schedule.name}' are too large", code=_CODE, notes=[str(exc)]
        )
        raise _unlocated(error) from exc


def resolve_schedule(app: Horsies, schedule: TaskSchedule) -> ScheduleTarget:
    """Validate one schedule against `app` and return what the broker runs for it.

    The task rows it produces use the task's own options, so a scheduled run is retried and
    expires like a `send()` of the task: retry policy, auto_retry_for and good_until, and the
    task's queue unless the schedule overrides it, with that queue's priority.

    Raises:
        NotRegistered: (E300, a `RegistryError`) the task is not registered.
        ConfigurationError: (E205) invalid queue, missing or unacceptable arguments, arguments that
            cannot be serialized, or an unknown timezone.
    """
    task: TaskFunction[..., Any] | None = app.tasks.get(schedule.task_name)
    if task is None:
        raise _not_registered(app, schedule)
    queue_name, priority = _resolve_queue(app, schedule, task)
    _check_arguments(schedule, task)
    _check_serializable(schedule, app.config.max_payload_bytes)
    schedule.zone  # noqa: B018 - raises E205 "Invalid timezone ..." where the zone is missing
    try:
        limit = task.limit_tag(tuple(schedule.args), dict(schedule.kwargs))
    except ValueError as exc:
        raise _unlocated(
            ConfigurationError(
                f"schedule '{schedule.name}': no limit key for its arguments",
                code=_CODE,
                notes=[str(exc)],
            )
        ) from exc
    return ScheduleTarget(
        name=schedule.name,
        pattern=schedule.pattern,
        timezone=schedule.timezone,
        catch_up_missed=schedule.catch_up_missed,
        config_hash=config_hash(schedule.pattern, schedule.timezone),
        task=EnqueueRequest(
            task_name=task.task_name,
            args=tuple(schedule.args),
            kwargs=dict(schedule.kwargs) or None,
            queue_name=queue_name,
            priority=priority,
            good_until=task.task_good_until,
            task_options=task.task_options_json,
            max_retries=task.task_max_retries,
            limit=limit,
        ),
    )


def resolve_schedules(app: Horsies, schedules: Sequence[TaskSchedule]) -> list[ScheduleTarget]:
    """:func:`resolve_schedule` for every enabled schedule in `schedules` (disabled ones are
    ignored); raises every problem found at once (a single one as itself,
    `MultipleValidationErrors` for several)."""
    targets: list[ScheduleTarget] = []
    errors: list[HorsiesError] = []
    for schedule in schedules:
        if not schedule.enabled:
            continue
        try:
            targets.append(resolve_schedule(app, schedule))
        except HorsiesError as exc:
            errors.append(exc)
    raise_collected(errors, "ScheduleConfig")
    return targets


def check_app(app: Horsies) -> list[HorsiesError]:
    """Every problem ``horsies scheduler`` would refuse ``app`` for at start-up (none when the app
    has no enabled schedule configuration); ``horsies check`` runs it through the
    ``horsies.checks`` entry point."""
    config = app.config.schedule
    if config is None or not config.enabled:
        return []
    try:
        resolve_schedules(app, config.schedules)
    except MultipleValidationErrors as exc:
        return list(exc.report.errors)
    except HorsiesError as exc:
        return [exc]
    return []
