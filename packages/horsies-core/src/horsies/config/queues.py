"""Queue routing: `QueueMode`, the `CustomQueueConfig` of one named queue, and queue-name rules."""

from __future__ import annotations

from enum import Enum
from typing import Final

from pydantic import Field, field_validator

from horsies.config.model import ConfigModel
from horsies.errors import ConfigurationError, ErrorCode
from horsies.names import QUEUE_NAME_MAX_LENGTH, QUEUE_NAME_PATTERN, queue_name_problem

__all__ = [
    "DEFAULT_QUEUE_NAME",
    "DEFAULT_QUEUE_PRIORITY",
    "QUEUE_NAME_MAX_LENGTH",
    "QUEUE_NAME_PATTERN",
    "CustomQueueConfig",
    "QueueMode",
]

DEFAULT_QUEUE_NAME: Final = "default"
DEFAULT_QUEUE_PRIORITY: Final = 100


class QueueMode(Enum):
    """How tasks are routed to queues.

    DEFAULT: one queue named ``default`` (priority 100, no per-queue limit); tasks name no queue.
    CUSTOM: the queues listed in `AppConfig.custom_queues`; every task names one of them.
    """

    CUSTOM = "custom"
    DEFAULT = "default"


class CustomQueueConfig(ConfigModel):
    """One named queue of CUSTOM mode.

    `priority` 1 (most urgent) to 100. `max_concurrency` is a cluster-wide cap on the queue's
    in-flight (claimed or running) tasks; 0 blocks the queue. Names must match
    `QUEUE_NAME_PATTERN` and be at most 52 characters, because each queue gets a PostgreSQL
    NOTIFY channel ``task_queue_<name>``.
    """

    name: str
    priority: int = Field(default=1, ge=1, le=100)
    max_concurrency: int = Field(default=5, ge=0)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        problem = queue_name_problem(value)
        if problem is None:
            return value
        raise ConfigurationError(
            f"invalid queue name '{value}'",
            code=ErrorCode.CONFIG_INVALID_QUEUE_MODE,
            help_text=(
                "use only ASCII letters, digits, '_', '.' and '-' (not as the first character),\n"
                f"at most {QUEUE_NAME_MAX_LENGTH} characters, e.g. 'emails' or 'high-priority':\n"
                "each queue gets the PostgreSQL NOTIFY channel 'task_queue_<name>',\n"
                "and channel names are limited to 63 bytes"
            ),
            notes=[problem],
        )
