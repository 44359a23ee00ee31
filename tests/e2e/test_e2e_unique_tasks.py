"""Unique scopes against a running task, on a real worker: a ``pending`` key is free again once
its task has started, an ``active`` one only once it has ended."""

from __future__ import annotations

from typing import Literal

import pytest
from apps.basic import create_app
from e2e_harness import Db, WorkerProcess, producer_app, wait_until, worker_fixture
from horsies import Unique
from horsies.app import Horsies

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

app = producer_app(create_app)
worker = worker_fixture("basic", "--processes", "1")


def running(db: Db, task_id: str) -> bool:
    return db.task(task_id)["status"] == "RUNNING"


@pytest.mark.parametrize(("scope", "second_created"), [("pending", True), ("active", False)])
def test_a_running_task_holds_an_active_key_but_not_a_pending_one(
    scope: Literal["pending", "active"],
    second_created: bool,
    worker: WorkerProcess,
    app: Horsies,
    db: Db,
) -> None:
    nap = app.tasks["e2e.sleep"].with_options(unique=Unique(scope=scope, key=f"nap-{scope}"))
    first = nap.send(1.5)
    wait_until(lambda: running(db, first.task_id), 30, "the first task to start")
    second = nap.send(1.5)
    assert second.created is second_created
    assert (second.task_id == first.task_id) is not second_created
    assert first.get(timeout_ms=30_000).is_ok()
    assert second.get(timeout_ms=30_000).is_ok()
    # Ended: the key is free whatever the scope.
    third = nap.send(0.0)
    assert third.created
    assert third.get(timeout_ms=30_000).is_ok()
