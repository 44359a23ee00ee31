"""A parameterised parent workflow (``build_with`` only) started by a producer: the worker that
reaches its sub-workflow node starts the child class recorded on that node, not a
child found through the name-keyed spec registry (which may hold another parameterisation of the
parent), and it does not try to rebuild the parent without its parameters (which could only fail
with E002 and log a misleading ``workflow_definition_build_failed`` error on every child start)."""

from __future__ import annotations

import logging

import psycopg
import pytest
import wf_param_app as wfp
from horsies import WorkflowHandle, WorkflowStatus, start_workflow
from horsies.broker import PostgresBroker
from horsies.workflows import registry as spec_registry
from wf_exchange import app_broker_fixture, exchange, ok_outcome

pytestmark = pytest.mark.timeout(60)


broker = app_broker_fixture(wfp.app)


def _run(broker: PostgresBroker, handle: WorkflowHandle) -> list[str]:
    """Run the workflow's tasks one by one through the exchange; the labels they ran with."""
    labels: list[str] = []
    started = exchange(broker).started
    while started:
        task = started[0].task
        labels.append(str(task.args))
        # The child workflow is started by the decision after the exchange's commit: its first
        # task is claimed by the next exchange.
        started = exchange(broker, [ok_outcome(task)]).started or exchange(broker).started
    assert handle.status() is WorkflowStatus.COMPLETED
    return labels


def _child_name(broker: PostgresBroker, handle: WorkflowHandle) -> str:
    with psycopg.connect(broker.config.conninfo) as conn:
        row = conn.execute(
            "SELECT name FROM horsies_workflows WHERE parent_workflow_id = %s",
            (handle.workflow_id,),
        ).fetchone()
    assert row is not None
    return str(row[0])


def test_the_child_started_is_the_one_recorded_on_the_node(broker: PostgresBroker) -> None:
    handle = start_workflow(wfp.Root.build_with(wfp.app, child="a"), broker)
    # Another parameterisation built since (in a worker: a child, or another root) now holds the
    # registry's entry for this name, with ChildB at the same index.
    wfp.Root.build_with(wfp.app, child="b")

    labels = _run(broker, handle)

    assert _child_name(broker, handle) == "wfparam_child_a"
    assert labels == ['["root"]', '["a"]']


def test_a_parameterised_parent_is_not_rebuilt_without_its_parameters(
    broker: PostgresBroker, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = start_workflow(wfp.Root.build_with(wfp.app, child="b"), broker)
    # A worker's registry never saw the parent (only the producer built it).
    registry = dict(spec_registry._registry)  # pyright: ignore[reportPrivateUsage]
    registry.pop("wfparam_root", None)
    monkeypatch.setattr(spec_registry, "_registry", registry)
    engine_log = logging.getLogger("horsies.workflow.engine")
    engine_log.addHandler(caplog.handler)
    try:
        labels = _run(broker, handle)
    finally:
        engine_log.removeHandler(caplog.handler)

    assert _child_name(broker, handle) == "wfparam_child_b"
    assert labels == ['["root"]', '["b"]']
    assert "workflow_definition_build_failed" not in caplog.text
