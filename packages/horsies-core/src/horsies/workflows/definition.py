"""Class-based workflow definitions: `WorkflowDefinition`.

A definition is a class whose body holds the workflow's nodes as attributes::

    _fetch = TaskNode(fn=fetch, args=("https://x",))
    _store = TaskNode(fn=store, waits_for=[_fetch], args_from={"raw": _fetch})

    class Pipeline(WorkflowDefinition[bool]):
        name = "pipeline"
        fetch = _fetch
        store = _store

        class Meta:
            output = "store"          # or _store (a name visible from inside Meta)
            on_error = OnError.FAIL

    spec = Pipeline.build(app)

Definitions are the portable form of a workflow: the spec records the class's module and qualname,
so any worker can import it again to evaluate node conditions and to build child workflows.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast

from horsies.errors import ErrorCode, HorsiesError, WorkflowValidationError, raise_collected
from horsies.workflows.nodes import (
    AnyNode,
    SuccessCase,
    SuccessPolicy,
    definition_nodes,
)
from horsies.workflows.status import OnError

if TYPE_CHECKING:
    from horsies.app import Horsies
    from horsies.workflows.spec import WorkflowSpec

__all__ = ["WorkflowDefinition"]

T = TypeVar("T")


class WorkflowDefinition(Generic[T]):
    """Base class of class-based workflow definitions; `T` is the workflow's output type.

    Subclasses set `name` (required) and hold their nodes as class attributes. An optional inner
    `class Meta` sets `output` (a node or a node's attribute name), `on_error` (default
    `OnError.FAIL`) and `success_policy` (whose entries may be attribute names too).

    Python scoping hides the class body's names from `Meta`'s body, so `Meta` refers to nodes by
    attribute name or through names visible from its own scope (module-level variables).

    `build(app)` turns the class into a `WorkflowSpec`; override the `build_with` classmethod for
    definitions whose nodes depend on parameters (used when the workflow runs as a child). The
    spec an override returns remembers the parameters (`WorkflowSpec.build_params`), so a root
    workflow started from it can be built again by any worker.
    """

    name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own: object = cls.__dict__.get("build_with")
        if isinstance(own, classmethod):
            original = cast("Callable[..., WorkflowSpec]", own.__func__)  # pyright: ignore[reportUnknownMemberType]
            setattr(cls, "build_with", classmethod(_recording_parameters(original)))  # noqa: B010

    @classmethod
    def build(cls, app: Horsies) -> WorkflowSpec:
        """Build the workflow spec through `app.workflow(...)`.

        Nodes without a `node_id` get their attribute name as id. The spec records this class's
        module and qualname.

        Raises:
            WorkflowValidationError: E001 when `name` is missing or blank, E002 when the class
                defines no nodes, E011 / E012 for a `Meta` name that is not a node attribute, and
                every error of the spec's own validation (collected ones as
                `MultipleValidationErrors`).
            ConfigurationError: a node's queue does not fit the app's queue configuration.
        """
        errors: list[HorsiesError] = []
        name: object = getattr(cls, "name", None)
        if not isinstance(name, str) or not name.strip():
            errors.append(
                WorkflowValidationError(
                    f"WorkflowDefinition '{cls.__qualname__}' must define a 'name' class attribute",
                    code=ErrorCode.WORKFLOW_NO_NAME,
                )
                .with_note(f"found name={name!r}")
                .with_help('add a non-empty name to the class body: name = "my_workflow"')
            )
        attributes = definition_nodes(cls)
        if not attributes:
            errors.append(
                WorkflowValidationError(
                    f"WorkflowDefinition '{cls.__qualname__}' has no TaskNode attributes",
                    code=ErrorCode.WORKFLOW_NO_NODES,
                ).with_help(
                    "define the nodes as class attributes: fetch = TaskNode(fn=fetch_task)\n"
                    "(nodes inherited from a base class are not collected)"
                )
            )
        by_attribute = dict(attributes)
        meta: object = getattr(cls, "Meta", None)
        output = _resolve_output(cls, getattr(meta, "output", None), by_attribute, errors)
        policy = _resolve_policy(cls, getattr(meta, "success_policy", None), by_attribute, errors)
        on_error = cast("OnError | str", getattr(meta, "on_error", OnError.FAIL))
        raise_collected(errors, f"WorkflowDefinition '{cls.__qualname__}'")

        for attribute, node in attributes:
            if node.node_id is None:
                node.node_id = attribute
        spec = app.workflow(
            cast(str, name),
            [node for _, node in attributes],
            on_error=on_error,
            output=output,
            success_policy=policy,
        )
        # Recorded on the workflow row, so that any worker can import the class again to
        # evaluate node conditions and build child workflows.
        spec.workflow_def_module = cls.__module__
        spec.workflow_def_qualname = cls.__qualname__
        return spec

    @classmethod
    def build_with(cls, app: Horsies, *args: Any, **params: Any) -> WorkflowSpec:
        """Build the spec from parameters; the default ignores them and returns `build(app)`.

        Override it for parameterised definitions, typically returning
        `WorkflowSpec(name=cls.name, tasks=[...], output=..., workflow_def_module=cls.__module__,
        workflow_def_qualname=cls.__qualname__)`. A `SubWorkflowNode` calls it with its `args` /
        `kwargs` (and `args_from` results as `TaskResult`s). It must be deterministic: workers
        may build it again.
        """
        return cls.build(app)


def _recording_parameters(
    build_with: Callable[..., WorkflowSpec],
) -> Callable[..., WorkflowSpec]:
    """``build_with`` that records its parameters on the spec it returns."""

    @functools.wraps(build_with)
    def recording(cls: type[Any], app: Horsies, *args: Any, **params: Any) -> WorkflowSpec:
        spec = build_with(cls, app, *args, **params)
        if spec.build_params is None:  # an inner build_with call recorded its own already
            spec.build_params = (args, params)
        return spec

    return recording


def _resolve_entry(
    entry: object, by_attribute: Mapping[str, AnyNode]
) -> tuple[AnyNode | str | None, bool]:
    """(resolved entry, ok): strings are looked up as attribute names; anything else passes."""
    if isinstance(entry, str):
        node = by_attribute.get(entry)
        return (node, True) if node is not None else (entry, False)
    return cast("AnyNode | str | None", entry), True


def _unknown_name_error(
    cls: type[Any], what: str, entry: str, code: ErrorCode, by_attribute: Mapping[str, AnyNode]
) -> WorkflowValidationError:
    known = ", ".join(by_attribute) or "none"
    return (
        WorkflowValidationError(
            f"{what} of WorkflowDefinition '{cls.__qualname__}' names no node attribute",
            code=code,
        )
        .with_note(f"got {entry!r}; node attributes: {known}")
        .with_help("use the attribute name of one of the class's nodes, or the node itself")
    )


def _resolve_output(
    cls: type[Any],
    output: object,
    by_attribute: Mapping[str, AnyNode],
    errors: list[HorsiesError],
) -> AnyNode | None:
    resolved, ok = _resolve_entry(output, by_attribute)
    if not ok:
        errors.append(
            _unknown_name_error(
                cls,
                "Meta.output",
                cast(str, output),
                ErrorCode.WORKFLOW_INVALID_OUTPUT,
                by_attribute,
            )
        )
        return None
    # A non-node value passes through so the spec reports it (E011).
    return cast("AnyNode | None", resolved)


def _resolve_entries(
    cls: type[Any],
    entries: Sequence[object],
    where: str,
    by_attribute: Mapping[str, AnyNode],
    errors: list[HorsiesError],
) -> list[AnyNode | str]:
    resolved: list[AnyNode | str] = []
    for entry in entries:
        value, ok = _resolve_entry(entry, by_attribute)
        if not ok:
            errors.append(
                _unknown_name_error(
                    cls,
                    where,
                    cast(str, entry),
                    ErrorCode.WORKFLOW_INVALID_SUCCESS_POLICY,
                    by_attribute,
                )
            )
        resolved.append(cast("AnyNode | str", value))
    return resolved


def _resolve_policy(
    cls: type[Any],
    policy: object,
    by_attribute: Mapping[str, AnyNode],
    errors: list[HorsiesError],
) -> SuccessPolicy | None:
    """The Meta success policy with attribute names replaced by nodes (`Meta` cannot see them).

    Anything that is not a well-formed `SuccessPolicy` is passed on unchanged for the spec's own
    validation (E012).
    """
    if not isinstance(policy, SuccessPolicy):
        return cast("SuccessPolicy | None", policy)
    cases: list[SuccessCase] = []
    for number, case in enumerate(policy.cases):
        if not isinstance(case, SuccessCase):  # pyright: ignore[reportUnnecessaryIsInstance]
            return policy
        where = f"Meta.success_policy case {number}"
        cases.append(SuccessCase(_resolve_entries(cls, case.required, where, by_attribute, errors)))
    optional = None
    if policy.optional is not None:
        where = "Meta.success_policy optional"
        optional = _resolve_entries(cls, policy.optional, where, by_attribute, errors)
    return SuccessPolicy(cases=cases, optional=optional)
