"""Compatibility path `horsies.core.task_decorator`: older code imports `TaskHandle` and
`TaskFunction` from here."""

from __future__ import annotations

from horsies.tasks.function import TaskFunction
from horsies.tasks.handle import TaskHandle

__all__ = ["TaskFunction", "TaskHandle"]
