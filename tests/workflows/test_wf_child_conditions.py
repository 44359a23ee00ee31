"""Conditions of a parameterised child workflow are those of the child as it was built
(``build_with`` must be deterministic because workers rebuild it), even in a process that never
built it and whose spec registry holds another parameterisation under the same name."""

from __future__ import annotations

import psycopg
import pytest
import wf_child_app as wfc
from horsies import WorkflowHandle, WorkflowStatus, WorkflowTaskStatus, start_workflow
from horsies.broker import PostgresBroker
from horsies.workflows.store import reads, snapshot
from wf_exchange import app_broker_fixture, exchange, ok_outcome

pytestmark = pytest.mark.timeout(60)


broker = app_broker_fixture(wfc.app)


def test_child_conditions_come_from_the_child_as_built(broker: PostgresBroker) -> None:
    handle = start_workflow(wfc.Parent.build(wfc.app), broker)
    first = exchange(broker)  # the child's root task, built with mode="skip"
    assert first.started
    assert first.started[0].task.task_name == "wfchild.step"

    # Another process: nothing cached, and its registry holds a mode="run" build of the child.
    snapshot._child_specs.clear()  # pyright: ignore[reportPrivateUsage]
    wfc.Gated.build_with(wfc.app, mode="run")

    after = exchange(broker, [ok_outcome(first.started[0].task)])
    assert not after.started, "the skipped node must not be enqueued"
    child_info = next(t for t in handle.tasks() if t.node_id == "child")
    assert child_info.status is WorkflowTaskStatus.COMPLETED
    assert handle.status() is WorkflowStatus.COMPLETED
    rows = broker.execute(reads.nodes_op(_child_id(broker, handle)), action="test")
    assert [(r[1], r[3]) for r in rows] == [("first", "COMPLETED"), ("second", "SKIPPED")]


def _child_id(broker: PostgresBroker, handle: WorkflowHandle) -> str:
    with psycopg.connect(broker.config.conninfo) as conn:
        found = conn.execute(
            "SELECT id FROM horsies_workflows WHERE parent_workflow_id = %s", (handle.workflow_id,)
        ).fetchone()
    assert found is not None
    return str(found[0])
