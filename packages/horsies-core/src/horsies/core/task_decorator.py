"""Compatibility path `horsies.core.task_decorator` (D43): `TaskHandle`, `TaskFunction`."""

from __future__ import annotations

from horsies.tasks.decorator import TaskFunction
from horsies.tasks.handle import TaskHandle

__all__ = ["TaskFunction", "TaskHandle"]
