"""The ledger harness itself: tasks run by a real worker are all accounted for."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from horsies.app import Horsies
from process_harness import wait_until

from tests.reliability.harness import StartWorker
from tests.reliability.ledger import compare

pytestmark = pytest.mark.timeout(90)


def test_ledger_accounts_for_every_task(
    ledger: str, start_worker: StartWorker, make_producer: Callable[..., Horsies]
) -> None:
    app = make_producer()
    work = app.tasks["rel.work"]
    keys = [uuid.uuid4().hex for _ in range(40)]
    handles = {key: work.send(key, 0.0) for key in keys}
    start_worker("--processes", "2")
    ids = {key: handle.task_id for key, handle in handles.items()}
    wait_until(lambda: compare(ledger, ids).statuses["COMPLETED"] == 40, 60, "40 completed")
    report = compare(ledger, ids)
    report.assert_nothing_lost_or_duplicated()
    assert sum(report.ends.values()) == 40
