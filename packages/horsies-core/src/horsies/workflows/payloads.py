"""The JSON a workflow node receives and the workflow stores, built from stored JSON text.

The kwargs of a node's task row (static kwargs, `args_from` results, the `WorkflowContext` and
`WorkflowMeta` payloads), the `UPSTREAM_SKIPPED` sentinel a skipped dependency stands for, and
the final result and error of a finishing workflow are built here from a `WorkflowView` and the
stored results of its nodes.

These helpers take and return JSON text and never rebuild user objects: the process running them
(a worker's main process, a producer calling `resume()`) may not be able to import the user's
model classes. Stored results are spliced into the output as they are.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

import orjson

from horsies.codec import TASK_RESULT_TAG, dumps_json
from horsies.codec.tags import CTX_KEY, META_KEY
from horsies.failures import failure
from horsies.results import LibraryErrorCode
from horsies.workflows.engine import NodeView, WorkflowView
from horsies.workflows.status import WorkflowTaskStatus

__all__ = [
    "WorkflowCtxPayload",
    "WorkflowMetaPayload",
    "args_from_injections",
    "context_indices",
    "context_results",
    "dependency_result_json",
    "error_result_json_from_stored",
    "node_kwargs_json",
    "sinks_result_json",
    "success_case_not_met_json",
    "task_error_json",
    "upstream_skipped_json",
]

_UPSTREAM_SKIPPED_MESSAGE: Final = "Upstream dependency was SKIPPED"
_SUCCESS_CASE_NOT_MET_MESSAGE: Final = "No success case was satisfied"


def _dump(value: object) -> str:
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        # orjson caps nesting at 255 levels; the codec writes deeper values with the stdlib.
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _load(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        # Values nested deeper than orjson reads may have been written by the stdlib fallback.
        return json.loads(text)


def _object_text(members: Iterable[tuple[str, str]]) -> str:
    """A JSON object from (key, already-encoded JSON value text) pairs; later keys win."""
    merged = dict(members)
    return "{" + ",".join(f"{_dump(key)}:{text}" for key, text in merged.items()) + "}"


def task_error_json(code: str, message: str, data: object = None) -> str:
    """Tagged `TaskError` JSON text (what the workflow `error` column stores).

    `data` is encoded leniently, like every error payload: it never makes encoding fail.
    """
    return dumps_json(failure(code, message, data).err)


def success_case_not_met_json() -> str:
    """The workflow error for `ErrorSource.SUCCESS_CASE_NOT_MET` (tagged `TaskError` JSON)."""
    return task_error_json(
        LibraryErrorCode.WORKFLOW_SUCCESS_CASE_NOT_MET, _SUCCESS_CASE_NOT_MET_MESSAGE
    )


def upstream_skipped_json(dependency_index: int) -> str:
    """The `UPSTREAM_SKIPPED` sentinel as tagged `TaskResult` JSON text: what a node that
    allows failed dependencies receives for a dependency that was skipped."""
    return dumps_json(
        failure(
            LibraryErrorCode.UPSTREAM_SKIPPED,
            _UPSTREAM_SKIPPED_MESSAGE,
            {"dependency_index": dependency_index},
        )
    )


def dependency_result_json(node: NodeView, stored_result: str | None) -> str | None:
    """What a dependent receives for `node`: its stored result when COMPLETED or FAILED, the
    `UPSTREAM_SKIPPED` sentinel when SKIPPED, else None (the entry is omitted)."""
    status = node.status
    if status == WorkflowTaskStatus.SKIPPED:
        return upstream_skipped_json(node.index)
    if status in (WorkflowTaskStatus.COMPLETED, WorkflowTaskStatus.FAILED):
        return stored_result
    return None


def args_from_injections(
    view: WorkflowView, node: NodeView, stored_results: Mapping[int, str | None]
) -> dict[str, str]:
    """The `args_from` kwargs of `node`: kwarg name -> TaskResult JSON text.

    Sources that are not terminal yet, or have no stored result, are omitted. `stored_results`
    maps node index -> stored result text (missing index = no result).
    """
    injected: dict[str, str] = {}
    for name, source in node.args_from:
        text = dependency_result_json(view.nodes[source], stored_results.get(source))
        if text is not None:
            injected[name] = text
    return injected


def context_indices(node: NodeView, *, for_condition: bool = False) -> tuple[int, ...]:
    """The nodes whose results go into `node`'s `WorkflowContext`.

    For the task call: its `workflow_ctx_from` (empty when unset). For `run_when`/`skip_when`
    (`for_condition=True`): `workflow_ctx_from` when set, else every dependency.
    """
    if node.ctx_from is not None:
        return node.ctx_from
    return node.dependencies if for_condition else ()


def context_results(
    view: WorkflowView, indices: Iterable[int], stored_results: Mapping[int, str | None]
) -> dict[str, str]:
    """node_id -> TaskResult JSON text for the terminal nodes among `indices`: stored
    results for COMPLETED/FAILED, the sentinel for SKIPPED; others are omitted."""
    results: dict[str, str] = {}
    for index in indices:
        source = view.nodes[index]
        text = dependency_result_json(source, stored_results.get(index))
        if text is not None:
            results[source.node_id] = text
    return results


@dataclass(frozen=True, slots=True)
class WorkflowMetaPayload:
    """The `WorkflowMeta` fields injected under `META_KEY`."""

    workflow_id: str
    task_index: int
    task_name: str

    def to_json(self) -> str:
        """`{"workflow_id", "task_index", "task_name"}` as JSON text."""
        return _dump(
            {
                "workflow_id": self.workflow_id,
                "task_index": self.task_index,
                "task_name": self.task_name,
            }
        )


@dataclass(frozen=True, slots=True)
class WorkflowCtxPayload:
    """The `WorkflowContext` payload injected under `CTX_KEY`.

    `results`: node_id -> TaskResult JSON text (stored result or sentinel); `summaries`:
    node_id -> SubWorkflowSummary JSON text (a plain JSON object).
    """

    workflow_id: str
    task_index: int
    task_name: str
    results: Mapping[str, str]
    summaries: Mapping[str, str]

    def to_json(self) -> str:
        """`{"workflow_id", "task_index", "task_name", "results": {...}, "summaries": {...}}`
        with the result and summary texts embedded as JSON values."""
        return _object_text(
            [
                ("workflow_id", _dump(self.workflow_id)),
                ("task_index", _dump(self.task_index)),
                ("task_name", _dump(self.task_name)),
                ("results", _object_text(self.results.items())),
                ("summaries", _object_text(self.summaries.items())),
            ]
        )


def node_kwargs_json(
    static_kwargs_json: str | None,
    injected: Mapping[str, str],
    ctx: WorkflowCtxPayload | None,
    meta: WorkflowMetaPayload,
) -> str:
    """The kwargs JSON object of a node's task row.

    Static kwargs first, then the `args_from` injections (TaskResult JSON texts, overriding static
    kwargs of the same name), then `CTX_KEY` (when `ctx` is given) and `META_KEY`. Static values
    are copied as they are; injected texts are embedded as JSON values, so `kwargs_from_json`
    hands the task `TaskResult` objects.
    Raises `ValueError` when `static_kwargs_json` is not a JSON object.
    """
    members: list[tuple[str, str]] = []
    if static_kwargs_json is not None:
        static = _load(static_kwargs_json)
        if type(static) is not dict:
            raise ValueError(f"static kwargs must be a JSON object, got {type(static).__name__}")
        for key, value in cast("dict[str, Any]", static).items():
            # The reserved keys are the engine's alone.
            if key not in (CTX_KEY, META_KEY):
                members.append((key, _dump(value)))
    members.extend(injected.items())
    if ctx is not None:
        members.append((CTX_KEY, ctx.to_json()))
    members.append((META_KEY, meta.to_json()))
    return _object_text(members)


def sinks_result_json(results_by_node_id: Mapping[str, str | None]) -> str:
    """The final result without `output`: `TaskResult(ok={node_id: TaskResult | None})` as tagged
    JSON text; a None value (e.g. a SKIPPED sink) is written as JSON null."""
    ok = _object_text(
        (node_id, "null" if text is None else text) for node_id, text in results_by_node_id.items()
    )
    return f'{{"{TASK_RESULT_TAG}":true,"ok":{ok},"err":null}}'


def error_result_json_from_stored(stored_result: str | None) -> str | None:
    """The `err` part of a stored TaskResult text, as TaskError JSON text.

    None when there is no result, it is not an error result, or it cannot be parsed. The error is
    copied as stored (a TaskError subclass keeps its tagged form).
    """
    if stored_result is None:
        return None
    try:
        payload = _load(stored_result)
    except ValueError:
        return None
    if type(payload) is not dict:
        return None
    err: object = cast("dict[str, Any]", payload).get("err")
    if type(err) is not dict:
        return None
    return _dump(cast("dict[str, Any]", err))
