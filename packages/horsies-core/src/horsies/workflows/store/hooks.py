"""The workflow store as the broker sees it: the object the app hands its broker so that finishing
a task also advances the task's workflow (``horsies.broker.hooks.WorkflowHooks``)."""

from __future__ import annotations

from collections.abc import Sequence

from horsies.broker.hooks import BrokerApp, NodeRef
from horsies.broker.programs import Program
from horsies.broker.steps import Op, Query
from horsies.workflows.store.decisions import decide_program
from horsies.workflows.store.operations import FinishedAdvance, reconcile_op
from horsies.workflows.store.session import lock_roots_query

__all__ = ["WORKFLOW_STORE", "WorkflowStore"]


class WorkflowStore:
    """Implements ``WorkflowHooks`` with the engine of this package. Stateless: the app given to
    each call is the one whose code the decisions run."""

    def lock_query(self, workflow_ids: Sequence[str]) -> Query:
        """The root locks of the trees of ``workflow_ids``."""
        return lock_roots_query(workflow_ids)

    def advance(
        self, app: BrokerApp | None, task_ids: Sequence[str], workflow_ids: Sequence[str]
    ) -> FinishedAdvance:
        """The advance of the workflows of tasks finished in the current transaction."""
        del app  # decided after the commit, by decide()
        return FinishedAdvance(task_ids, workflow_ids)

    def reconcile(self, app: BrokerApp | None, min_age_ms: int) -> Op[tuple[int, list[NodeRef]]]:
        """The reaper's workflow pass."""
        del app
        return reconcile_op(min_age_ms)

    def decide(self, app: BrokerApp | None, nodes: Sequence[NodeRef]) -> Program[None]:
        """Decide READY nodes that wait for user code, outside any locking transaction."""
        return decide_program(app, nodes)


WORKFLOW_STORE = WorkflowStore()
"""The one store every broker of the process is handed."""
