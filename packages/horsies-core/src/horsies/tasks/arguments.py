"""Do a call's arguments fit the task function? Checked where the call is made, not on the worker.

A send, a workflow node and a schedule all store arguments that a worker later passes to the
function; a call that cannot bind would only fail there, after a round trip through the queue.
`ArgumentCheck` answers the question once per call, in the producer, with the parameters the
worker fills in itself (``workflow_meta`` and ``task_ctx`` always, others for workflow nodes)
counted as given.

Most sends are plain positional or plain keyword calls of a function without ``*args``,
``**kwargs`` or positional-only parameters; those are answered from counts and key sets
computed once per task, so the check costs well under a microsecond. Anything else goes through
`inspect.Signature.bind`, whose message is what the caller sees.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Final

from horsies.errors import TaskDefinitionError
from horsies.tasks.context import TASK_CTX_PARAM

__all__ = ["INJECTED_ALWAYS", "ArgumentCheck", "bound_arguments", "signature_naming"]

INJECTED_ALWAYS: Final = frozenset({"workflow_meta", TASK_CTX_PARAM})
"""Parameters the worker fills in for every task that declares them (``workflow_meta`` is None
outside workflows)."""

_KEYWORD_KINDS: Final = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


class ArgumentCheck:
    """The parameters of one task function, ready to check calls against.

    A function without an introspectable signature (some builtins and C callables) accepts every
    call: there is nothing to check against.
    """

    __slots__ = ("_names", "_positional_range", "_required_keywords", "_signature", "signature")

    def __init__(self, fn: Callable[..., Any]) -> None:
        try:
            signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):
            signature = None
        self._signature = signature
        self.signature: str = _plain(signature) if signature is not None else "(...)"
        """The parameters as the caller writes them, e.g. ``(text, lang, *, upper=False)``."""
        self._positional_range: tuple[int, int] | None = None
        self._names: frozenset[str] | None = None
        self._required_keywords: frozenset[str] = frozenset()
        if signature is None:
            return
        parameters = list(signature.parameters.values())
        if not all(parameter.kind in _KEYWORD_KINDS for parameter in parameters):
            return  # positional-only, *args or **kwargs: always the general path
        # A call made only of positional arguments binds when it fills every required parameter
        # that can be given by position and no keyword-only parameter is required.
        positional = [p for p in parameters if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
        required = [p for p in parameters if _required(p)]
        if all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in required):
            lowest = max((positional.index(p) + 1 for p in required), default=0)
            self._positional_range = (lowest, len(positional))
        # A call made only of keyword arguments binds when its keys are parameters and cover
        # every required one.
        self._names = frozenset(p.name for p in parameters)
        self._required_keywords = frozenset(p.name for p in required)

    def problem(
        self,
        args: Sequence[Any],
        kwargs: Mapping[str, Any] | None,
        given_later: Collection[str] = (),
    ) -> str | None:
        """Why ``fn(*args, **kwargs)`` could not be called, or None when it can.

        ``given_later`` names keyword arguments that will be passed when the task runs (a workflow
        node's ``args_from`` keys, ``workflow_ctx``); ``workflow_meta`` and ``task_ctx`` count as
        given when the function declares them, since the worker then always fills them in.
        """
        signature = self._signature
        if signature is None:
            return None
        if not given_later:
            if not kwargs:
                bounds = self._positional_range
                if bounds is not None and bounds[0] <= len(args) <= bounds[1]:
                    return None
            elif not args:
                names = self._names
                if names is not None:
                    keys = kwargs.keys()
                    if keys <= names and self._required_keywords <= keys:
                        return None
        kwargs = kwargs or {}
        missing = self.missing(args, kwargs, given_later)
        if missing:
            names = ", ".join(f"'{name}'" for name in missing)
            return f"missing required argument{'s' if len(missing) > 1 else ''}: {names}"
        return self._bind_problem(signature, args, kwargs, given_later)

    def missing(
        self, args: Sequence[Any], kwargs: Mapping[str, Any], given_later: Collection[str] = ()
    ) -> list[str]:
        """Required parameters that ``args`` and ``kwargs`` leave unset, in declaration order.

        Positional parameters take ``args`` in order and may otherwise come from ``kwargs``;
        keyword-only ones must be in ``kwargs``. Parameters with a default, ``*args``,
        ``**kwargs`` and what is given later are never missing.
        """
        if self._signature is None:
            return []
        missing: list[str] = []
        positional_left = len(args)
        for parameter in self._signature.parameters.values():
            kind = parameter.kind
            if kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                continue
            positional = kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD)
            if positional and positional_left > 0:
                positional_left -= 1
                continue
            if not _required(parameter) or parameter.name in given_later:
                continue
            if parameter.name not in kwargs:
                missing.append(parameter.name)
        return missing

    def _bind_problem(
        self,
        signature: inspect.Signature,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        given_later: Collection[str],
    ) -> str | None:
        parameters = signature.parameters
        filled: dict[str, Any] = dict.fromkeys(given_later)
        for name in INJECTED_ALWAYS:
            parameter = parameters.get(name)
            if parameter is not None and parameter.kind in _KEYWORD_KINDS:
                filled[name] = None
        try:
            signature.bind(*args, **{**filled, **kwargs})
        except TypeError as exc:
            return str(exc)
        return None


def _plain(signature: inspect.Signature) -> str:
    # Annotations are often strings (postponed evaluation) and would render quoted and long.
    parameters = [
        p.replace(annotation=inspect.Parameter.empty) for p in signature.parameters.values()
    ]
    return str(signature.replace(parameters=parameters, return_annotation=inspect.Signature.empty))


def _required(parameter: inspect.Parameter) -> bool:
    return parameter.default is inspect.Parameter.empty and parameter.name not in INJECTED_ALWAYS


def signature_naming(
    fn: Callable[..., Any],
    names: Sequence[str] | None,
    invalid: Callable[[str], TaskDefinitionError],
) -> inspect.Signature | None:
    """``fn``'s signature (None when it has none to read), once every one of ``names`` (the
    arguments an option such as ``Unique(on=...)`` or ``Limit(on=...)`` picks) is checked to be
    one of its parameters; ``invalid`` makes the option's error from a note."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    parameters = signature.parameters
    unknown = [name for name in names or () if name not in parameters]
    if unknown:
        raise invalid(
            f"on: {', '.join(map(repr, unknown))} is not a parameter of the task"
        ).with_help(f"parameters: {', '.join(parameters) or '(none)'}")
    return signature


def bound_arguments(
    signature: inspect.Signature, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """A call's arguments by parameter name, defaults applied (the call was checked to bind)."""
    bound = signature.bind_partial(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)
