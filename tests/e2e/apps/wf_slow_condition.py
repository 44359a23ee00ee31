"""App of the end-to-end tests of slow and hanging workflow conditions.

Workflow ``slow_condition``: roots ``quick`` and ``gated_by_marker``; ``conditional`` waits for
``quick`` and has a ``run_when`` that writes the marker file, then sleeps. ``gated_by_marker``
finishes once the marker exists, that is while the condition sleeps, on another worker.

Workflow ``hanging_condition``: root ``quick``, then ``conditional`` whose ``run_when`` writes the
marker file and sleeps for ``HANG_S`` (far beyond the app's ``condition_timeout_s``, 3 s unless
``HORSIES_E2E_CONDITION_TIMEOUT_S`` says otherwise). ``slowcond.steady(seconds)`` is a plain task
to run beside it.

The marker path comes from ``HORSIES_E2E_MARKER``; workers and the test import this module under
the same name, so the definition recorded on the workflow row is found by the worker.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from horsies import (
    AppConfig,
    Horsies,
    PostgresConfig,
    TaskError,
    TaskNode,
    TaskResult,
    WorkflowContext,
    WorkflowDefinition,
)

from tests.recovery_timing import fast_recovery

ENV_URL = "HORSIES_E2E_DATABASE_URL"
ENV_MARKER = "HORSIES_E2E_MARKER"
ENV_CONDITION_TIMEOUT = "HORSIES_E2E_CONDITION_TIMEOUT_S"
CONDITION_SLEEP_S = 2.0
HANG_S = 40.0
_WAIT_FOR_MARKER_S = 60.0


def make_app(database_url: str) -> Horsies:
    """An app of this module's configuration (the test process uses one as producer)."""
    return Horsies(
        AppConfig(
            broker=PostgresConfig(database_url=database_url),
            recovery=fast_recovery(),
            condition_timeout_s=float(os.environ.get(ENV_CONDITION_TIMEOUT, "3")),
        )
    )


app = make_app(os.environ.get(ENV_URL, "postgresql+psycopg://u:p@127.0.0.1:1/unused"))


def _marker() -> Path:
    return Path(os.environ[ENV_MARKER])


@app.task("slowcond.quick")
def quick() -> TaskResult[str, TaskError]:
    return TaskResult(ok="quick")


@app.task("slowcond.gated_by_marker")
def gated_by_marker() -> TaskResult[float, TaskError]:
    """Finishes as soon as the condition has begun its sleep; returns the wall time it returned."""
    deadline = time.monotonic() + _WAIT_FOR_MARKER_S
    while not _marker().exists():
        if time.monotonic() > deadline:
            return TaskResult(err=TaskError(error_code="NO_MARKER", message="condition never ran"))
        time.sleep(0.01)
    return TaskResult(ok=time.time())


@app.task("slowcond.conditional")
def conditional() -> TaskResult[str, TaskError]:
    return TaskResult(ok="ran")


def _marks_then_sleeps(seconds: float) -> Callable[[WorkflowContext], bool]:
    """A condition that writes the marker file, sleeps ``seconds`` and lets its node run."""

    def condition(ctx: WorkflowContext) -> bool:
        del ctx
        _marker().write_text(str(time.time()))
        time.sleep(seconds)
        return True

    return condition


def _guarded(after: TaskNode[str], seconds: float) -> TaskNode[str]:
    """The node ``conditional`` after ``after``, run once its condition has slept ``seconds``."""
    return TaskNode(
        fn=conditional,
        node_id="conditional",
        waits_for=[after],
        run_when=_marks_then_sleeps(seconds),
    )


class SlowCondition(WorkflowDefinition[str]):
    """Two roots; the conditional node waits for ``quick`` only."""

    name = "slow_condition"
    quick_node = TaskNode(fn=quick, node_id="quick")
    gated = TaskNode(fn=gated_by_marker, node_id="gated_by_marker")
    guarded = _guarded(quick_node, CONDITION_SLEEP_S)


@app.task("slowcond.steady")
def steady(seconds: float) -> TaskResult[str, TaskError]:
    time.sleep(seconds)
    return TaskResult(ok="steady")


class HangingCondition(WorkflowDefinition[str]):
    """A root, then a node whose condition hangs."""

    name = "hanging_condition"
    first = TaskNode(fn=quick, node_id="quick")
    guarded = _guarded(first, HANG_S)
