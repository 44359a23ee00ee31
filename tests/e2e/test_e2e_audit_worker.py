"""Audit: one ``horsies worker`` (2 children) against bad input, odd names and a dead child.

Task names and values are data, never SQL; a corrupt row fails its task alone; a fresh child
replaces a dead one; every import the worker does (app module and task modules, in the main
process and in each child) runs with sends suppressed.
"""

from __future__ import annotations

import os
import re
import signal
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil
import pytest
from apps.audit_app import IMPORT_SEND_TASK, ODD_NAME, create_app
from e2e_harness import Db, WorkerProcess, error_of, producer_app, wait_until, worker_fixture
from horsies.app import Horsies
from horsies.codec import task_result_from_json
from horsies.results import LibraryErrorCode
from horsies.tasks.handle import TaskHandle

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

GET_MS = 20_000
PROCESSES = 2
ODD_VALUES: list[Any] = [
    "it's",
    'say "hi"',
    "back\\slash",
    "semi;colon -- comment",
    "$$ %s %(id)s {}",
    "nul\x00byte",
    "ünïcødé ✓",
    {"key'; DROP TABLE horsies_tasks; --": [1, None]},
]


app = producer_app(create_app)


worker = worker_fixture("audit_app", "--processes", str(PROCESSES))


def spawn_children(worker: WorkerProcess) -> list[int]:
    """Pids of the worker's task children (forked by its fork server, named ``horsies-child``)."""
    pids: list[int] = []
    for child in psutil.Process(worker.pid).children(recursive=True):
        try:
            if child.name() == "horsies-child":
                pids.append(child.pid)
        except psutil.NoSuchProcess:
            continue
    return pids


def park(
    db: Db, app: Horsies, task_name: str, call_args: tuple[Any, ...], fields: dict[str, str]
) -> str:
    """Enqueue `task_name` an hour ahead, overwrite columns with raw values, then make it due."""
    task = app.tasks[task_name]
    task_id = app.get_broker().enqueue(
        task_name,
        args=call_args,
        sent_at=datetime.now(UTC) + timedelta(hours=1),
        task_options=task.task_options_json,
        max_retries=task.task_max_retries,
    )
    for column, value in fields.items():
        assert column in ("args", "kwargs", "task_options")
        db.execute(f"UPDATE horsies_tasks SET {column} = %s WHERE id = %s", (value, task_id))
    db.execute("UPDATE horsies_tasks SET sent_at = now() WHERE id = %s", (task_id,))
    return task_id


# -- imports done by the worker run with sends suppressed -----------------------------------------


def test_every_import_of_the_worker_suppresses_module_level_sends(
    worker: WorkerProcess, app: Horsies, db: Db
) -> None:
    # The worker is ready: its main process and its fork server have imported both modules, and
    # the children forked from the server have them without importing them again.
    markers = re.findall(r"audit-import-send:(\w+):(\S+):(\d+)", worker.output())
    children = set(spawn_children(worker))
    (server,) = {psutil.Process(pid).ppid() for pid in children}
    for module in ("app", "tasks"):
        pids = {int(pid) for name, _, pid in markers if name == module}
        assert pids == {worker.pid, server}, (module, markers)
    assert {task_id for _, task_id, _ in markers} == {"<suppressed>"}
    assert db.query("SELECT id FROM horsies_tasks WHERE task_name = %s", (IMPORT_SEND_TASK,)) == []
    # The discovered task module really is loaded in the children.
    task_id = app.get_broker().enqueue("audit.from_tasks_module")
    row = db.wait_status(task_id, "COMPLETED")
    assert task_result_from_json(row["result"]).unwrap() == "discovered"


def test_default_task_name_is_computed_the_same_way_in_the_children(
    worker: WorkerProcess, app: Horsies, db: Db
) -> None:
    # The default name is "<module>.<qualname>". This process imports the app module as
    # "apps.audit_app", the worker (and so each child, through the canonical locator) as
    # "tests.e2e.apps.audit_app".
    (local,) = [name for name in app.list_tasks() if name.endswith(".bare")]
    assert local == "apps.audit_app.create_app.<locals>.bare"
    task_id = app.get_broker().enqueue(f"tests.e2e.{local}")
    row = db.wait_status(task_id, "COMPLETED")
    assert task_result_from_json(row["result"]).unwrap() == "bare"


# -- names and values are data -------------------------------------------------------------------


def test_task_named_like_sql_injection_runs_and_round_trips_its_arguments(
    worker: WorkerProcess, app: Horsies, db: Db
) -> None:
    handle = app.tasks[ODD_NAME].send(*ODD_VALUES, **{"quote'key": "x';--"})
    assert handle.get(timeout_ms=GET_MS).unwrap() == [*ODD_VALUES, {"quote'key": "x';--"}]
    row = db.task(handle.task_id)
    assert row["task_name"] == ODD_NAME
    assert row["status"] == "COMPLETED"
    assert worker.alive


# -- bad input fails one task, never the worker --------------------------------------------------


def test_unserializable_result_fails_the_task_and_the_worker_keeps_serving(
    worker: WorkerProcess, app: Horsies, db: Db
) -> None:
    handle = app.tasks["audit.unserializable"].send()
    error = error_of(handle.get(timeout_ms=GET_MS))
    assert error.error_code == LibraryErrorCode.WORKER_SERIALIZATION_ERROR
    assert "set" in (error.message or "")
    db.failed_task(handle.task_id)
    assert worker.alive
    assert app.tasks["audit.span"].send(0).get(timeout_ms=GET_MS).is_ok()


@pytest.mark.parametrize(
    ("task_name", "args", "fields", "code"),
    [
        (ODD_NAME, (0,), {"kwargs": '{"value": '}, LibraryErrorCode.WORKER_SERIALIZATION_ERROR),
        (ODD_NAME, (0,), {"kwargs": "[1, 2]"}, LibraryErrorCode.WORKER_SERIALIZATION_ERROR),
        (ODD_NAME, (0,), {"args": '"not an array"'}, LibraryErrorCode.WORKER_SERIALIZATION_ERROR),
        # audit.fail retries UNHANDLED_EXCEPTION once; with unreadable options the failure is
        # final instead (no retry), and never a crash.
        ("audit.fail", (), {"task_options": "{not json"}, LibraryErrorCode.UNHANDLED_EXCEPTION),
    ],
    ids=["malformed-kwargs", "kwargs-not-object", "args-not-array", "malformed-options"],
)
def test_corrupt_row_fails_that_task_only(
    worker: WorkerProcess,
    app: Horsies,
    db: Db,
    task_name: str,
    args: tuple[Any, ...],
    fields: dict[str, str],
    code: LibraryErrorCode,
) -> None:
    task_id = park(db, app, task_name, args, fields)
    row = db.wait_status(task_id, "FAILED")
    assert error_of(task_result_from_json(row["result"])).error_code == code
    assert row["retry_count"] == 0
    # get() on the failed row answers with the stored error, it never raises.
    stored = TaskHandle[Any](task_id, broker=app.get_broker()).get(timeout_ms=GET_MS)
    assert error_of(stored).error_code == code
    assert worker.alive
    assert app.tasks[ODD_NAME].send(1).get(timeout_ms=GET_MS).unwrap() == [1, {}]


def test_the_same_failure_with_readable_options_is_retried(
    worker: WorkerProcess, app: Horsies, db: Db
) -> None:
    # Control for the malformed-options case above: there, only the corruption stops the retry.
    handle = app.tasks["audit.fail"].send()
    assert error_of(handle.get(timeout_ms=GET_MS)).error_code == (
        LibraryErrorCode.UNHANDLED_EXCEPTION
    )
    row = db.task(handle.task_id)
    assert (row["status"], row["retry_count"]) == ("FAILED", 1)
    assert worker.alive


# -- a dead child is replaced by a fresh one -----------------------------------------------------


def test_killed_child_is_replaced_and_both_children_serve_again(
    worker: WorkerProcess, app: Horsies, db: Db
) -> None:
    handle = app.tasks["audit.span"].send(60)
    child_pid = int(db.wait_status(handle.task_id, "RUNNING")["worker_pid"])
    before = spawn_children(worker)
    assert child_pid in before
    os.kill(child_pid, signal.SIGKILL)
    error = error_of(handle.get(timeout_ms=GET_MS))
    assert error.error_code == LibraryErrorCode.WORKER_CRASHED

    def replaced() -> list[int] | None:
        pids = spawn_children(worker)
        return pids if len(pids) == PROCESSES and child_pid not in pids else None

    children = wait_until(replaced, 30, "a replacement child")
    # The process exists before it can take tasks: wait until the worker counts it as ready.
    (new_pid,) = set(children) - set(before)
    worker.wait_output(f" pid={new_pid}\n", 30)
    # Two tasks sent together overlap in time on two different live children.
    spans = [
        h.get(timeout_ms=GET_MS).unwrap()
        for h in app.tasks["audit.span"].send_many([(1.0,), (1.0,)])
    ]
    pids = {int(span[2]) for span in spans}
    assert pids == set(children)
    assert max(span[0] for span in spans) < min(span[1] for span in spans)
    assert worker.alive
