"""Compatibility path `horsies.core.models.queues`; prefer `from horsies import ...`."""

# Each name is re-exported explicitly (`import X as X`), so type checkers see it here too.
# ruff: noqa: PLC0414
from horsies.config import CustomQueueConfig as CustomQueueConfig
from horsies.config import QueueMode as QueueMode
