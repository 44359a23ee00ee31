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
import sys
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any, Final, LiteralString, Self, cast

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from horsies._config_model import ConfigModel, duplicate_names
from horsies.errors import ConfigurationError, ErrorCode, HorsiesError, raise_collected
from horsies.redact import MASK, SCHEME_RE, credential_ends, mask_database_url, url_password
from horsies.schedules import ScheduleConfig

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
    "mask_database_url",
    "mask_validation_error",
]

DEFAULT_QUEUE_NAME: Final = "default"
DEFAULT_QUEUE_PRIORITY: Final = 100

DEFAULT_MAX_PAYLOAD_BYTES: Final = 16 * 1024 * 1024
"""Default `AppConfig.max_payload_bytes`: 16 MiB of encoded arguments (or result) per task."""
MIN_MAX_PAYLOAD_BYTES: Final = 1024
"""Smallest accepted `AppConfig.max_payload_bytes` (anything smaller is most likely a unit slip)."""

QUEUE_NAME_PATTERN: Final = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
"""Allowed queue names: ASCII letters, digits, ``_``, ``.``, ``-`` (not first)."""

# Each queue gets the NOTIFY channel "task_queue_<name>", and PostgreSQL identifiers hold at most
# 63 bytes: 63 - len("task_queue_") = 52.
QUEUE_NAME_MAX_LENGTH: Final = 52

_QUEUE_NAME_RE: Final = re.compile(QUEUE_NAME_PATTERN)

_ACCEPTED_SCHEMES: Final = ("postgresql+psycopg", "postgresql", "postgres")
_EXAMPLE_URL: Final = "postgresql+psycopg://user:password@localhost:5432/dbname"


def _mask_input(value: Any) -> Any:
    """`value` (an input shown by a pydantic error) with every URL password masked."""
    if isinstance(value, str):
        return mask_database_url(value)
    if isinstance(value, Mapping):
        mapping = cast("Mapping[Any, Any]", value)
        return {key: _mask_input(item) for key, item in mapping.items()}
    if isinstance(value, list | tuple):
        return [_mask_input(item) for item in cast("Iterable[Any]", value)]
    return value


def mask_validation_error(exc: ValidationError) -> ValidationError | None:
    """A copy of `exc` whose displayed inputs have their URL passwords masked, or None if `exc`
    shows no password.

    pydantic prints the offending input of each error (``input_value=...``): a URL given where
    a `PostgresConfig` was expected, or a mapping holding one, would print the password.
    """
    details = exc.errors(include_url=False)
    masked = [_mask_input(detail["input"]) for detail in details]
    if all(new == detail["input"] for new, detail in zip(masked, details, strict=True)):
        return None
    known: list[InitErrorDetails] = []
    custom: list[InitErrorDetails] = []
    for detail, value in zip(details, masked, strict=True):
        item = InitErrorDetails(type=detail["type"], loc=detail["loc"], input=value)
        if "ctx" in detail:
            item["ctx"] = detail["ctx"]
        known.append(item)
        # Fallback: the rendered message as it was (no context, so nothing is re-formatted).
        custom.append(
            InitErrorDetails(
                type=PydanticCustomError(
                    cast(LiteralString, detail["type"]), cast(LiteralString, detail["msg"])
                ),
                loc=detail["loc"],
                input=value,
            )
        )
    try:
        return ValidationError.from_exception_data(exc.title, known)
    except Exception:
        return ValidationError.from_exception_data(exc.title, custom)


_URL_ENCODING_HELP: Final = (
    "percent-encode special characters of the user name and password\n"
    "('%' as %25, ' ' as %20, '@' as %40, ':' as %3A, '/' as %2F),\n"
    "and use only libpq connection parameters in the query string"
)


def _check_libpq_syntax(url: str, *, deferrable: bool = True) -> None:
    """Refuse (E203) a URL that libpq cannot parse, showing libpq's complaint password-masked.

    libpq quotes the offending part of a URL in its message (for a badly escaped password, the
    password itself), so such a URL must never reach a connection attempt whose error is logged.

    In a worker child (``HORSIES_CHILD_PROCESS=1``) that has not loaded psycopg, a `deferrable`
    check is left to `PostgresConfig.check_libpq_syntax`, which the app runs when it creates its
    broker: the worker's main process has checked the same URL already, and a child whose tasks
    send nothing then never loads the database driver (about 10 MiB per child).
    """
    if (
        deferrable
        and os.environ.get("HORSIES_CHILD_PROCESS") == "1"
        and "psycopg" not in sys.modules
    ):
        return
    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:  # pragma: no cover - psycopg without libpq: refused at connect time
        return
    scheme = SCHEME_RE.match(url)
    conninfo = f"postgresql://{url[scheme.end() :]}" if scheme is not None else url
    try:
        conninfo_to_dict(conninfo)
    except Exception as exc:
        complaint = str(exc).strip() or type(exc).__name__
        password = url_password(url)
        if password:
            complaint = complaint.replace(password, MASK)
        error = ConfigurationError(
            "invalid database URL",
            code=ErrorCode.BROKER_INVALID_URL,
            notes=[
                f"libpq: {mask_database_url(complaint)}",
                f"database_url: {mask_database_url(url)}",
            ],
            help_text=_URL_ENCODING_HELP,
        )
        raise error from None
    libpq_at, loose_at = credential_ends(url, scheme.end() if scheme is not None else 0, len(url))
    if loose_at > libpq_at:
        # libpq would cut the user name or password at a raw "@" or "/": it would connect with
        # part of the password and show the rest as a host or database name in its errors.
        raise ConfigurationError(
            "invalid database URL",
            code=ErrorCode.BROKER_INVALID_URL,
            notes=[
                "the user name or password contains a raw '@' or '/'",
                f"database_url: {mask_database_url(url)}",
            ],
            help_text=_URL_ENCODING_HELP,
        )


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


class PostgresConfig(ConfigModel):
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
        match = SCHEME_RE.match(value)
        scheme = match.group(1) if match is not None else None
        if scheme is not None and scheme.lower() in _ACCEPTED_SCHEMES:
            _check_libpq_syntax(value)
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

    def check_libpq_syntax(self) -> None:
        """Refuse (E203) a `database_url` that libpq cannot parse.

        Done when the config is built, except in worker children, where the app does it when it
        creates its broker (see `Horsies.get_broker`), so that importing an app in a child does not
        load psycopg.

        Raises:
            ConfigurationError: E203, with libpq's complaint (password masked).
        """
        _check_libpq_syntax(self.database_url, deferrable=False)

    @property
    def conninfo(self) -> str:
        """The URL in plain libpq form (``postgresql://...``), as psycopg connects with it."""
        match = SCHEME_RE.match(self.database_url)
        rest = self.database_url[match.end() :] if match is not None else self.database_url
        return f"postgresql://{rest}"

    @property
    def masked_url(self) -> str:
        """`database_url` with the password replaced by ``***`` (for logs and banners)."""
        return mask_database_url(self.database_url)

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        # repr() and str() of this config, and of an AppConfig holding it, show the masked URL.
        for name, value in super().__repr_args__():
            yield name, (self.masked_url if name == "database_url" else value)


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


class RecoveryConfig(ConfigModel):
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
    """

    queue_mode: QueueMode = QueueMode.DEFAULT
    custom_queues: list[CustomQueueConfig] | None = None
    broker: PostgresConfig
    cluster_wide_cap: int | None = None
    prefetch_buffer: int = 0
    claim_lease_ms: int | None = None
    recovery: RecoveryConfig = Field(default_factory=RecoveryConfig)
    schedule: ScheduleConfig | None = None
    max_payload_bytes: int | None = Field(
        default=DEFAULT_MAX_PAYLOAD_BYTES, ge=MIN_MAX_PAYLOAD_BYTES
    )

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
            repeated = duplicate_names([queue.name for queue in queues])
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
        if os.environ.get("HORSIES_CHILD_PROCESS") == "1":
            return
        (logger if logger is not None else logging.getLogger()).info("%s", self.describe())
