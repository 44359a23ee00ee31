"""Compatibility path `horsies.core.models.queues`; prefer `from horsies import ...`."""

from __future__ import annotations

from horsies.config import CustomQueueConfig, QueueMode

__all__ = ["CustomQueueConfig", "QueueMode"]
