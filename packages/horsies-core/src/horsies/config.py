"""Configuration models: `AppConfig` and its parts.

All models are pydantic v2 models that reject unknown fields (a misspelt option fails loudly instead
of being ignored). Two kinds of errors come out of them:

- a single field out of its type or range (``priority=0``) raises pydantic's `ValidationError`;
- a rule the library adds on top (queue-mode rules, URL scheme, recovery 2x rule, ...) raises our
  `ConfigurationError` with an error code, notes and a help text. Rules of one model are all
  checked, then raised together (`MultipleConfigurationErrors` when there are several).

Both are `ValueError`s, so ``except ValueError`` catches every configuration problem.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from enum import Enum
from typing import Any, Final, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from horsies.errors import (
    ConfigurationError,
    ErrorCode,
    HorsiesError,
    MultipleValidationErrors,
    collected_error,
    raise_collected,
)

__all__ = [
    "DEFAULT_QUEUE_NAME",
    "DEFAULT_QUEUE_PRIORITY",
    "QUEUE_NAME_MAX_LENGTH",
    "QUEUE_NAME_PATTERN",
    "AppConfig",
    "CustomQueueConfig",
    "PostgresConfig",
    "QueueMode",
    "RecoveryConfig",
    "mask_database_url",
]

DEFAULT_QUEUE_NAME: Final = "default"
DEFAULT_QUEUE_PRIORITY: Final = 100

QUEUE_NAME_PATTERN: Final = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
"""Allowed queue names: ASCII letters, digits, ``_``, ``.``, ``-`` (not first)."""

# Each queue gets the NOTIFY channel "task_queue_<name>", and PostgreSQL identifiers hold at most
# 63 bytes: 63 - len("task_queue_") = 52.
QUEUE_NAME_MAX_LENGTH: Final = 52

_QUEUE_NAME_RE: Final = re.compile(QUEUE_NAME_PATTERN)

_ACCEPTED_SCHEMES: Final = ("postgresql+psycopg", "postgresql", "postgres")
_EXAMPLE_URL: Final = "postgresql+psycopg://user:password@localhost:5432/dbname"

_MASK: Final = "***"
_SCHEME_RE: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# `password=...` in key/value conninfo strings and in URL query strings.
_PASSWORD_PARAM_RE: Final = re.compile(
    r"(?P<key>\bpassword\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'|[^\s&]+)", re.IGNORECASE
)


def mask_database_url(url: str) -> str:
    """Return `url` with any password replaced by ``***``; safe to log or print.

    Works on any ``scheme://user:password@host/...`` URL (the password may contain unescaped
    ``@`` or ``/``) and on ``password=...`` parameters, both in URL query strings and in libpq
    key/value connection strings (``host=db password=secret``).
    """
    masked = url
    scheme = _SCHEME_RE.match(masked)
    if scheme is not None:
        start = scheme.end()
        # The user-info part ends at the last "@" before any query/fragment, so a raw "@" or "/"
        # inside the password cannot make part of it leak.
        end = len(masked)
        for marker in ("?", "#"):
            index = masked.find(marker, start)
            if index != -1:
                end = min(end, index)
        at = masked.rfind("@", start, end)
        if at != -1:
            userinfo = masked[start:at]
            user, sep, password = userinfo.partition(":")
            if sep and password:
                masked = f"{masked[:start]}{user}:{_MASK}{masked[at:]}"
    return _PASSWORD_PARAM_RE.sub(lambda m: m.group("key") + _MASK, masked)


def _wrapped_library_error(detail: ErrorDetails) -> HorsiesError | None:
    error = detail.get("ctx", {}).get("error")
    return error if isinstance(error, HorsiesError) else None


def _reraise_library_errors(exc: ValidationError, phase_name: str) -> None:
    """Turn a pydantic ValidationError that only wraps our errors back into those errors.

    pydantic wraps every `ValueError` raised by a validator, and `ConfigurationError` is a
    `ValueError` (D2). When each wrapped item is one of our errors, re-raise them as they were
    (one → itself, several → MultipleConfigurationErrors); when any item is a plain field/range
    violation, return and let the caller re-raise pydantic's error unchanged.
    """
    found: list[HorsiesError] = []
    for detail in exc.errors():
        error = _wrapped_library_error(detail)
        if error is None:
            return
        members = error.errors if isinstance(error, MultipleValidationErrors) else [error]
        for member in members:
            if not any(member is seen for seen in found):
                found.append(member)
    collected = collected_error(found, phase_name)
    if collected is not None:
        # "from None": the pydantic wrapper is an implementation detail, not part of the story.
        raise collected from None


class _ConfigModel(BaseModel):
    """Base of the config models: unknown fields are refused and our errors come out unwrapped."""

    model_config = ConfigDict(extra="forbid")

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            _reraise_library_errors(exc, type(self).__name__)
            raise

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Self:
        """Validate a mapping or object; library rule violations raise `ConfigurationError`."""
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            _reraise_library_errors(exc, cls.__name__)
            raise

    @classmethod
    def model_validate_json(
        cls, json_data: str | bytes | bytearray, *args: Any, **kwargs: Any
    ) -> Self:
        """Validate JSON text; library rule violations raise `ConfigurationError`."""
        try:
            return super().model_validate_json(json_data, *args, **kwargs)
        except ValidationError as exc:
            _reraise_library_errors(exc, cls.__name__)
            raise


class QueueMode(Enum):
    """How tasks are routed to queues.

    DEFAULT: one queue named ``default`` (priority 100, no per-queue limit); tasks name no queue.
    CUSTOM: the queues listed in `AppConfig.custom_queues`; every task names one of them.
    """

    CUSTOM = "custom"
    DEFAULT = "default"


class CustomQueueConfig(_ConfigModel):
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
        if len(value) <= QUEUE_NAME_MAX_LENGTH and _QUEUE_NAME_RE.fullmatch(value):
            return value
        error = ConfigurationError(
            f"invalid queue name '{value}'",
            code=ErrorCode.CONFIG_INVALID_QUEUE_MODE,
            help_text=(
                "use only ASCII letters, digits, '_', '.' and '-' (not as the first character),\n"
                f"at most {QUEUE_NAME_MAX_LENGTH} characters, e.g. 'emails' or 'high-priority':\n"
                "each queue gets the PostgreSQL NOTIFY channel 'task_queue_<name>',\n"
                "and channel names are limited to 63 bytes"
            ),
        )
        if len(value) > QUEUE_NAME_MAX_LENGTH:
            error.with_note(f"the name has {len(value)} characters (limit {QUEUE_NAME_MAX_LENGTH})")
        else:
            error.with_note(f"queue names must match {QUEUE_NAME_PATTERN}")
        raise error


class PostgresConfig(_ConfigModel):
    """Connection settings of the PostgreSQL broker.

    `database_url` accepts ``postgresql+psycopg://``, ``postgresql://`` and ``postgres://``.
    The pool keeps `pool_size` connections and opens up to `max_overflow` more under load; with
    `pool_pre_ping` each connection is checked before use; `echo` logs SQL at DEBUG level.
    Never print `database_url` itself: use `masked_url`.
    """

    database_url: str
    pool_pre_ping: bool = True
    pool_size: int = Field(default=5, ge=0)
    max_overflow: int = Field(default=10, ge=0)
    pool_timeout: int = Field(default=30, gt=0)
    pool_recycle: int = Field(default=1800, gt=0)
    echo: bool = False

    @field_validator("database_url")
    @classmethod
    def _check_scheme(cls, value: str) -> str:
        match = _SCHEME_RE.match(value)
        scheme = match.group(1) if match is not None else None
        if scheme is not None and scheme.lower() in _ACCEPTED_SCHEMES:
            return value
        error = ConfigurationError(
            "invalid database URL scheme",
            code=ErrorCode.BROKER_INVALID_URL,
            help_text=(
                f"use a URL such as {_EXAMPLE_URL}\n"
                "(postgresql:// and postgres:// are accepted too; horsies always connects\n"
                "with psycopg 3, so other drivers such as asyncpg or psycopg2 are not supported)"
            ),
        )
        if scheme is None:
            error.with_note("no scheme found: the URL must start with 'postgresql+psycopg://'")
        else:
            error.with_note(f"scheme: '{scheme}'")
        error.with_note(f"database_url: {mask_database_url(value)}")
        raise error

    @property
    def conninfo(self) -> str:
        """The URL in plain libpq form (``postgresql://...``), as psycopg connects with it."""
        match = _SCHEME_RE.match(self.database_url)
        rest = self.database_url[match.end() :] if match is not None else self.database_url
        return f"postgresql://{rest}"

    @property
    def masked_url(self) -> str:
        """`database_url` with the password replaced by ``***`` (for logs and banners)."""
        return mask_database_url(self.database_url)


def _stale_threshold_error(
    threshold_field: str, threshold: int, interval_field: str, interval: int, role: str
) -> ConfigurationError:
    minimum = 2 * interval
    return ConfigurationError(
        f"{threshold_field} too low",
        code=ErrorCode.CONFIG_INVALID_RECOVERY,
        notes=[
            f"{threshold_field}={threshold}, {interval_field}={interval}",
            f"a {role} must be allowed to miss at least one heartbeat before it is declared stale",
        ],
        help_text=(
            f"set {threshold_field} to at least {minimum} (2 x {interval_field}),\n"
            f"or lower {interval_field}"
        ),
    )


class RecoveryConfig(_ConfigModel):
    """When and how stuck tasks are recovered (all durations in milliseconds).

    A CLAIMED task whose claimer heartbeat is older than `claimed_stale_threshold_ms` goes back to
    PENDING (if `auto_requeue_stale_claimed`); a RUNNING task whose runner heartbeat is older than
    `running_stale_threshold_ms` fails with WORKER_CRASHED (if `auto_fail_stale_running`). Each
    threshold must be at least twice its heartbeat interval (E204).
    """

    auto_requeue_stale_claimed: bool = True
    claimed_stale_threshold_ms: int = Field(default=120_000, ge=1_000, le=3_600_000)
    auto_fail_stale_running: bool = True
    running_stale_threshold_ms: int = Field(default=300_000, ge=1_000, le=7_200_000)
    check_interval_ms: int = Field(default=30_000, ge=1_000, le=600_000)
    runner_heartbeat_interval_ms: int = Field(default=30_000, ge=1_000, le=120_000)
    claimer_heartbeat_interval_ms: int = Field(default=30_000, ge=1_000, le=120_000)

    @model_validator(mode="after")
    def _check_heartbeat_margins(self) -> Self:
        errors: list[HorsiesError] = []
        if self.running_stale_threshold_ms < 2 * self.runner_heartbeat_interval_ms:
            errors.append(
                _stale_threshold_error(
                    "running_stale_threshold_ms",
                    self.running_stale_threshold_ms,
                    "runner_heartbeat_interval_ms",
                    self.runner_heartbeat_interval_ms,
                    "running task",
                )
            )
        if self.claimed_stale_threshold_ms < 2 * self.claimer_heartbeat_interval_ms:
            errors.append(
                _stale_threshold_error(
                    "claimed_stale_threshold_ms",
                    self.claimed_stale_threshold_ms,
                    "claimer_heartbeat_interval_ms",
                    self.claimer_heartbeat_interval_ms,
                    "claimed task",
                )
            )
        raise_collected(errors, "RecoveryConfig")
        return self


def _config_error(
    code: ErrorCode, message: str, *, note: str | None = None, help_text: str
) -> ConfigurationError:
    return ConfigurationError(
        message, code=code, notes=[note] if note is not None else [], help_text=help_text
    )


def _duplicates(names: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    repeated: list[str] = []
    for name in names:
        if name in seen and name not in repeated:
            repeated.append(name)
        seen.add(name)
    return repeated


class AppConfig(_ConfigModel):
    """Configuration of a `Horsies` application.

    DEFAULT mode (the default) uses the single queue ``default``; CUSTOM mode uses `custom_queues`.
    `cluster_wide_cap` limits in-flight tasks across all workers (hard-cap mode only).
    `prefetch_buffer` > 0 switches to soft-cap mode, where workers may claim ahead of free capacity
    and such claims expire after `claim_lease_ms`.
    """

    queue_mode: QueueMode = QueueMode.DEFAULT
    custom_queues: list[CustomQueueConfig] | None = None
    broker: PostgresConfig
    cluster_wide_cap: int | None = None
    prefetch_buffer: int = 0
    claim_lease_ms: int | None = None
    recovery: RecoveryConfig = Field(default_factory=RecoveryConfig)

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        raise_collected(self._rule_violations(), "AppConfig")
        return self

    def _rule_violations(self) -> list[HorsiesError]:
        errors: list[HorsiesError] = []
        queues = self.custom_queues
        mode_code = ErrorCode.CONFIG_INVALID_QUEUE_MODE
        if self.queue_mode is QueueMode.DEFAULT and queues is not None:
            errors.append(
                _config_error(
                    mode_code,
                    "custom_queues must be None in DEFAULT mode",
                    note=f"custom_queues={[queue.name for queue in queues]!r}",
                    help_text=(
                        "remove custom_queues to use the single 'default' queue,\n"
                        "or set queue_mode=QueueMode.CUSTOM to use named queues"
                    ),
                )
            )
        if self.queue_mode is QueueMode.CUSTOM and not queues:
            errors.append(
                _config_error(
                    mode_code,
                    "custom_queues required in CUSTOM mode",
                    help_text=(
                        "list the queues, e.g. custom_queues=[CustomQueueConfig(name='emails')],\n"
                        "or use queue_mode=QueueMode.DEFAULT"
                    ),
                )
            )
        if self.queue_mode is QueueMode.CUSTOM and queues:
            repeated = _duplicates([queue.name for queue in queues])
            if repeated:
                errors.append(
                    _config_error(
                        mode_code,
                        "duplicate queue names in custom_queues",
                        note="repeated: " + ", ".join(f"'{name}'" for name in repeated),
                        help_text="give every CustomQueueConfig a different name",
                    )
                )

        cap = self.cluster_wide_cap
        prefetch = self.prefetch_buffer
        lease = self.claim_lease_ms
        cap_code = ErrorCode.CONFIG_INVALID_CLUSTER_CAP
        prefetch_code = ErrorCode.CONFIG_INVALID_PREFETCH
        if cap is not None and cap <= 0:
            errors.append(
                _config_error(
                    cap_code,
                    "cluster_wide_cap must be positive",
                    note=f"cluster_wide_cap={cap}",
                    help_text="use a positive number of tasks, or None for no cluster-wide limit",
                )
            )
        if prefetch < 0:
            errors.append(
                _config_error(
                    prefetch_code,
                    "prefetch_buffer must be non-negative",
                    note=f"prefetch_buffer={prefetch}",
                    help_text=(
                        "use 0 (hard-cap mode: claim only what can start now)\n"
                        "or a positive number (soft-cap mode: claim that many tasks ahead)"
                    ),
                )
            )
        if prefetch > 0 and lease is None:
            errors.append(
                _config_error(
                    prefetch_code,
                    "claim_lease_ms required when prefetch_buffer > 0",
                    note=f"prefetch_buffer={prefetch}",
                    help_text=(
                        "set claim_lease_ms (e.g. 60000) so prefetched tasks that do not start\n"
                        "in time can be claimed by other workers"
                    ),
                )
            )
        if lease is not None and lease <= 0:
            errors.append(
                _config_error(
                    prefetch_code,
                    "claim_lease_ms must be positive",
                    note=f"claim_lease_ms={lease}",
                    help_text="use a positive number of milliseconds, e.g. 60000",
                )
            )
        if prefetch == 0 and lease is not None:
            errors.append(
                _config_error(
                    prefetch_code,
                    "claim_lease_ms incompatible with hard cap mode",
                    note=f"prefetch_buffer=0 (hard-cap mode), claim_lease_ms={lease}",
                    help_text=(
                        "remove claim_lease_ms, or set prefetch_buffer > 0 to use soft-cap mode"
                    ),
                )
            )
        if cap is not None and prefetch > 0:
            errors.append(
                _config_error(
                    cap_code,
                    "cluster_wide_cap incompatible with prefetch mode",
                    note=f"cluster_wide_cap={cap}, prefetch_buffer={prefetch}",
                    help_text=(
                        "a cluster-wide cap needs hard-cap mode: set prefetch_buffer=0,\n"
                        "or remove cluster_wide_cap to keep prefetching"
                    ),
                )
            )
        return errors

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

    def queue_priority(self, name: str) -> int:
        """Effective priority of a queue (1 = most urgent): 100 in DEFAULT mode.

        Raises `ConfigurationError` (E103) for a queue this config does not have.
        """
        if self.queue_mode is QueueMode.DEFAULT:
            if name != DEFAULT_QUEUE_NAME:
                raise self._unknown_queue(name)
            return DEFAULT_QUEUE_PRIORITY
        queue = self._custom_queue(name)
        if queue is None:
            raise self._unknown_queue(name)
        return queue.priority

    def queue_max_concurrency(self, name: str) -> int | None:
        """Cluster-wide in-flight limit of a queue; None (no limit) in DEFAULT mode.

        Raises `ConfigurationError` (E103) for a queue this config does not have.
        """
        if self.queue_mode is QueueMode.DEFAULT:
            if name != DEFAULT_QUEUE_NAME:
                raise self._unknown_queue(name)
            return None
        queue = self._custom_queue(name)
        if queue is None:
            raise self._unknown_queue(name)
        return queue.max_concurrency

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
        return "\n".join(lines)

    def log_config(self, logger: logging.Logger | None = None) -> None:
        """Log `describe()` at INFO on `logger` (default: the root logger).

        Does nothing inside worker child processes (``HORSIES_CHILD_PROCESS=1``), so a worker
        logs its configuration once, not once per child.
        """
        if os.environ.get("HORSIES_CHILD_PROCESS") == "1":
            return
        (logger if logger is not None else logging.getLogger()).info("%s", self.describe())
