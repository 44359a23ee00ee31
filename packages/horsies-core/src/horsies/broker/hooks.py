"""What the broker knows of the layers above it, as protocols: the app that owns it, and the
workflow engine.

The broker never imports the app, tasks or workflows. What finishing a task must also do for its
workflow reaches the broker as an object handed in by the caller (:class:`WorkflowHooks`; the
app hands in the workflow store), typed here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias, TypeVar

from horsies.broker.programs import Program, Run
from horsies.broker.steps import Op, Query, QueryResult
from horsies.config import AppConfig

__all__ = [
    "BrokerApp",
    "NodeRef",
    "WorkflowAdvance",
    "WorkflowEngine",
    "WorkflowHooks",
    "run_then_decide",
]

T = TypeVar("T")

NodeRef: TypeAlias = tuple[str, int]
"""A workflow node: (workflow id, node index)."""


class BrokerApp(Protocol):
    """The app that owns a broker, as the broker sees it: its configuration (the payload limit).
    The broker hands it on to the workflow hooks, which run its code."""

    @property
    def config(self) -> AppConfig:
        """The app's configuration."""
        ...


class WorkflowAdvance(Protocol):
    """The workflow side of finishing tasks, in the transaction that finishes them: its first reads
    go out in the finish's own round trip (:meth:`queries`, right after the finish statement),
    then :meth:`run` continues with their results."""

    def queries(self) -> list[Query]:
        """The reads to send right after the finish statement."""
        ...

    def run(self, parts: Sequence[QueryResult]) -> Op[list[NodeRef]]:
        """Advance the workflows; returns the nodes left waiting for a decision that needs the
        app's code (see :meth:`WorkflowHooks.decide`)."""
        ...


class WorkflowHooks(Protocol):
    """What the broker asks of the workflow engine. Operations run inside the broker's
    transactions; :meth:`decide` runs after they commit."""

    def lock_query(self, workflow_ids: Sequence[str]) -> Query:
        """The lock of the trees of ``workflow_ids``, taken before any other write of a
        transaction that finishes their tasks."""
        ...

    def advance(
        self, app: BrokerApp | None, task_ids: Sequence[str], workflow_ids: Sequence[str]
    ) -> WorkflowAdvance:
        """The advance of the workflows of tasks finished in the current transaction."""
        ...

    def reconcile(self, app: BrokerApp | None, min_age_ms: int) -> Op[tuple[int, list[NodeRef]]]:
        """The reaper's workflow pass: the number of items it repaired, and the nodes left waiting
        for a decision."""
        ...

    def decide(self, app: BrokerApp | None, nodes: Sequence[NodeRef]) -> Program[None]:
        """Decide ``nodes`` (READY, waiting for user code) outside any transaction that holds
        locks: the app's code runs between two transactions. Without an app nothing is decided:
        a worker's reaper does it."""
        ...


@dataclass(frozen=True, slots=True)
class WorkflowEngine:
    """The workflow hooks bound to the app whose code they run: what the broker's operations call.
    A broker without hooks passes None instead, and its workflows wait for a worker's reaper."""

    hooks: WorkflowHooks
    app: BrokerApp | None

    def lock_query(self, workflow_ids: Sequence[str]) -> Query:
        """See :meth:`WorkflowHooks.lock_query`."""
        return self.hooks.lock_query(workflow_ids)

    def advance(self, task_ids: Sequence[str], workflow_ids: Sequence[str]) -> WorkflowAdvance:
        """See :meth:`WorkflowHooks.advance`."""
        return self.hooks.advance(self.app, task_ids, workflow_ids)

    def reconcile(self, min_age_ms: int) -> Op[tuple[int, list[NodeRef]]]:
        """See :meth:`WorkflowHooks.reconcile`."""
        return self.hooks.reconcile(self.app, min_age_ms)

    def decide(self, nodes: Sequence[NodeRef]) -> Program[None]:
        """See :meth:`WorkflowHooks.decide`."""
        return self.hooks.decide(self.app, nodes)


def run_then_decide(
    engine: WorkflowEngine | None, op: Op[tuple[T, list[NodeRef]]], action: str
) -> Program[T]:
    """Run ``op`` in a transaction, then decide the workflow nodes it left waiting for user code:
    after the commit, so the app's code never runs while the transaction's locks are held."""
    outcome: tuple[T, list[NodeRef]] = yield Run(op, action, transaction=True)
    value, undecided = outcome
    if engine is not None and undecided:
        yield from engine.decide(undecided)
    return value
