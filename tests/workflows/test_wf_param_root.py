"""A parameterised parent workflow (``build_with`` only) started by a producer: the worker that
reaches its sub-workflow node starts the child class recorded on that node, not a
child found through the name-keyed spec registry (which may hold another parameterisation of the
parent), and it does not try to rebuild the parent without its parameters (which could only fail
with E002 and log a misleading ``workflow_definition_build_failed`` error on every child start)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import psycopg
import pytest
import wf_param_app as wfp
from horsies import WorkflowHandle, WorkflowStatus, start_workflow
from horsies.broker import PostgresBroker
from horsies.codec import SerializationError
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


@contextlib.contextmanager
def _engine_log_in(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The workflow engine's records go to ``caplog`` inside the block."""
    engine_log = logging.getLogger("horsies.workflow.engine")
    engine_log.addHandler(caplog.handler)
    try:
        yield
    finally:
        engine_log.removeHandler(caplog.handler)


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
    with _engine_log_in(caplog):
        labels = _run(broker, handle)

    assert _child_name(broker, handle) == "wfparam_child_b"
    assert labels == ['["root"]', '["b"]']
    assert "workflow_definition_build_failed" not in caplog.text


@pytest.mark.parametrize("skip", [True, False])
def test_a_parameterised_roots_condition_is_evaluated_by_a_worker_that_never_built_it(
    broker: PostgresBroker,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    skip: bool,
) -> None:
    handle = start_workflow(wfp.Gated.build_with(wfp.app, skip=skip), broker)
    # The worker never built this parameterisation: its registry holds the other one.
    wfp.Gated.build_with(wfp.app, skip=not skip)
    with _engine_log_in(caplog):
        labels = _run(broker, handle)
    assert labels == (['["first"]'] if skip else ['["first"]', '["gate"]'])
    assert "workflow_condition_not_found" not in caplog.text


def test_parameters_that_cannot_be_stored_are_refused_when_conditions_need_them(
    broker: PostgresBroker,
) -> None:
    spec = wfp.Gated.build_with(wfp.app, skip=object())
    with pytest.raises(SerializationError, match="build_with parameters of workflow"):
        start_workflow(spec, broker)
