"""The specs built in this process, by workflow name.

A workflow's rows hold everything except its callables (node conditions) and child definition
classes. The process advancing a workflow finds those on the spec built under the workflow's name;
when several specs share a name, the last valid one built wins.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from horsies.workflows.spec import WorkflowSpec

__all__ = ["register_spec", "registered_spec"]

_registry: dict[str, WorkflowSpec] = {}
_registry_lock = threading.Lock()


def registered_spec(name: str) -> WorkflowSpec | None:
    """The last valid spec built in this process under `name`, or None."""
    with _registry_lock:
        return _registry.get(name)


def register_spec(spec: WorkflowSpec) -> None:
    """Record a valid spec under its name, replacing any earlier one."""
    with _registry_lock:
        _registry[spec.name] = spec
