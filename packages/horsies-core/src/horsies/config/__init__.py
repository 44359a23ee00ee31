"""Configuration models: `AppConfig` and its parts (queues, broker connection, recovery).

Every model rejects unknown fields; how their errors come out is described in
`horsies.config.model`.
"""

from __future__ import annotations

from horsies.config.app_config import DEFAULT_MAX_PAYLOAD_BYTES, MIN_MAX_PAYLOAD_BYTES, AppConfig
from horsies.config.model import mask_validation_error
from horsies.config.postgres import PostgresConfig
from horsies.config.queues import (
    DEFAULT_QUEUE_NAME,
    DEFAULT_QUEUE_PRIORITY,
    QUEUE_NAME_MAX_LENGTH,
    QUEUE_NAME_PATTERN,
    CustomQueueConfig,
    QueueMode,
)
from horsies.config.recovery import RecoveryConfig
from horsies.config.retention import RetentionConfig

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "DEFAULT_QUEUE_NAME",
    "DEFAULT_QUEUE_PRIORITY",
    "MIN_MAX_PAYLOAD_BYTES",
    "QUEUE_NAME_MAX_LENGTH",
    "QUEUE_NAME_PATTERN",
    "AppConfig",
    "CustomQueueConfig",
    "PostgresConfig",
    "QueueMode",
    "RecoveryConfig",
    "RetentionConfig",
    "mask_validation_error",
]
