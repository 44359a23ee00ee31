"""Node times through the worker's exchange, step by step (no worker process).

The cases a real worker only hits by timing: one exchange that finishes a node and, in the same
transaction, starts its dependent (the dependent's start must still come after the dependency's
completion); a node whose task is cancelled before it starts; a child-workflow node.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
import wf_child_app as wfc
from horsies import WorkflowHandle, WorkflowStatus, WorkflowTaskInfo, start_workflow
from horsies.broker import PostgresBroker
from horsies.broker.finish import TaskOutcome
from horsies.tasks.handle import TaskHandle
from horsies.workflows.nodes import SubWorkflowNode, TaskNode
from node_status_letters import RUN, C, E, F, P, S
from psycopg.rows import dict_row
from wf_exchange import app_broker_fixture, exchange, ok_outcome

pytestmark = pytest.mark.timeout(60)


broker = app_broker_fixture(wfc.app)


def _infos(handle: WorkflowHandle) -> dict[str, WorkflowTaskInfo]:
    return {str(t.node_id): t for t in handle.tasks()}


def _task_row(broker: PostgresBroker, task_id: str) -> dict[str, Any]:
    with psycopg.connect(broker.config.conninfo, autocommit=True) as conn:
        cursor = conn.cursor(row_factory=dict_row)
        rows = cursor.execute("SELECT * FROM horsies_tasks WHERE id = %s", (task_id,)).fetchall()
    assert rows, task_id
    return rows[0]


def _never_ran(info: WorkflowTaskInfo) -> bool:
    return info.started_at is None and info.completed_at is None


def test_a_dependent_started_by_the_exchange_that_finished_its_dependency_starts_later(
    broker: PostgresBroker,
) -> None:
    first = TaskNode(fn=wfc.step, args=("first",), node_id="first")
    second = TaskNode(fn=wfc.step, args=("second",), waits_for=[first], node_id="second")
    handle = start_workflow(wfc.app.workflow("wftimes_chain", [first, second]), broker)
    nodes = _infos(handle)
    assert (nodes["first"].status, nodes["second"].status) == (E, P)
    assert _never_ran(nodes["first"])
    assert _never_ran(nodes["second"])

    one = exchange(broker)
    [started_first] = one.started
    nodes = _infos(handle)
    assert nodes["first"].status is RUN
    assert nodes["first"].started_at == _task_row(broker, started_first.task.id)["started_at"]
    assert nodes["first"].completed_at is None

    two = exchange(broker, [ok_outcome(started_first.task)])
    [started_second] = two.started  # enqueued and started in the same transaction
    nodes = _infos(handle)
    done = nodes["first"].completed_at
    started = nodes["second"].started_at
    assert done is not None
    assert started is not None
    assert started > done
    assert started == _task_row(broker, started_second.task.id)["started_at"]
    assert nodes["second"].status is RUN
    assert nodes["second"].completed_at is None

    exchange(broker, [ok_outcome(started_second.task)])
    assert handle.status() is WorkflowStatus.COMPLETED
    nodes = _infos(handle)
    completed = nodes["second"].completed_at
    assert completed is not None
    assert completed > started


def test_a_node_whose_task_is_cancelled_before_it_starts_has_no_times(
    broker: PostgresBroker,
) -> None:
    first = TaskNode(fn=wfc.step, args=("first",), node_id="first")
    second = TaskNode(fn=wfc.step, args=("second",), waits_for=[first], node_id="second")
    handle = start_workflow(wfc.app.workflow("wftimes_cancelled", [first, second]), broker)
    with psycopg.connect(broker.config.conninfo, autocommit=True) as conn:
        found = conn.execute(
            "SELECT task_id FROM horsies_workflow_tasks "
            "WHERE workflow_id = %s AND node_id = 'first'",
            (handle.workflow_id,),
        ).fetchone()
    assert found is not None
    assert TaskHandle(str(found[0]), broker=broker).cancel() is True

    nodes = _infos(handle)
    assert (nodes["first"].status, nodes["second"].status) == (F, S)
    assert _never_ran(nodes["first"]), nodes["first"]
    assert _never_ran(nodes["second"]), nodes["second"]


def test_a_child_workflow_node_starts_after_its_dependency_and_ends_with_its_child(
    broker: PostgresBroker,
) -> None:
    before = TaskNode(fn=wfc.step, args=("before",), node_id="before")
    child: SubWorkflowNode[str] = SubWorkflowNode(
        workflow_def=wfc.Gated, kwargs={"mode": "run"}, waits_for=[before], node_id="child"
    )
    handle = start_workflow(wfc.app.workflow("wftimes_parent", [before, child]), broker)
    outcomes: list[TaskOutcome] = []
    for _ in range(6):  # before, then the child's two links; one spare round per step
        result = exchange(broker, outcomes)
        outcomes = [ok_outcome(s.task) for s in result.started]
        if handle.status() is WorkflowStatus.COMPLETED:
            break
    assert handle.status() is WorkflowStatus.COMPLETED
    nodes = _infos(handle)
    assert (nodes["before"].status, nodes["child"].status) == (C, C)
    done = nodes["before"].completed_at
    started = nodes["child"].started_at
    ended = nodes["child"].completed_at
    assert done is not None
    assert started is not None
    assert ended is not None
    assert done < started < ended
