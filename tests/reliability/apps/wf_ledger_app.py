"""Workflows of the reliability suite, made of the ledger app's tasks, and how to read them back.

Tasks (registered on the ledger app in default queue mode by :func:`add_workflow_tasks`, next to
``rel.work(key, seconds)``, which a crash fails with ``WORKER_CRASHED``):

- ``rel.retried(key, seconds)``: the body of ``rel.work``, retried after a crash
  (``WORKER_CRASHED`` in ``auto_retry_for``, ``CRASH_RETRIES``);
- ``rel.stall(key, seconds, stall_s)``: the same, but its first run (the first ``start`` of
  ``key`` in the ledger) sleeps ``stall_s``: a test can wait for it to start and kill its worker
  while it surely runs, and the retry then finishes quickly.

The definitions are class-based (``WorkflowDefinition.build_with``), so the spec records this
module's dotted path and any worker of ``tests.reliability.apps.ledger_app:app`` can import them
again, e.g. to build the children of :class:`LedgerNested`. Every node has a unique ledger key
``"<tag>:<node_id>"``, so the ledger tells what each node really ran.

Parameters (keyword arguments of ``build_with``, all JSON-plain so a child can be rebuilt):
``tag`` (unique per run: the key prefix), ``size`` (number of nodes), ``seconds`` (how long each
node's task sleeps), ``retried`` (``rel.retried`` instead of ``rel.work``), ``stall`` (node ids
that stall ``stall_s`` seconds: ``rel.stall`` when retried, else ``rel.work`` sleeping that long).

Test side: :func:`tree_nodes` reads every node of a workflow tree with its key, task and outcome;
:func:`settled_nodes` also checks that every node ended consistently with its task and returns the
``key -> task_id`` map for the ledger comparison (``ledger.compare``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from horsies.codec import args_from_json, loads_json
from horsies.results import TaskError, TaskResult
from horsies.retry import RetryPolicy
from horsies.workflows.definition import WorkflowDefinition
from horsies.workflows.nodes import AnyNode, SubWorkflowNode, TaskNode
from horsies.workflows.spec import WorkflowSpec

from tests.reliability.ledger import record

if TYPE_CHECKING:
    from horsies.app import Horsies

__all__ = [
    "CRASH_RETRIES",
    "LedgerChain",
    "LedgerFan",
    "LedgerNested",
    "NodeRow",
    "add_workflow_tasks",
    "node_key",
    "settled_nodes",
    "tree_nodes",
]


CRASH_RETRIES = RetryPolicy.fixed([1] * 8, jitter=False)
"""Retry policy of ``rel.retried`` and ``rel.stall``: up to 8 retries, 1 s apart."""

DEFAULT_STALL_S = 60.0


def _start_count(conninfo: str, key: str) -> int:
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute(
            "SELECT count(*) FROM reliability_ledger WHERE key = %s AND phase = 'start'", (key,)
        ).fetchone()
    return int(row[0]) if row else 0


def add_workflow_tasks(
    app: Horsies, work: Callable[[str, float], TaskResult[str, TaskError]]
) -> None:
    """Register ``rel.retried`` and ``rel.stall`` on the ledger app (``work`` is ``rel.work``'s
    body)."""
    conninfo = app.config.broker.conninfo
    retried = {"retry_policy": CRASH_RETRIES, "auto_retry_for": ["WORKER_CRASHED"]}

    def stall(key: str, seconds: float, stall_s: float) -> TaskResult[str, TaskError]:
        record(conninfo, key, "start")
        time.sleep(stall_s if _start_count(conninfo, key) == 1 else seconds)
        record(conninfo, key, "end")
        return TaskResult(ok=key)

    app.task("rel.retried", **retried)(work)
    app.task("rel.stall", **retried)(stall)


def node_key(tag: str, node_id: str) -> str:
    """The ledger key of node ``node_id`` of the workflow built with ``tag``."""
    return f"{tag}:{node_id}"


def _task_node(
    app: Horsies, tag: str, node_id: str, params: dict[str, Any], waits_for: list[AnyNode]
) -> TaskNode[str]:
    key, seconds = node_key(tag, node_id), float(params.get("seconds", 0.0))
    retried = bool(params.get("retried"))
    args: tuple[Any, ...] = (key, seconds)
    name = "rel.retried" if retried else "rel.work"
    if node_id in params.get("stall", ()):
        stall_s = float(params.get("stall_s", DEFAULT_STALL_S))
        name, args = (
            ("rel.stall", (key, seconds, stall_s)) if retried else ("rel.work", (key, stall_s))
        )
    return TaskNode(fn=app.tasks[name], args=args, waits_for=waits_for, node_id=node_id)


def _spec(cls: type[WorkflowDefinition[Any]], app: Horsies, nodes: list[AnyNode]) -> WorkflowSpec:
    return WorkflowSpec(
        name=cls.name,
        tasks=nodes,
        output=nodes[-1],
        workflow_def_module=cls.__module__,
        workflow_def_qualname=cls.__qualname__,
        broker=app.get_broker(),
    )


class LedgerChain(WorkflowDefinition[str]):
    """``n0 -> n1 -> ... -> n<size-1>``: one node in flight at a time; output = the last node."""

    name = "rel_chain"

    @classmethod
    def build_with(cls, app: Horsies, *args: Any, **params: Any) -> WorkflowSpec:
        tag = str(params["tag"])
        nodes: list[AnyNode] = []
        for i in range(int(params.get("size", 200))):
            nodes.append(_task_node(app, tag, f"n{i}", params, nodes[-1:]))
        return _spec(cls, app, nodes)


class LedgerFan(WorkflowDefinition[str]):
    """``root -> f0 .. f<size-3> -> sink``: a wide fan-out joined by one fan-in node (join all);
    output = the sink."""

    name = "rel_fan"

    @classmethod
    def build_with(cls, app: Horsies, *args: Any, **params: Any) -> WorkflowSpec:
        tag = str(params["tag"])
        size = int(params.get("size", 200))
        root = _task_node(app, tag, "root", params, [])
        fan: list[AnyNode] = [
            _task_node(app, tag, f"f{i}", params, [root]) for i in range(max(size - 2, 1))
        ]
        sink = _task_node(app, tag, "sink", params, fan)
        return _spec(cls, app, [root, *fan, sink])


class LedgerNested(WorkflowDefinition[str]):
    """``root -> (child chain, child fan) -> sink``: two child workflows started by a worker
    (``SubWorkflowNode``), each of ``size`` nodes; output = the sink."""

    name = "rel_nested"

    @classmethod
    def build_with(cls, app: Horsies, *args: Any, **params: Any) -> WorkflowSpec:
        tag = str(params["tag"])
        root = _task_node(app, tag, "root", params, [])
        chain = SubWorkflowNode(
            workflow_def=LedgerChain,
            kwargs={**params, "tag": f"{tag}/chain"},
            waits_for=[root],
            node_id="chain",
        )
        fan = SubWorkflowNode(
            workflow_def=LedgerFan,
            kwargs={**params, "tag": f"{tag}/fan"},
            waits_for=[root],
            node_id="fan",
        )
        sink = _task_node(app, tag, "sink", params, [chain, fan])
        return _spec(cls, app, [root, chain, fan, sink])


# -- test side ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeRow:
    """One node of a workflow tree as stored, with its ledger key (None for a sub-workflow node)."""

    workflow_id: str
    workflow_status: str
    node_id: str
    status: str
    task_id: str | None
    key: str | None
    error_code: str | None
    """The ``error_code`` of the node's stored err result, if any."""
    task_status: str | None


def _error_code(result: str | None) -> str | None:
    if result is None:
        return None
    payload = loads_json(result)
    if not isinstance(payload, dict):
        return None
    err: Any = payload.get("err")  # pyright: ignore[reportUnknownMemberType]
    if isinstance(err, dict):
        code: Any = err.get("error_code")  # pyright: ignore[reportUnknownMemberType]
        return code if isinstance(code, str) else None
    return None


def tree_nodes(conninfo: str, root_ids: list[str]) -> list[NodeRow]:
    """Every node of the workflow trees rooted at ``root_ids`` (children included)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT w.id, w.status, n.node_id, n.status, n.task_id, n.task_args, n.result,"
            "       n.is_subworkflow, t.status"
            " FROM horsies_workflows AS w"
            " JOIN horsies_workflow_tasks AS n ON n.workflow_id = w.id"
            " LEFT JOIN horsies_tasks AS t ON t.id = n.task_id"
            " WHERE COALESCE(w.root_workflow_id, w.id) = ANY(%s)"
            " ORDER BY w.id, n.task_index",
            (root_ids,),
        ).fetchall()
    nodes: list[NodeRow] = []
    for wid, wstatus, node_id, status, task_id, task_args, result, is_sub, task_status in rows:
        key = None if is_sub else str(args_from_json(task_args)[0])
        nodes.append(
            NodeRow(wid, wstatus, node_id, status, task_id, key, _error_code(result), task_status)
        )
    return nodes


TERMINAL_NODE = frozenset({"COMPLETED", "FAILED", "SKIPPED"})


def settled_nodes(conninfo: str, root_ids: list[str]) -> tuple[list[NodeRow], dict[str, str]]:
    """The nodes of these trees, asserted settled: every node terminal (none stuck), a SKIPPED
    task node never got a task, any other task node has the same status as its task. Returns the
    nodes and ``key -> task_id`` of every task node that got a task."""
    nodes = tree_nodes(conninfo, root_ids)
    stuck = [n for n in nodes if n.status not in TERMINAL_NODE]
    assert not stuck, f"{len(stuck)} node(s) not terminal: {stuck[:5]}"
    for node in nodes:
        if node.key is None:  # a sub-workflow node: its child's nodes are checked themselves
            continue
        if node.status == "SKIPPED":
            assert node.task_id is None, node
        else:
            assert node.task_status == node.status, node
    ids = {n.key: n.task_id for n in nodes if n.key is not None and n.task_id is not None}
    return nodes, ids
