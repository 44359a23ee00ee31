"""Workflow control-flow app: pause, resume, cancel, subworkflows, recovery and races.

CUSTOM queue mode with two queues: ``default`` (where everything runs) and ``parked``
(``max_concurrency=0``: its tasks are enqueued but never claimed, so a workflow can hold a node that
is enqueued and not started). Recovery thresholds are short (3 s stale, 1 s checks) so a killed
worker's tasks and desynchronised nodes are recovered within seconds.

The tasks are module-level with explicit names, and the workflows are class-based definitions, so
a worker finds them by importing this module under the same name the test process uses
(``tests.e2e.apps.wf_control``). Tests that need per-test files (gates, run logs) build their
workflows with ``build_with(app, gates_dir, ...)``; each class's ``build(app)`` builds the same
shape with defaults, which is what a worker gets when it re-imports a definition.

Gates: ``gate(runs, release)`` appends one line to ``runs`` when it starts and then waits (bounded)
until the file ``release`` (or ``ALL.open`` next to it) exists. A test thereby knows that a node is
executing and decides when it finishes, without sleeping.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from horsies.app import Horsies
from horsies.config import AppConfig, CustomQueueConfig, PostgresConfig, QueueMode
from horsies.results import TaskError, TaskResult
from horsies.retry import RetryPolicy
from horsies.workflows.context import WorkflowContext
from horsies.workflows.definition import WorkflowDefinition
from horsies.workflows.nodes import AnyNode, NodeKey, SubWorkflowNode, TaskNode
from horsies.workflows.spec import WorkflowSpec
from horsies.workflows.status import OnError
from pydantic import BaseModel

from tests.recovery_timing import fast_recovery

ENV_URL = "HORSIES_E2E_DATABASE_URL"
_UNUSED_URL = "postgresql+psycopg://unused:unused@127.0.0.1:1/unused"
_NO_DIR = "/nonexistent/horsies-wfc"
GATE_TIMEOUT_S = 60.0
ALL_GATES = "ALL.open"
"""A file in a gates directory that releases every gate of that directory (test teardown)."""
STAMP = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def make_config(database_url: str) -> AppConfig:
    """The configuration shared by the workers and the test process's producer app."""
    return AppConfig(
        queue_mode=QueueMode.CUSTOM,
        custom_queues=[
            CustomQueueConfig(name="default", priority=10, max_concurrency=100),
            CustomQueueConfig(name="parked", priority=10, max_concurrency=0),
        ],
        broker=PostgresConfig(database_url=database_url),
        recovery=fast_recovery(stale_ms=3_000),
    )


def create_app(database_url: str) -> Horsies:
    """A producer app for the test process (no tasks: the nodes use this module's tasks)."""
    return Horsies(make_config(database_url))


app = Horsies(make_config(os.environ.get(ENV_URL, _UNUSED_URL)))


class Box(BaseModel):
    """A model passed to a child definition's `build_with` (must come back as a `Box`:
    inputs are rehydrated)."""

    label: str
    size: int


# -- tasks -----------------------------------------------------------------------------------------


def _append(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(f"{line}\n")


def _code(error: TaskError) -> str | None:
    code: Any = error.error_code
    return None if code is None else str(getattr(code, "value", code))


@app.task("wfc.echo", queue_name="default")
def echo(value: str) -> TaskResult[str, TaskError]:
    return TaskResult(ok=value)


@app.task("wfc.add", queue_name="default")
def add(a: int, b: int) -> TaskResult[int, TaskError]:
    return TaskResult(ok=a + b)


@app.task("wfc.fail", queue_name="default")
def fail(message: str) -> TaskResult[str, TaskError]:
    return TaskResult(err=TaskError(error_code="BOOM", message=message))


@app.task("wfc.record", queue_name="default")
def record(runs: str, value: str = "done") -> TaskResult[str, TaskError]:
    """Log one execution in ``runs`` (a test counts the lines)."""
    _append(runs, str(os.getpid()))
    return TaskResult(ok=value)


def _wait_gate(runs: str, release: str, value: str, timeout_s: float) -> TaskResult[str, TaskError]:
    _append(runs, str(os.getpid()))
    release_all = os.path.join(os.path.dirname(release), ALL_GATES)
    deadline = time.monotonic() + timeout_s
    while not (os.path.exists(release) or os.path.exists(release_all)):
        if time.monotonic() > deadline:
            return TaskResult(err=TaskError(error_code="GATE_TIMEOUT", message=release))
        time.sleep(0.01)
    return TaskResult(ok=value)


@app.task("wfc.gate", queue_name="default")
def gate(
    runs: str, release: str, value: str = "opened", timeout_s: float = GATE_TIMEOUT_S
) -> TaskResult[str, TaskError]:
    """Start (logged in ``runs``), then wait until the file ``release`` exists."""
    return _wait_gate(runs, release, value, timeout_s)


@app.task(
    "wfc.gate_retry",
    queue_name="default",
    retry_policy=RetryPolicy.fixed([1], jitter=False),
    auto_retry_for=["WORKER_CRASHED"],
)
def gate_retry(
    runs: str, release: str, value: str = "opened", timeout_s: float = GATE_TIMEOUT_S
) -> TaskResult[str, TaskError]:
    """`gate` that is retried once after a crash (WORKER_CRASHED in auto_retry_for)."""
    return _wait_gate(runs, release, value, timeout_s)


@app.task("wfc.parked", queue_name="parked")
def parked(value: str) -> TaskResult[str, TaskError]:
    """On the blocked queue: enqueued, never started."""
    return TaskResult(ok=value)


@app.task("wfc.show", queue_name="default")
def show(upstream: TaskResult[Any, TaskError]) -> TaskResult[dict[str, Any], TaskError]:
    """Describe the injected dependency result (type, value or error)."""
    error = upstream.err if upstream.is_err() else None
    return TaskResult(
        ok={
            "type": type(upstream).__name__,
            "ok": None if upstream.is_err() else upstream.ok,
            "error_type": None if error is None else type(error).__name__,
            "error_code": None if error is None else _code(error),
            "error_data": None if error is None else error.data,
        }
    )


@app.task("wfc.describe", queue_name="default")
def describe(
    total: TaskResult[int, TaskError], kinds: dict[str, str]
) -> TaskResult[dict[str, Any], TaskError]:
    """Output of `ChildSum`: its total and what `build_with` received."""
    return TaskResult(ok={"total": total.unwrap(), **kinds})


@app.task("wfc.inspect_child", queue_name="default")
def inspect_child(
    sub_id: str,
    child: TaskResult[Any, TaskError] | None = None,
    workflow_ctx: WorkflowContext | None = None,
) -> TaskResult[dict[str, Any], TaskError]:
    """Report what a downstream node sees of a sub-workflow node: the injected result and the
    context's summary (through ``summary_for``), under both the reference and the documented field
    names."""
    report: dict[str, Any] = {"child_type": type(child).__name__}
    if child is not None and child.is_err():
        error = child.unwrap_err()
        report["error_type"] = type(error).__name__
        report["error_code"] = _code(error)
    elif child is not None:
        report["child_ok"] = child.ok
    if workflow_ctx is None:
        report["ctx"] = None
        return TaskResult(ok=report)
    key: NodeKey[Any] = NodeKey(sub_id)
    report["has_summary"] = workflow_ctx.has_summary(key)
    if not workflow_ctx.has_summary(key):
        return TaskResult(ok=report)
    summary = workflow_ctx.summary_for(key)
    report["summary"] = {
        "type": type(summary).__name__,
        "status": str(getattr(summary.status, "value", summary.status)),
        "success_case": summary.success_case,
        "output": summary.output,
        "total_tasks": summary.total_tasks,
        "completed_tasks": summary.completed_tasks,
        "failed_tasks": summary.failed_tasks,
        "skipped_tasks": summary.skipped_tasks,
        "error_summary": summary.error_summary,
        "total": summary.total,
        "completed": summary.completed,
        "failed": summary.failed,
        "skipped": summary.skipped,
        "error": summary.error,
    }
    report["ctx_result_is_err"] = workflow_ctx.result_for(key).is_err()
    return TaskResult(ok=report)


# -- building specs --------------------------------------------------------------------------------


def gate_kwargs(gates_dir: str, name: str, value: str | None = None) -> dict[str, Any]:
    """Keyword arguments of a gate node called ``name`` in ``gates_dir``."""
    return {
        "runs": str(Path(gates_dir) / f"{name}.runs"),
        "release": str(Path(gates_dir) / f"{name}.open"),
        "value": value or name,
    }


def _spec(
    cls: type[WorkflowDefinition[Any]],
    app: Horsies,
    nodes: dict[str, AnyNode],
    *,
    output: str | None = None,
    on_error: OnError = OnError.FAIL,
) -> WorkflowSpec:
    """A spec of ``cls`` built directly (queues from each task's options), its nodes named by the
    dict keys."""
    for node_id, node in nodes.items():
        node.node_id = node_id
    return WorkflowSpec(
        name=cls.name,
        tasks=list(nodes.values()),
        on_error=on_error,
        output=None if output is None else nodes[output],
        workflow_def_module=cls.__module__,
        workflow_def_qualname=cls.__qualname__,
        broker=app.get_broker(),
    )


class _Parameterised(WorkflowDefinition[Any]):
    """Base of the definitions built from parameters: `build(app)` is `build_with(app)`."""

    name = "wfc_parameterised"

    @classmethod
    def build(cls, app: Horsies) -> WorkflowSpec:
        return cls.build_with(app)


# -- subworkflows ----------------------------------------------------------------------------------


class ChildSum(_Parameterised):
    """Child whose nodes come from `build_with` arguments: a TaskResult from ``args_from``, a
    positional ``scale``, a datetime and a model. Its output records their types."""

    name = "wfc_child_sum"

    @classmethod
    def build_with(cls, app: Horsies, *args: Any, **params: Any) -> WorkflowSpec:
        scale = args[0] if args else 1
        seed = params.get("seed")
        stamp = params.get("stamp")
        box = params.get("box")
        seed_value = seed.unwrap() if isinstance(seed, TaskResult) and seed.is_ok() else -1
        kinds = {
            "scale_type": type(scale).__name__,
            "seed_type": type(seed).__name__,
            "stamp_type": type(stamp).__name__,
            "stamp": stamp.isoformat() if isinstance(stamp, datetime) else repr(stamp),
            "box_type": type(box).__name__,
            "box": f"{box.label}:{box.size}" if isinstance(box, Box) else repr(box),
        }
        total = TaskNode(
            fn=add, kwargs={"a": seed_value * int(scale), "b": int(params.get("offset", 0))}
        )
        report = TaskNode(
            fn=describe, kwargs={"kinds": kinds}, waits_for=[total], args_from={"total": total}
        )
        return _spec(cls, app, {"total": total, "report": report}, output="report")


_sum_src = TaskNode(fn=add, kwargs={"a": 2, "b": 3})
_sum_sub = SubWorkflowNode(
    workflow_def=ChildSum,
    args=(2,),
    kwargs={"offset": 10, "stamp": STAMP, "box": Box(label="crate", size=3)},
    waits_for=[_sum_src],
    args_from={"seed": _sum_src},
)


class ParentSum(WorkflowDefinition[dict[str, Any]]):
    """src (5) -> sub (ChildSum: 5 * 2 + 10) -> inspect (args_from + workflow_ctx_from the sub)."""

    name = "wfc_parent_sum"
    src = _sum_src
    sub = _sum_sub
    inspect = TaskNode(
        fn=inspect_child,
        kwargs={"sub_id": "sub"},
        waits_for=[_sum_sub],
        args_from={"child": _sum_sub},
        workflow_ctx_from=[_sum_sub],
    )

    class Meta:
        output = "inspect"


_fail_boom = TaskNode(fn=fail, kwargs={"message": "child boom"})


class ChildFail(WorkflowDefinition[str]):
    """fine (ok), boom (err BOOM), after (skipped): ends FAILED with error "child boom"."""

    name = "wfc_child_fail"
    fine = TaskNode(fn=echo, kwargs={"value": "fine"})
    boom = _fail_boom
    after = TaskNode(fn=echo, kwargs={"value": "never"}, waits_for=[_fail_boom])


_failing_sub = SubWorkflowNode(workflow_def=ChildFail)


class ParentFail(WorkflowDefinition[dict[str, Any]]):
    """sub (ChildFail) -> skipped (join all) and handler (allow_failed_deps, inspects the sub)."""

    name = "wfc_parent_fail"
    sub = _failing_sub
    skipped = TaskNode(fn=echo, kwargs={"value": "never"}, waits_for=[_failing_sub])
    handler = TaskNode(
        fn=inspect_child,
        kwargs={"sub_id": "sub"},
        waits_for=[_failing_sub],
        args_from={"child": _failing_sub},
        workflow_ctx_from=[_failing_sub],
        allow_failed_deps=True,
    )


class ChildGate(_Parameterised):
    """gate (waits for ``<gates_dir>/<gate>.open``) -> tail; output tail."""

    name = "wfc_child_gate"

    @classmethod
    def build_with(cls, app: Horsies, *args: Any, **params: Any) -> WorkflowSpec:
        del args
        gates_dir = str(params.get("gates_dir", _NO_DIR))
        first = TaskNode(fn=gate, kwargs=gate_kwargs(gates_dir, "child"))
        tail = TaskNode(fn=echo, kwargs={"value": "tail"}, waits_for=[first])
        return _spec(cls, app, {"gate": first, "tail": tail}, output="tail")


class ParentGate(_Parameterised):
    """sub (ChildGate) -> after (join all) and rescue (allow_failed_deps, inspects the sub)."""

    name = "wfc_parent_gate"

    @classmethod
    def build_with(cls, app: Horsies, *args: Any, **params: Any) -> WorkflowSpec:
        del args
        gates_dir = str(params.get("gates_dir", _NO_DIR))
        sub = SubWorkflowNode(workflow_def=ChildGate, kwargs={"gates_dir": gates_dir})
        after = TaskNode(fn=echo, kwargs={"value": "after"}, waits_for=[sub])
        rescue = TaskNode(
            fn=inspect_child,
            kwargs={"sub_id": "sub"},
            waits_for=[sub],
            args_from={"child": sub},
            workflow_ctx_from=[sub],
            allow_failed_deps=True,
        )
        return _spec(cls, app, {"sub": sub, "after": after, "rescue": rescue})


# -- control flow ----------------------------------------------------------------------------------


class PauseOnError(_Parameterised):
    """on_error=PAUSE. bad fails; good is a gate; after_good / after_bad wait for them; rescue
    (allow_failed_deps) receives bad's error."""

    name = "wfc_pause_on_error"

    @classmethod
    def build_with(cls, app: Horsies, *args: Any, **params: Any) -> WorkflowSpec:
        del args
        gates_dir = str(params.get("gates_dir", _NO_DIR))
        bad = TaskNode(fn=fail, kwargs={"message": "pause me"})
        good = TaskNode(fn=gate, kwargs=gate_kwargs(gates_dir, "good"))
        after_good = TaskNode(fn=echo, kwargs={"value": "after good"}, waits_for=[good])
        after_bad = TaskNode(fn=echo, kwargs={"value": "after bad"}, waits_for=[bad])
        rescue = TaskNode(
            fn=show, waits_for=[bad], args_from={"upstream": bad}, allow_failed_deps=True
        )
        nodes: dict[str, AnyNode] = {
            "bad": bad,
            "good": good,
            "after_good": after_good,
            "after_bad": after_bad,
            "rescue": rescue,
        }
        return _spec(cls, app, nodes, on_error=OnError.PAUSE)


class Gates(_Parameterised):
    """One gate root per name; with ``join``, a record node waiting for all of them."""

    name = "wfc_gates"

    @classmethod
    def build_with(cls, app: Horsies, *args: Any, **params: Any) -> WorkflowSpec:
        del args
        gates_dir = str(params.get("gates_dir", _NO_DIR))
        names: tuple[str, ...] = tuple(params.get("names", ("a", "b")))
        join = bool(params.get("join", True))
        nodes: dict[str, AnyNode] = {
            name: TaskNode(fn=gate, kwargs=gate_kwargs(gates_dir, name)) for name in names
        }
        if join:
            nodes["join"] = TaskNode(
                fn=record,
                kwargs={"runs": str(Path(gates_dir) / "join.runs"), "value": "joined"},
                waits_for=list(nodes.values()),
            )
        return _spec(cls, app, nodes)


class CancelMix(_Parameterised):
    """Everything cancel() meets in one workflow: a running gate, a dependent still PENDING and a
    node enqueued on the blocked queue."""

    name = "wfc_cancel_mix"

    @classmethod
    def build_with(cls, app: Horsies, *args: Any, **params: Any) -> WorkflowSpec:
        del args
        gates_dir = str(params.get("gates_dir", _NO_DIR))
        running = TaskNode(fn=gate, kwargs=gate_kwargs(gates_dir, "running"))
        pending = TaskNode(fn=echo, kwargs={"value": "pending"}, waits_for=[running])
        waiting = TaskNode(fn=parked, kwargs={"value": "parked"})
        nodes: dict[str, AnyNode] = {"running": running, "pending": pending, "waiting": waiting}
        return _spec(cls, app, nodes)


class CrashFlow(_Parameterised):
    """victim (a gate, optionally retried after a crash) -> after (join all) and rescue
    (allow_failed_deps, shows victim's result)."""

    name = "wfc_crash"

    @classmethod
    def build_with(cls, app: Horsies, *args: Any, **params: Any) -> WorkflowSpec:
        del args
        gates_dir = str(params.get("gates_dir", _NO_DIR))
        retry = bool(params.get("retry", False))
        victim = TaskNode(fn=gate_retry if retry else gate, kwargs=gate_kwargs(gates_dir, "victim"))
        after = TaskNode(fn=echo, kwargs={"value": "after"}, waits_for=[victim])
        rescue = TaskNode(
            fn=show, waits_for=[victim], args_from={"upstream": victim}, allow_failed_deps=True
        )
        return _spec(cls, app, {"victim": victim, "after": after, "rescue": rescue})


class Desync(_Parameterised):
    """Two gates whose task rows a test finishes by hand: ``forged`` (set COMPLETED) -> shown;
    ``lost`` (set FAILED without a result) -> blocked (skipped)."""

    name = "wfc_desync"

    @classmethod
    def build_with(cls, app: Horsies, *args: Any, **params: Any) -> WorkflowSpec:
        del args
        gates_dir = str(params.get("gates_dir", _NO_DIR))
        forged = TaskNode(fn=gate, kwargs=gate_kwargs(gates_dir, "forged"))
        lost = TaskNode(fn=gate, kwargs=gate_kwargs(gates_dir, "lost"))
        shown = TaskNode(fn=show, waits_for=[forged], args_from={"upstream": forged})
        blocked = TaskNode(fn=echo, kwargs={"value": "blocked"}, waits_for=[lost])
        nodes: dict[str, AnyNode] = {
            "forged": forged,
            "lost": lost,
            "shown": shown,
            "blocked": blocked,
        }
        return _spec(cls, app, nodes)


class RaceJoin(_Parameterised):
    """left and right gates sharing one release file -> join (record): the two dependencies end
    at the same moment."""

    name = "wfc_race_join"

    @classmethod
    def build_with(cls, app: Horsies, *args: Any, **params: Any) -> WorkflowSpec:
        del args
        gates_dir = str(params.get("gates_dir", _NO_DIR))
        base = Path(gates_dir)
        release = str(base / "both.open")
        left = TaskNode(
            fn=gate, kwargs={"runs": str(base / "left.runs"), "release": release, "value": "l"}
        )
        right = TaskNode(
            fn=gate, kwargs={"runs": str(base / "right.runs"), "release": release, "value": "r"}
        )
        join = TaskNode(
            fn=record, kwargs={"runs": str(base / "join.runs")}, waits_for=[left, right]
        )
        return _spec(cls, app, {"left": left, "right": right, "join": join})


class Lattice(_Parameterised):
    """Four record roots, two joins of two, one final join: seven quick nodes. With
    ``gated_final`` the final join is a gate, so the workflow cannot end before the test says."""

    name = "wfc_lattice"

    @classmethod
    def build_with(cls, app: Horsies, *args: Any, **params: Any) -> WorkflowSpec:
        del args
        runs_dir = str(params.get("runs_dir", _NO_DIR))
        base = Path(runs_dir)

        def node(name: str, *deps: AnyNode) -> TaskNode[str]:
            return TaskNode(
                fn=record,
                kwargs={"runs": str(base / f"{name}.runs"), "value": name},
                waits_for=list(deps),
            )

        roots = [node(f"r{i}") for i in range(4)]
        m0 = node("m0", roots[0], roots[1])
        m1 = node("m1", roots[2], roots[3])
        if params.get("gated_final", False):
            final = TaskNode(fn=gate, kwargs=gate_kwargs(runs_dir, "final"), waits_for=[m0, m1])
        else:
            final = node("final", m0, m1)
        nodes: dict[str, AnyNode] = {f"r{i}": root for i, root in enumerate(roots)}
        nodes |= {"m0": m0, "m1": m1, "final": final}
        return _spec(cls, app, nodes, output="final")
