"""App of the end-to-end test that a slow workflow condition holds no lock.

Workflow ``slow_condition``: roots ``quick`` and ``gated_by_marker``; ``conditional`` waits for
``quick`` and has a ``run_when`` that writes the marker file, then sleeps. ``gated_by_marker``
finishes once the marker exists, that is while the condition sleeps, on another worker. The marker
path comes from ``HORSIES_E2E_MARKER``; workers and the test import this module under the same
name, so the definition recorded on the workflow row is found by the worker.
"""

from __future__ import annotations

import os
import time
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

ENV_URL = "HORSIES_E2E_DATABASE_URL"
ENV_MARKER = "HORSIES_E2E_MARKER"
CONDITION_SLEEP_S = 2.0
_WAIT_FOR_MARKER_S = 60.0


def make_app(database_url: str) -> Horsies:
    """An app of this module's configuration (the test process uses one as producer)."""
    return Horsies(AppConfig(broker=PostgresConfig(database_url=database_url)))


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


def slow_condition(ctx: WorkflowContext) -> bool:
    del ctx
    _marker().write_text(str(time.time()))
    time.sleep(CONDITION_SLEEP_S)
    return True


class SlowCondition(WorkflowDefinition[str]):
    """Two roots; the conditional node waits for ``quick`` only."""

    name = "slow_condition"
    quick_node = TaskNode(fn=quick, node_id="quick")
    gated = TaskNode(fn=gated_by_marker, node_id="gated_by_marker")
    guarded = TaskNode(
        fn=conditional, node_id="conditional", waits_for=[quick_node], run_when=slow_condition
    )
