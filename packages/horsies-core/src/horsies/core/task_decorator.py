"""Compatibility path `horsies.core.task_decorator`: older code imports `TaskHandle` and
`TaskFunction` from here."""

# Each name is re-exported explicitly (`import X as X`), so type checkers see it here too.
# ruff: noqa: PLC0414
from horsies.tasks.function import TaskFunction as TaskFunction
from horsies.tasks.handle import TaskHandle as TaskHandle
