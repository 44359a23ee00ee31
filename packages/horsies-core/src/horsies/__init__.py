"""horsies: a PostgreSQL-backed background task queue and workflow engine.

Everything a producer needs is importable from here: the app object and its configuration, task
results and errors, retry policies and task statuses, the schedule models that configure
``horsies scheduler``, and the workflow API (nodes, specs, class-based definitions, handles,
statuses and the context a workflow task receives). Workers come with the ``horsies-worker``
package (``horsies worker`` on the command line, :func:`run_worker` from Python).

Importing this package installs an exception hook that prints an uncaught ``HorsiesError`` in a
readable, Rust-compiler-like form (see ``HORSIES_PLAIN_ERRORS`` to turn it off).
"""

from __future__ import annotations

from typing import Any

from horsies.app import Horsies
from horsies.broker.attempts import TaskAttempt
from horsies.config import AppConfig, CustomQueueConfig, PostgresConfig, QueueMode, RecoveryConfig
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
from horsies.errors import (
    ErrorCode,
    MultipleValidationErrors,
    ValidationReport,
    WorkflowContextMissingIdError,
    WorkflowValidationError,
    install_exception_hook,
)
from horsies.results import LibraryErrorCode, TaskError, TaskResult
from horsies.retry import RetryPolicy
from horsies.tasks.context import TaskContext
from horsies.tasks.function import AsyncTaskFunction, TaskFunction
from horsies.tasks.handle import TaskHandle
from horsies.tasks.limits import Limit
from horsies.tasks.status import TASK_TERMINAL_STATES, TaskStatus
from horsies.tasks.unique import TaskAlreadyExists, Unique
from horsies.workflows.context import (
    SubWorkflowError,
    SubWorkflowSummary,
    WorkflowContext,
    WorkflowHandleMissingIdError,
    WorkflowMeta,
)
from horsies.workflows.definition import WorkflowDefinition
from horsies.workflows.handle import WorkflowHandle, WorkflowTaskInfo
from horsies.workflows.nodes import (
    AnyNode,
    NodeKey,
    SubWorkflowNode,
    SuccessCase,
    SuccessPolicy,
    TaskNode,
    slugify,
)
from horsies.workflows.spec import WorkflowSpec
from horsies.workflows.start import start_workflow, start_workflow_async
from horsies.workflows.status import (
    WORKFLOW_TASK_TERMINAL_STATES,
    WORKFLOW_TERMINAL_STATES,
    OnError,
    SubWorkflowRetryMode,
    WorkflowStatus,
    WorkflowTaskStatus,
)

__all__ = [
    "TASK_TERMINAL_STATES",
    "WORKFLOW_TASK_TERMINAL_STATES",
    "WORKFLOW_TERMINAL_STATES",
    "AnyNode",
    "AppConfig",
    "AsyncTaskFunction",
    "CronSchedule",
    "CustomQueueConfig",
    "DailySchedule",
    "ErrorCode",
    "Horsies",
    "HourlySchedule",
    "IntervalSchedule",
    "LibraryErrorCode",
    "Limit",
    "MonthlySchedule",
    "MultipleValidationErrors",
    "NodeKey",
    "OnError",
    "PostgresConfig",
    "QueueMode",
    "RecoveryConfig",
    "RetryPolicy",
    "ScheduleConfig",
    "SchedulePattern",
    "SubWorkflowError",
    "SubWorkflowNode",
    "SubWorkflowRetryMode",
    "SubWorkflowSummary",
    "SuccessCase",
    "SuccessPolicy",
    "TaskAlreadyExists",
    "TaskAttempt",
    "TaskContext",
    "TaskError",
    "TaskFunction",
    "TaskHandle",
    "TaskNode",
    "TaskResult",
    "TaskSchedule",
    "TaskStatus",
    "Unique",
    "ValidationReport",
    "Weekday",
    "WeeklySchedule",
    "WorkflowContext",
    "WorkflowContextMissingIdError",
    "WorkflowDefinition",
    "WorkflowHandle",
    "WorkflowHandleMissingIdError",
    "WorkflowMeta",
    "WorkflowSpec",
    "WorkflowStatus",
    "WorkflowTaskInfo",
    "WorkflowTaskStatus",
    "WorkflowValidationError",
    "run_worker",
    "slugify",
    "start_workflow",
    "start_workflow_async",
]

__version__ = "0.1.0"


def run_worker(app_or_locator: Horsies | str, /, **options: Any) -> None:
    """Run a worker in this process until SIGTERM/SIGINT.

    Takes the app (or a locator such as ``"myapp.tasks:app"``) and the options of the
    ``horsies worker`` command (``processes=4``, ``max_claim_batch=2``, ...). Prefer the
    ``horsies worker`` command in production; use this to embed a worker in your own launcher.
    Needs the ``horsies-worker`` package.
    """
    try:
        # horsies-worker is a separate distribution a web app need not install.
        from horsies_worker import run_worker as worker_entry
    except ImportError as exc:  # pragma: no cover - depends on what is installed
        raise ImportError(
            "run_worker needs the worker package: pip install horsies-worker", name="horsies_worker"
        ) from exc
    worker_entry(app_or_locator, **options)


install_exception_hook()
