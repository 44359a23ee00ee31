"""`AppConfig`: the configuration of a `Horsies` application, its cross-field rules (queue mode,
cluster cap, prefetch) and the queue look-ups the app, the broker and the worker use."""

from __future__ import annotations

import logging
from typing import Final, Self

from pydantic import Field, model_validator

from horsies import env
from horsies.config.model import ConfigModel, repetition_error
from horsies.config.postgres import PostgresConfig
from horsies.config.queues import (
    DEFAULT_QUEUE_NAME,
    DEFAULT_QUEUE_PRIORITY,
    CustomQueueConfig,
    QueueMode,
)
from horsies.config.recovery import RecoveryConfig
from horsies.config.retention import RetentionConfig
from horsies.config.schedules import ScheduleConfig
from horsies.errors import ConfigurationError, ErrorCode, HorsiesError, raise_collected

__all__ = ["DEFAULT_MAX_PAYLOAD_BYTES", "MIN_MAX_PAYLOAD_BYTES", "AppConfig"]

DEFAULT_MAX_PAYLOAD_BYTES: Final = 16 * 1024 * 1024
"""Default `AppConfig.max_payload_bytes`: 16 MiB of encoded arguments (or result) per task."""
MIN_MAX_PAYLOAD_BYTES: Final = 1024
"""Smallest accepted `AppConfig.max_payload_bytes` (anything smaller is most likely a unit slip)."""


def _rule(
    broken: bool, code: ErrorCode, message: str, note: str | None, help_text: str
) -> ConfigurationError | None:
    """The error of a broken configuration rule, or None when it holds."""
    if not broken:
        return None
    return ConfigurationError(
        message, code=code, notes=[] if note is None else [note], help_text=help_text
    )


class AppConfig(ConfigModel):
    """Configuration of a `Horsies` application.

    DEFAULT mode (the default) uses the single queue ``default``; CUSTOM mode uses `custom_queues`.
    `cluster_wide_cap` limits in-flight tasks across all workers (hard-cap mode only).
    `prefetch_buffer` > 0 switches to soft-cap mode, where workers may claim ahead of free capacity
    and such claims expire after `claim_lease_ms`. `schedule` configures ``horsies scheduler``
    (producers and workers ignore it).
    `max_payload_bytes` caps the size of a task's encoded arguments (args and kwargs together,
    checked when sending) and of its encoded result (checked by the worker, which fails a task
    whose result is larger with WORKER_SERIALIZATION_ERROR); default 16 MiB, at least 1024,
    None for no limit.
    `retention` says how long finished tasks and workflows, heartbeats and worker snapshots are
    kept (30 days for finished work by default; see `RetentionConfig`).
    `condition_timeout_s` bounds the app's code that decides a workflow node: its `run_when` /
    `skip_when` conditions (a condition still running then skips the node, as one that raises)
    and a child workflow's `build_with` (the node then fails with SUBWORKFLOW_LOAD_FAILED);
    default 30 seconds.
    """

    queue_mode: QueueMode = QueueMode.DEFAULT
    custom_queues: list[CustomQueueConfig] | None = None
    broker: PostgresConfig
    cluster_wide_cap: int | None = None
    prefetch_buffer: int = 0
    claim_lease_ms: int | None = None
    recovery: RecoveryConfig = Field(default_factory=RecoveryConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    schedule: ScheduleConfig | None = None
    max_payload_bytes: int | None = Field(
        default=DEFAULT_MAX_PAYLOAD_BYTES, ge=MIN_MAX_PAYLOAD_BYTES
    )
    condition_timeout_s: float = Field(default=30.0, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        raise_collected(self._rule_violations(), "AppConfig")
        return self

    def _rule_violations(self) -> list[HorsiesError]:
        queues = self.custom_queues
        custom = self.queue_mode is QueueMode.CUSTOM
        cap, prefetch, lease = self.cluster_wide_cap, self.prefetch_buffer, self.claim_lease_ms
        mode = ErrorCode.CONFIG_INVALID_QUEUE_MODE
        cap_code = ErrorCode.CONFIG_INVALID_CLUSTER_CAP
        prefetch_code = ErrorCode.CONFIG_INVALID_PREFETCH
        # Every rule that holds across fields, in the order errors are reported.
        checks: list[HorsiesError | None] = [
            _rule(
                not custom and queues is not None,
                mode,
                "custom_queues must be None in DEFAULT mode",
                f"custom_queues={[queue.name for queue in queues or ()]!r}",
                "remove custom_queues to use the single 'default' queue,\n"
                "or set queue_mode=QueueMode.CUSTOM to use named queues",
            ),
            _rule(
                custom and not queues,
                mode,
                "custom_queues required in CUSTOM mode",
                None,
                "list the queues, e.g. custom_queues=[CustomQueueConfig(name='emails')],\n"
                "or use queue_mode=QueueMode.DEFAULT",
            ),
            repetition_error(
                [f"'{queue.name}'" for queue in queues],
                "duplicate queue names in custom_queues",
                code=mode,
                help_text="give every CustomQueueConfig a different name",
            )
            if custom and queues
            else None,
            _rule(
                cap is not None and cap <= 0,
                cap_code,
                "cluster_wide_cap must be positive",
                f"cluster_wide_cap={cap}",
                "use a positive number of tasks, or None for no cluster-wide limit",
            ),
            _rule(
                prefetch < 0,
                prefetch_code,
                "prefetch_buffer must be non-negative",
                f"prefetch_buffer={prefetch}",
                "use 0 (hard-cap mode: claim only what can start now)\n"
                "or a positive number (soft-cap mode: claim that many tasks ahead)",
            ),
            _rule(
                prefetch > 0 and lease is None,
                prefetch_code,
                "claim_lease_ms required when prefetch_buffer > 0",
                f"prefetch_buffer={prefetch}",
                "set claim_lease_ms (e.g. 60000) so prefetched tasks that do not start\n"
                "in time can be claimed by other workers",
            ),
            _rule(
                lease is not None and lease <= 0,
                prefetch_code,
                "claim_lease_ms must be positive",
                f"claim_lease_ms={lease}",
                "use a positive number of milliseconds, e.g. 60000",
            ),
            _rule(
                prefetch == 0 and lease is not None,
                prefetch_code,
                "claim_lease_ms incompatible with hard cap mode",
                f"prefetch_buffer=0 (hard-cap mode), claim_lease_ms={lease}",
                "remove claim_lease_ms, or set prefetch_buffer > 0 to use soft-cap mode",
            ),
            _rule(
                cap is not None and prefetch > 0,
                cap_code,
                "cluster_wide_cap incompatible with prefetch mode",
                f"cluster_wide_cap={cap}, prefetch_buffer={prefetch}",
                "a cluster-wide cap needs hard-cap mode: set prefetch_buffer=0,\n"
                "or remove cluster_wide_cap to keep prefetching",
            ),
        ]
        return [error for error in checks if error is not None]

    # -- helpers used by the app, the broker and the worker ------------------------------------

    def queue_names(self) -> list[str]:
        """Queues of this app: ``["default"]`` in DEFAULT mode, else the custom queues in order."""
        if self.queue_mode is QueueMode.DEFAULT or not self.custom_queues:
            return [DEFAULT_QUEUE_NAME]
        return [queue.name for queue in self.custom_queues]

    def _custom_queue(self, name: str) -> CustomQueueConfig | None:
        if self.queue_mode is QueueMode.DEFAULT or not self.custom_queues:
            return None
        for queue in self.custom_queues:
            if queue.name == name:
                return queue
        return None

    def _unknown_queue(self, name: str) -> ConfigurationError:
        valid = ", ".join(f"'{queue}'" for queue in self.queue_names())
        return ConfigurationError(
            f"invalid queue_name '{name}'",
            code=ErrorCode.TASK_INVALID_QUEUE,
            notes=[f"valid queues: {valid}"],
            help_text="use one of the configured queues, or add it to custom_queues",
        )

    def _known_queue(self, name: str) -> CustomQueueConfig | None:
        """The custom queue called ``name`` (None for the default queue in DEFAULT mode).

        Raises `ConfigurationError` (E103) for a queue this config does not have.
        """
        if self.queue_mode is QueueMode.DEFAULT:
            if name != DEFAULT_QUEUE_NAME:
                raise self._unknown_queue(name)
            return None
        queue = self._custom_queue(name)
        if queue is None:
            raise self._unknown_queue(name)
        return queue

    def queue_priority(self, name: str) -> int:
        """Effective priority of a queue (1 = most urgent): 100 in DEFAULT mode.

        Raises `ConfigurationError` (E103) for a queue this config does not have.
        """
        queue = self._known_queue(name)
        return DEFAULT_QUEUE_PRIORITY if queue is None else queue.priority

    def queue_max_concurrency(self, name: str) -> int | None:
        """Cluster-wide in-flight limit of a queue; None (no limit) in DEFAULT mode.

        Raises `ConfigurationError` (E103) for a queue this config does not have.
        """
        queue = self._known_queue(name)
        return None if queue is None else queue.max_concurrency

    # -- logging ---------------------------------------------------------------------------------

    def describe(self) -> str:
        """Multi-line human-readable summary (password masked), as logged by `log_config`."""
        lines = ["AppConfig:", f"  queue_mode: {self.queue_mode.value.upper()}"]
        if self.custom_queues:
            lines.append("  custom_queues:")
            lines.extend(
                f"    - {queue.name} (priority={queue.priority}, "
                f"max_concurrency={queue.max_concurrency})"
                for queue in self.custom_queues
            )
        if self.cluster_wide_cap is not None:
            lines.append(f"  cluster_wide_cap: {self.cluster_wide_cap}")
        lines.append(f"  prefetch_buffer: {self.prefetch_buffer}")
        limit = self.max_payload_bytes
        lines.append(f"  max_payload_bytes: {'unlimited' if limit is None else f'{limit:,}'}")
        if self.claim_lease_ms is not None:
            lines.append(f"  claim_lease_ms: {self.claim_lease_ms}ms")
        lines.extend(
            [
                "  broker:",
                f"    database_url: {self.broker.masked_url}",
                f"    pool_size: {self.broker.pool_size}",
                f"    max_overflow: {self.broker.max_overflow}",
                "  recovery:",
            ]
        )
        lines.extend(
            f"    {name}: {getattr(self.recovery, name)}" for name in RecoveryConfig.model_fields
        )
        if self.schedule is not None:
            lines.append("  schedule:")
            lines.extend(f"    {line}" for line in self.schedule.describe_lines())
        return "\n".join(lines)

    def log_config(self, logger: logging.Logger | None = None) -> None:
        """Log `describe()` at INFO on `logger` (default: the root logger).

        Does nothing inside worker child processes (``HORSIES_CHILD_PROCESS=1``), so a worker
        logs its configuration once, not once per child.
        """
        if env.flag(env.CHILD_PROCESS):
            return
        (logger if logger is not None else logging.getLogger()).info("%s", self.describe())
