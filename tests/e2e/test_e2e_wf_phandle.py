"""`WorkflowHandle` end to end against a real ``horsies worker`` (2 children).

Idempotent start; status, get, results (keyed by node id), result_for and tasks, sync and async
twins; a get() that times out answers WAIT_TIMEOUT. A gate file keeps one node running while the
test looks at the workflow from outside.

Async tests use a broker of their own and close it with ``close_async()`` inside their event loop:
a broker whose async pool is left for loop shutdown to close can hang that shutdown (reported to
the lead; pool workers still connecting are cancelled before the pool's closer runs).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_harness import Db, WorkerProcess, error_of, producer_app, worker_fixture
from horsies import (
    Horsies,
    LibraryErrorCode,
    NodeKey,
    TaskError,
    TaskNode,
    TaskResult,
    WorkflowHandle,
    WorkflowHandleMissingIdError,
    WorkflowSpec,
    WorkflowStatus,
    WorkflowTaskStatus,
    start_workflow,
    start_workflow_async,
)
from node_status_letters import C
from wf_apps import wf_patterns as wf

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

GET_MS = 30_000
SHORT_MS = 300


app = producer_app(wf.make_app)


worker = worker_fixture("wf_patterns", "--processes", "2")


@pytest.fixture
async def async_app(database_url: str) -> AsyncIterator[Horsies]:
    """A producer for one async test: its broker's async pool belongs to the test's event loop
    and is closed in that loop (see the module docstring)."""
    producer = wf.make_app(database_url)
    yield producer
    await producer.get_broker().close_async()


@pytest.fixture
def gate_path(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "gate"
    yield path
    path.touch()  # never leave a worker child blocked on a failed test's gate


def gated_spec(app: Horsies, name: str, gate_path: Path) -> tuple[WorkflowSpec, TaskNode[Any]]:
    """``gate`` (returns 42 once the gate opens) -> ``after`` (inspects gate's result)."""
    gate = TaskNode(fn=wf.gate, kwargs={"path": str(gate_path), "result": 42}, node_id="gate")
    after = TaskNode(fn=wf.inspect_arg, waits_for=[gate], args_from={"x": gate}, node_id="after")
    return app.workflow(name, [gate, after]), gate


def assert_not_ready(result: TaskResult[Any, TaskError], node_id: str, workflow_id: str) -> None:
    error = error_of(result)
    assert error.error_code == LibraryErrorCode.RESULT_NOT_READY
    assert error.message == f"Task '{node_id}' has not completed yet in workflow '{workflow_id}'"


def test_handle_sync_methods_before_and_after_completion(
    worker: WorkerProcess, app: Horsies, gate_path: Path
) -> None:
    spec, gate = gated_spec(app, "wfp_handle_sync", gate_path)
    handle = spec.start()
    wid = handle.workflow_id

    assert handle.status() is WorkflowStatus.RUNNING
    timeout = error_of(handle.get(timeout_ms=SHORT_MS))
    assert timeout.error_code == LibraryErrorCode.WAIT_TIMEOUT
    assert timeout.message == f"Workflow did not complete within {SHORT_MS}ms"
    assert_not_ready(handle.result_for(gate), "gate", wid)
    assert_not_ready(handle.result_for(NodeKey("after")), "after", wid)
    assert handle.results() == {}
    before = handle.tasks()
    assert [(t.index, t.name) for t in before] == [(0, "wfp.gate"), (1, "wfp.inspect")]
    assert before[0].status in (WorkflowTaskStatus.ENQUEUED, WorkflowTaskStatus.RUNNING)
    assert before[1].status is WorkflowTaskStatus.PENDING
    assert before[1].result is None
    assert before[1].started_at is None

    gate_path.touch()
    result = handle.get(timeout_ms=GET_MS).unwrap()
    assert set(result) == {"after"}
    picture = {"type": "TaskResult", "is_ok": True, "ok": 42}
    assert result["after"].unwrap() == picture
    assert handle.status() is WorkflowStatus.COMPLETED
    assert handle.result_for(gate).unwrap() == 42
    assert handle.result_for(NodeKey("after")).unwrap() == picture
    assert {k: r.unwrap() for k, r in handle.results().items()} == {"gate": 42, "after": picture}
    after = handle.tasks()
    assert [(t.index, t.name, t.status, t.node_id) for t in after] == [
        (0, "wfp.gate", C, "gate"),
        (1, "wfp.inspect", C, "after"),
    ]
    assert after[0].result is not None
    assert after[0].result.unwrap() == 42
    for info in after:
        assert info.started_at is not None
        assert info.completed_at is not None
    assert after[0].completed_at is not None
    assert after[1].started_at is not None
    assert after[0].completed_at < after[1].started_at
    # A repeated get() reads the stored outcome again.
    assert handle.get(timeout_ms=GET_MS).unwrap()["after"].unwrap() == picture


async def test_handle_async_methods_before_and_after_completion(
    worker: WorkerProcess, async_app: Horsies, gate_path: Path
) -> None:
    spec, gate = gated_spec(async_app, "wfp_handle_async", gate_path)
    handle = await spec.start_async()
    wid = handle.workflow_id

    assert await handle.status_async() is WorkflowStatus.RUNNING
    timeout = error_of(await handle.get_async(timeout_ms=SHORT_MS))
    assert timeout.error_code == LibraryErrorCode.WAIT_TIMEOUT
    assert_not_ready(await handle.result_for_async(gate), "gate", wid)
    assert_not_ready(await handle.result_for_async(NodeKey("after")), "after", wid)
    assert await handle.results_async() == {}
    before = await handle.tasks_async()
    assert [t.status for t in before][1] is WorkflowTaskStatus.PENDING

    gate_path.touch()
    result = (await handle.get_async(timeout_ms=GET_MS)).unwrap()
    assert result["after"].unwrap()["ok"] == 42
    assert await handle.status_async() is WorkflowStatus.COMPLETED
    assert (await handle.result_for_async(NodeKey("gate"))).unwrap() == 42
    assert set(await handle.results_async()) == {"gate", "after"}
    assert [(t.index, t.status) for t in await handle.tasks_async()] == [(0, C), (1, C)]


def test_result_for_needs_a_node_id(worker: WorkerProcess, app: Horsies) -> None:
    handle = wf.IdempotentWorkflow.build(app).start()
    handle.get(timeout_ms=GET_MS).unwrap()
    with pytest.raises(WorkflowHandleMissingIdError):
        handle.result_for(TaskNode(fn=wf.value, args=(1,)))
    # The definition's nodes got their attribute names as ids.
    assert handle.result_for(wf.idem_b).unwrap() == "b"


def test_start_with_an_existing_id_returns_the_same_workflow(
    worker: WorkerProcess, app: Horsies, db: Db
) -> None:
    wid = str(uuid.uuid4())
    first = wf.IdempotentWorkflow.build(app).start(workflow_id=wid)
    again = wf.IdempotentWorkflow.build(app).start(workflow_id=wid)
    # The spec is not compared: another definition under the same id changes nothing either.
    other = start_workflow(wf.MetaWorkflow.build(app), app.get_broker(), wid)
    assert first.workflow_id == again.workflow_id == other.workflow_id == wid
    result = first.get(timeout_ms=GET_MS).unwrap()
    assert result["b"].unwrap() == "b"
    late = wf.IdempotentWorkflow.build(app).start(workflow_id=wid)  # after it finished, too
    assert late.status() is WorkflowStatus.COMPLETED

    workflows = db.query("SELECT name, status FROM horsies_workflows WHERE id = %s", (wid,))
    assert workflows == [{"name": "wfp_idempotent", "status": "COMPLETED"}]
    nodes = db.query(
        "SELECT node_id FROM horsies_workflow_tasks WHERE workflow_id = %s ORDER BY task_index",
        (wid,),
    )
    assert [row["node_id"] for row in nodes] == ["a", "b"]
    tasks = db.query(
        "SELECT task_name FROM horsies_tasks WHERE workflow_id = %s ORDER BY task_name", (wid,)
    )
    assert [row["task_name"] for row in tasks] == ["wfp.value", "wfp.value"]


async def test_async_start_with_an_existing_id_is_idempotent(
    worker: WorkerProcess, async_app: Horsies, db: Db
) -> None:
    wid = str(uuid.uuid4())
    spec = wf.IdempotentWorkflow.build(async_app)
    first = await start_workflow_async(spec, async_app.get_broker(), wid)
    again = await spec.start_async(workflow_id=wid)
    assert first.workflow_id == again.workflow_id == wid
    assert (await again.get_async(timeout_ms=GET_MS)).is_ok()
    rows = db.query("SELECT count(*) AS n FROM horsies_tasks WHERE workflow_id = %s", (wid,))
    assert rows == [{"n": 2}]


def test_unknown_workflow_id_raises_value_error(app: Horsies) -> None:
    wid = str(uuid.uuid4())
    handle = WorkflowHandle(wid, app.get_broker())
    with pytest.raises(ValueError, match=f"Workflow {wid} not found"):
        handle.status()
    with pytest.raises(ValueError, match=f"Workflow {wid} not found"):
        handle.get(timeout_ms=1_000)


async def test_unknown_workflow_id_raises_value_error_async(async_app: Horsies) -> None:
    wid = str(uuid.uuid4())
    handle = WorkflowHandle(wid, async_app.get_broker())
    with pytest.raises(ValueError, match=f"Workflow {wid} not found"):
        await handle.status_async()
    with pytest.raises(ValueError, match=f"Workflow {wid} not found"):
        await handle.get_async(timeout_ms=1_000)


def test_same_task_twice_without_ids_is_keyed_by_generated_node_ids(
    worker: WorkerProcess, app: Horsies
) -> None:
    first = TaskNode(fn=wf.value, args=("one",))
    second = TaskNode(fn=wf.value, args=("two",))
    handle = app.workflow("wfp same task twice!", [first, second]).start()
    result = handle.get(timeout_ms=GET_MS).unwrap()
    # "<slugified workflow name>:<index>"; both nodes are sinks.
    assert {key: r.unwrap() for key, r in result.items()} == {
        "wfp_same_task_twice:0": "one",
        "wfp_same_task_twice:1": "two",
    }
    assert {key: r.unwrap() for key, r in handle.results().items()} == {
        "wfp_same_task_twice:0": "one",
        "wfp_same_task_twice:1": "two",
    }
    assert handle.result_for(second).unwrap() == "two"
