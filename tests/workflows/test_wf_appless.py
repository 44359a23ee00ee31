"""A process without the app (an operator tool such as Syce) never runs user code: a READY node
with conditions is left READY, and a worker's reaper (which has the app) evaluates it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import wf_child_app as wfc
from horsies import WorkflowStatus, WorkflowTaskStatus, start_workflow
from horsies.broker import PostgresBroker
from horsies.workflows.store.decisions import decide_program
from horsies.workflows.store.operations import reconcile_op
from wf_exchange import app_broker, exchange, ok_outcome

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def brokers(database_url: str, clean_db: str) -> Iterator[tuple[PostgresBroker, PostgresBroker]]:
    """(a broker without an app, a broker of the app)."""
    del clean_db
    with app_broker(database_url, None) as bare, app_broker(database_url, wfc.app) as with_app:
        yield bare, with_app


def test_conditions_wait_for_a_process_that_has_the_app(
    brokers: tuple[PostgresBroker, PostgresBroker],
) -> None:
    bare, with_app = brokers
    handle = start_workflow(wfc.Gated.build_with(wfc.app, mode="skip"), bare)
    first = exchange(bare)
    assert first.started

    exchange(bare, [ok_outcome(first.started[0].task)])
    statuses = {t.node_id: t.status for t in handle.tasks()}
    assert statuses == {"first": WorkflowTaskStatus.COMPLETED, "second": WorkflowTaskStatus.READY}

    handled, undecided = with_app.execute(
        reconcile_op(0), action="test_reconcile", transaction=True
    )
    with_app.run_program(decide_program(with_app.app, undecided))
    assert handled == 1
    statuses = {t.node_id: t.status for t in handle.tasks()}
    assert statuses["second"] is WorkflowTaskStatus.SKIPPED  # skip_when held (mode="skip")
    assert handle.status() is WorkflowStatus.COMPLETED
