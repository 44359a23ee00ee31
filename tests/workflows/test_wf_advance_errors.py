"""A workflow whose advance hits a Python error (here: a node row whose stored kwargs are not a
JSON object) must not block the worker: the task results of the batch and the other workflows
still commit; the broken workflow is logged and left for the reaper."""

from __future__ import annotations

import psycopg
import pytest
import wf_child_app as wfc
from horsies import WorkflowSpec, WorkflowStatus, WorkflowTaskStatus, start_workflow
from horsies.broker import PostgresBroker
from horsies.workflows.nodes import TaskNode
from wf_exchange import app_broker_fixture, exchange, ok_outcome

pytestmark = pytest.mark.timeout(60)


broker = app_broker_fixture(wfc.app)


def _chain(name: str) -> WorkflowSpec:
    first = TaskNode(fn=wfc.step, args=("first",), node_id="first")
    second = TaskNode(fn=wfc.step, args=("second",), waits_for=[first], node_id="second")
    return wfc.app.workflow(name, [first, second], output=second)


def test_a_broken_workflow_does_not_block_the_batch(
    broker: PostgresBroker, caplog: pytest.LogCaptureFixture
) -> None:
    broken = start_workflow(_chain("wfadv_broken"), broker)
    healthy = start_workflow(_chain("wfadv_healthy"), broker)
    with psycopg.connect(broker.config.conninfo, autocommit=True) as conn:
        conn.execute(
            "UPDATE horsies_workflow_tasks SET task_kwargs = '[1, 2]' "
            "WHERE workflow_id = %s AND node_id = 'second'",
            (broken.workflow_id,),
        )
    roots = exchange(broker, slots=2)
    assert len(roots.started) == 2

    after = exchange(broker, [ok_outcome(s.task) for s in roots.started], slots=2)

    assert after.finished == {s.task.id for s in roots.started}
    # The healthy workflow moved on in the same transaction; the broken one recorded its node.
    assert [s.task.workflow_id for s in after.started] == [healthy.workflow_id]
    statuses = {t.node_id: t.status for t in broken.tasks()}
    assert statuses == {
        "first": WorkflowTaskStatus.COMPLETED,
        "second": WorkflowTaskStatus.PENDING,
    }
    assert broken.status() is WorkflowStatus.RUNNING
    assert "workflow_advance_failed" in caplog.text
