"""Finding a workflow's Python objects at run time: node conditions and child definitions.

The database holds everything about a workflow except its callables (``run_when``/``skip_when``) and
child definition classes. The process advancing a workflow (a worker, or a producer calling
``resume()``) finds them in the per-process spec registry (every spec built in this process) or, for
class-based definitions, by importing the class recorded on the workflow row and building it: with
the parameters stored on the row for a root workflow built by ``build_with``. Class-based
definitions are therefore the portable form.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from horsies.codec import args_from_json, kwargs_from_json
from horsies.logs import get_logger
from horsies.results import TaskError, TaskResult
from horsies.workflows.context import WorkflowContext
from horsies.workflows.definition import WorkflowDefinition
from horsies.workflows.nodes import AnyNode, SubWorkflowNode, definition_nodes
from horsies.workflows.registry import registered_spec

if TYPE_CHECKING:
    from horsies.app import Horsies
    from horsies.workflows.spec import WorkflowSpec

__all__ = ["WorkflowOrigin", "condition_skips", "find_definition", "find_node", "import_object"]

_log = get_logger("workflow.engine")
_built: dict[tuple[str, str, str | None, str | None], WorkflowSpec] = {}
_built_lock = threading.Lock()


def import_object(module: str, qualname: str) -> object | None:
    """``module.qualname`` (nested names allowed), or None when it cannot be imported."""
    try:
        obj: object = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except Exception:
        return None
    return obj


def _definition_class(
    module: str | None, qualname: str | None
) -> type[WorkflowDefinition[Any]] | None:
    if not module or not qualname:
        return None
    obj = import_object(module, qualname)
    if isinstance(obj, type) and issubclass(obj, WorkflowDefinition):
        return obj  # pyright: ignore[reportUnknownVariableType]
    return None


def _spec_of(app: Horsies | None, origin: WorkflowOrigin) -> WorkflowSpec | None:
    parameterised = origin.build_args is not None or origin.build_kwargs is not None
    # The registry is keyed by name only: for a parameterised workflow it may hold another
    # parameterisation, so the stored parameters come first.
    spec = None if parameterised else registered_spec(origin.name)
    if spec is not None:
        return spec
    module, qualname = origin.module, origin.qualname
    if app is None or not module or not qualname:
        return None
    key = (module, qualname, origin.build_args, origin.build_kwargs)
    with _built_lock:
        cached = _built.get(key)
    if cached is not None:
        return cached
    definition = _definition_class(module, qualname)
    if definition is None or not (parameterised or definition_nodes(definition)):
        # A parameterised definition started without stored parameters (a child, or a row
        # written before they were kept) cannot be rebuilt here: build() would only fail (E002).
        return None
    try:
        if parameterised:
            args = args_from_json(origin.build_args) if origin.build_args else []
            kwargs = kwargs_from_json(origin.build_kwargs) if origin.build_kwargs else {}
            spec = definition.build_with(app, *args, **kwargs)
        else:
            spec = definition.build(app)
    except Exception as exc:
        _log.warning("workflow_definition_build_failed: %s.%s: %s", module, qualname, exc)
        return None
    with _built_lock:
        _built[key] = spec
    return spec


@dataclass(frozen=True, slots=True)
class WorkflowOrigin:
    """What a workflow row says about where its spec came from: its name, the definition class
    it was built from, and the parameters of a root workflow built by ``build_with``."""

    name: str
    module: str | None
    qualname: str | None
    build_args: str | None = None
    build_kwargs: str | None = None


def find_node(app: Horsies | None, origin: WorkflowOrigin, index: int) -> AnyNode | None:
    """The node object at ``index`` of the workflow ``origin`` describes (registry, or the
    recorded definition class built again), or None."""
    spec = _spec_of(app, origin)
    if spec is None or not 0 <= index < len(spec.tasks):
        return None
    return spec.tasks[index]


def find_definition(
    app: Horsies | None,
    origin: WorkflowOrigin,
    *,
    index: int,
    sub_module: str | None,
    sub_qualname: str | None,
) -> type[WorkflowDefinition[Any]] | None:
    """The child definition class of the sub-workflow node at ``index``.

    The class recorded on the node row comes first: it was taken from that very node when the
    workflow started, whereas the spec registry is keyed by workflow name only and may hold another
    parameterisation of the parent (a different child at this index). The parent's node object
    (registry, or its rebuilt definition) is the fallback when the recorded class cannot be
    imported here."""
    recorded = _definition_class(sub_module, sub_qualname)
    if recorded is not None:
        return recorded
    node = find_node(app, origin, index)
    if isinstance(node, SubWorkflowNode):
        return node.workflow_def
    return None


def condition_skips(
    node: AnyNode,
    *,
    workflow_id: str,
    index: int,
    task_name: str,
    results: Mapping[str, TaskResult[Any, TaskError]],
    summaries: Mapping[str, Any],
) -> bool:
    """Evaluate ``skip_when`` then ``run_when`` on the node's context: True when the node must be
    SKIPPED. A condition that raises skips the node (logged)."""
    if node.skip_when is None and node.run_when is None:
        return False
    ctx = WorkflowContext.from_serialized(
        workflow_id, index, task_name, dict(results), dict(summaries)
    )
    try:
        if node.skip_when is not None and node.skip_when(ctx):
            return True
        return node.run_when is not None and not node.run_when(ctx)
    except Exception as exc:
        _log.warning(
            "workflow_condition_failed: node %s of workflow %s raised %s: %s; skipping it",
            node.node_id,
            workflow_id,
            type(exc).__name__,
            exc,
        )
        return True
