"""The horsies worker: claims tasks from PostgreSQL and runs them in persistent child processes.

Run it with ``horsies worker myapp.instance:app`` or programmatically with :func:`run_worker`
(also importable as ``from horsies import run_worker``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from horsies_worker.config import WorkerConfig
    from horsies_worker.run import run_worker
    from horsies_worker.worker import Worker

__all__ = ["Worker", "WorkerConfig", "run_worker"]

# Imported lazily: worker children import only what a child runs, and keep their start-up lean.
_EXPORTS = {
    "Worker": "horsies_worker.worker",
    "WorkerConfig": "horsies_worker.config",
    "run_worker": "horsies_worker.run",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'horsies_worker' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
