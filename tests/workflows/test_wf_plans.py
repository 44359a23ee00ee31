"""The statements that advance a workflow inside a worker's exchange run with generic plans (the
exchange forces them for its transaction): they must find the nodes they touch through an index,
not read every node of every workflow, whatever the number of workflows kept."""

from __future__ import annotations

import pytest
from db_rows import generic_plan, sql
from horsies.workflows.store.session import nodes_update_query

_WORKFLOWS = 12
_NODES = 200


def _fill(conninfo: str) -> str:
    """Twelve finished-looking chains of 200 nodes; returns the id of one of them."""
    sql(
        conninfo,
        "INSERT INTO horsies_workflows (id, name, status, on_error, root_workflow_id) "
        "SELECT 'wf' || w, 'chain', 'RUNNING', 'fail', 'wf' || w "
        "FROM generate_series(1, %(workflows)s) AS w",
        {"workflows": _WORKFLOWS},
    )
    sql(
        conninfo,
        "INSERT INTO horsies_workflow_tasks (id, workflow_id, task_index, node_id, task_name, "
        "dependencies, status) "
        "SELECT 'wf' || w || '-' || i, 'wf' || w, i, 'link' || i, 'noop', "
        "CASE WHEN i = 0 THEN '{}'::int[] ELSE ARRAY[i - 1] END, 'COMPLETED' "
        "FROM generate_series(1, %(workflows)s) AS w, generate_series(0, %(nodes)s - 1) AS i",
        {"workflows": _WORKFLOWS, "nodes": _NODES},
    )
    sql(conninfo, "ANALYZE horsies_workflows, horsies_workflow_tasks")
    return "wf1"


@pytest.mark.timeout(60)
def test_a_node_update_reads_only_the_nodes_it_writes(clean_db: str) -> None:
    workflow_id = _fill(clean_db)
    query = nodes_update_query(
        [{"workflow_id": workflow_id, "task_index": 150, "status": "ENQUEUED"}]
    )
    plan = generic_plan(clean_db, query.sql, query.params or {})
    assert "Seq Scan on horsies_workflow_tasks" not in plan, plan
    assert "Hash Join" not in plan, plan
