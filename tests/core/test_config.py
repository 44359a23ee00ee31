"""Tests for horsies.config: defaults, ranges, library rules (E200-E204), helpers, log_config."""

from __future__ import annotations

import logging
import os
import traceback
from typing import Any

import pytest
from horsies.config import (
    QUEUE_NAME_MAX_LENGTH,
    AppConfig,
    CustomQueueConfig,
    PostgresConfig,
    QueueMode,
    RecoveryConfig,
)
from horsies.errors import (
    ConfigurationError,
    ErrorCode,
    HorsiesError,
    MultipleConfigurationErrors,
    MultipleValidationErrors,
)
from horsies.redact import mask_database_url
from pydantic import ValidationError

THIS_FILE = os.path.abspath(__file__)
URL = "postgresql+psycopg://user:s3cret@localhost:5432/app"


def broker() -> PostgresConfig:
    return PostgresConfig(database_url=URL)


def app_config(**kwargs: Any) -> AppConfig:
    return AppConfig(broker=broker(), **kwargs)


def assert_unwrapped(error: BaseException) -> None:
    """The library error came out as itself, not inside a pydantic ValidationError."""
    assert not isinstance(error, ValidationError)
    assert "ValidationError" not in "".join(traceback.format_exception(error))


# --------------------------------------------------------------------------------------------------
# QueueMode / CustomQueueConfig
# --------------------------------------------------------------------------------------------------


def test_queue_mode_is_a_plain_enum() -> None:
    assert QueueMode.CUSTOM.value == "custom"
    assert QueueMode.DEFAULT.value == "default"
    assert not isinstance(QueueMode.DEFAULT, str)


def test_custom_queue_defaults() -> None:
    queue = CustomQueueConfig(name="emails")
    assert (queue.name, queue.priority, queue.max_concurrency) == ("emails", 1, 5)


@pytest.mark.parametrize("priority", [1, 50, 100])
def test_custom_queue_priority_in_range(priority: int) -> None:
    assert CustomQueueConfig(name="q", priority=priority).priority == priority


@pytest.mark.parametrize("priority", [0, 101, -1])
def test_custom_queue_priority_out_of_range_is_a_pydantic_error(priority: int) -> None:
    with pytest.raises(ValidationError):
        CustomQueueConfig(name="q", priority=priority)


def test_custom_queue_max_concurrency_zero_allowed_negative_refused() -> None:
    assert CustomQueueConfig(name="q", max_concurrency=0).max_concurrency == 0
    with pytest.raises(ValidationError):
        CustomQueueConfig(name="q", max_concurrency=-1)


@pytest.mark.parametrize(
    "name",
    ["default", "emails", "high-priority", "v1.reports", "_private", "9lives", "A" * 52],
)
def test_valid_queue_names(name: str) -> None:
    assert CustomQueueConfig(name=name).name == name


@pytest.mark.parametrize(
    "name",
    ["", "a b", ".hidden", "-dash", "drop;table", "quote'd", "émails", "line\n", "A" * 53],
)
def test_invalid_queue_name_raises_configuration_error(name: str) -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        CustomQueueConfig(name=name)
    error = excinfo.value
    assert_unwrapped(error)
    assert error.code is ErrorCode.CONFIG_INVALID_QUEUE_MODE
    assert error.message == f"invalid queue name '{name}'"
    assert error.help_text is not None
    assert "task_queue_<name>" in error.help_text
    assert str(QUEUE_NAME_MAX_LENGTH) in error.help_text


def test_queue_name_limit_keeps_the_notify_channel_within_63_bytes() -> None:
    assert len(("task_queue_" + "a" * QUEUE_NAME_MAX_LENGTH).encode()) == 63


# --------------------------------------------------------------------------------------------------
# PostgresConfig (the documented pool defaults)
# --------------------------------------------------------------------------------------------------


def test_postgres_config_defaults_are_the_documented_ones() -> None:
    config = broker()
    assert config.database_url == URL
    assert config.pool_pre_ping is True
    assert config.pool_size == 5
    assert config.max_overflow == 10
    assert config.pool_timeout == 30
    assert config.pool_recycle == 1800
    assert config.echo is False


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://u:p@host:5432/db",
        "postgresql://u:p@host/db",
        "postgres://host/db",
        "postgresql:///db?host=/var/run/postgresql",
    ],
)
def test_accepted_url_schemes(url: str) -> None:
    assert PostgresConfig(database_url=url).database_url == url


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("postgresql+asyncpg://u:topsecret@host/db", "postgresql+asyncpg"),
        ("postgresql+psycopg2://u:topsecret@host/db", "postgresql+psycopg2"),
        ("mysql://u:topsecret@host/db", "mysql"),
    ],
)
def test_rejected_url_scheme_raises_e203(url: str, scheme: str) -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        PostgresConfig(database_url=url)
    error = excinfo.value
    assert_unwrapped(error)
    assert error.code is ErrorCode.BROKER_INVALID_URL
    assert error.message == "invalid database URL scheme"
    assert f"scheme: '{scheme}'" in error.notes
    assert error.help_text is not None
    assert "postgresql+psycopg://" in error.help_text
    # The password never appears in the error.
    assert "topsecret" not in str(error)
    assert "topsecret" not in repr(error)


def test_url_without_scheme_raises_e203_without_leaking_the_password() -> None:
    conninfo = "host=db user=u password=topsecret"
    with pytest.raises(ConfigurationError) as excinfo:
        PostgresConfig(database_url=conninfo)
    assert excinfo.value.code is ErrorCode.BROKER_INVALID_URL
    assert any("no scheme" in note for note in excinfo.value.notes)
    assert "topsecret" not in str(excinfo.value)


def test_url_error_points_at_the_users_line() -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        PostgresConfig(database_url="mysql://x")
    line = excinfo.value.location
    assert line is not None
    assert line.file == THIS_FILE
    assert line.get_source_line() == '        PostgresConfig(database_url="mysql://x")'


@pytest.mark.parametrize(
    ("url", "conninfo"),
    [
        ("postgresql+psycopg://u:p@h:5432/db", "postgresql://u:p@h:5432/db"),
        ("postgresql://u:p@h/db", "postgresql://u:p@h/db"),
        ("postgres://h/db?sslmode=require", "postgresql://h/db?sslmode=require"),
    ],
)
def test_conninfo_is_a_plain_libpq_url(url: str, conninfo: str) -> None:
    assert PostgresConfig(database_url=url).conninfo == conninfo


def test_masked_url_hides_the_password() -> None:
    assert broker().masked_url == "postgresql+psycopg://user:***@localhost:5432/app"


@pytest.mark.parametrize("field", ["pool_size", "max_overflow", "pool_timeout", "pool_recycle"])
def test_negative_pool_settings_are_refused(field: str) -> None:
    with pytest.raises(ValidationError):
        PostgresConfig.model_validate({"database_url": URL, field: -1})


# --------------------------------------------------------------------------------------------------
# mask_database_url
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
        ("postgresql+psycopg://u:p@ss/w@h:5432/db", "postgresql+psycopg://u:***@h:5432/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgresql://h/db", "postgresql://h/db"),
        ("postgresql://u:@h/db", "postgresql://u:@h/db"),
        (
            "postgresql://h/db?user=u&password=pw&ssl=1",
            "postgresql://h/db?user=u&password=***&ssl=1",
        ),
        ("host=h password=pw dbname=d", "host=h password=*** dbname=d"),
        ("host=h password='p w' dbname=d", "host=h password=*** dbname=d"),
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
    ],
)
def test_mask_database_url(url: str, masked: str) -> None:
    assert mask_database_url(url) == masked


# --------------------------------------------------------------------------------------------------
# RecoveryConfig
# --------------------------------------------------------------------------------------------------

RECOVERY_RANGES = {
    "claimed_stale_threshold_ms": (1_000, 3_600_000),
    "running_stale_threshold_ms": (1_000, 7_200_000),
    "check_interval_ms": (1_000, 600_000),
    "runner_heartbeat_interval_ms": (1_000, 120_000),
    "claimer_heartbeat_interval_ms": (1_000, 120_000),
}


def test_recovery_defaults() -> None:
    config = RecoveryConfig()
    assert config.auto_requeue_stale_claimed is True
    assert config.claimed_stale_threshold_ms == 120_000
    assert config.auto_fail_stale_running is True
    assert config.running_stale_threshold_ms == 300_000
    assert config.check_interval_ms == 30_000
    assert config.runner_heartbeat_interval_ms == 30_000
    assert config.claimer_heartbeat_interval_ms == 30_000


# Settings that keep the 2x rule satisfied while one field sits at a range bound. A threshold
# of 1000 can never satisfy the 2x rule (intervals are >= 1000), so 2000 stands in for it.
COMPANIONS: dict[str, dict[int, dict[str, int]]] = {
    "claimed_stale_threshold_ms": {
        2_000: {"claimer_heartbeat_interval_ms": 1_000},
        3_600_000: {},
    },
    "running_stale_threshold_ms": {
        2_000: {"runner_heartbeat_interval_ms": 1_000},
        7_200_000: {},
    },
    "check_interval_ms": {1_000: {}, 600_000: {}},
    "runner_heartbeat_interval_ms": {
        1_000: {},
        120_000: {"running_stale_threshold_ms": 240_000},
    },
    "claimer_heartbeat_interval_ms": {
        1_000: {},
        120_000: {"claimed_stale_threshold_ms": 240_000},
    },
}


@pytest.mark.parametrize("field", sorted(RECOVERY_RANGES))
def test_recovery_values_at_range_bounds_are_accepted(field: str) -> None:
    for value, companions in COMPANIONS[field].items():
        config = RecoveryConfig.model_validate({field: value, **companions})
        assert getattr(config, field) == value


@pytest.mark.parametrize("field", ["claimed_stale_threshold_ms", "running_stale_threshold_ms"])
def test_threshold_lower_bound_passes_the_range_check(field: str) -> None:
    # 1000 is inside the range; only the 2x rule (a ConfigurationError) objects to it.
    with pytest.raises(ConfigurationError) as excinfo:
        RecoveryConfig.model_validate({field: 1_000})
    assert excinfo.value.code is ErrorCode.CONFIG_INVALID_RECOVERY


@pytest.mark.parametrize("field", sorted(RECOVERY_RANGES))
def test_recovery_out_of_range_is_a_pydantic_error(field: str) -> None:
    low, high = RECOVERY_RANGES[field]
    for value in (low - 1, high + 1):
        with pytest.raises(ValidationError):
            RecoveryConfig.model_validate({field: value})


def test_running_threshold_below_twice_the_heartbeat_raises_e204() -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        RecoveryConfig(running_stale_threshold_ms=59_999, runner_heartbeat_interval_ms=30_000)
    error = excinfo.value
    assert_unwrapped(error)
    assert error.code is ErrorCode.CONFIG_INVALID_RECOVERY
    assert error.message == "running_stale_threshold_ms too low"
    assert error.help_text is not None
    assert "60000" in error.help_text  # the minimum
    assert isinstance(error, ValueError)  # configuration errors are ValueErrors too


def test_claimed_threshold_below_twice_the_heartbeat_raises_e204() -> None:
    with pytest.raises(ValueError) as excinfo:
        RecoveryConfig(claimed_stale_threshold_ms=10_000, claimer_heartbeat_interval_ms=6_000)
    error = excinfo.value
    assert isinstance(error, ConfigurationError)
    assert error.code is ErrorCode.CONFIG_INVALID_RECOVERY
    assert error.message == "claimed_stale_threshold_ms too low"
    assert error.help_text is not None
    assert "12000" in error.help_text


def test_threshold_of_exactly_twice_the_heartbeat_is_accepted() -> None:
    config = RecoveryConfig(
        running_stale_threshold_ms=60_000,
        runner_heartbeat_interval_ms=30_000,
        claimed_stale_threshold_ms=20_000,
        claimer_heartbeat_interval_ms=10_000,
    )
    assert config.running_stale_threshold_ms == 60_000


def test_both_recovery_rules_are_collected() -> None:
    with pytest.raises(MultipleValidationErrors) as excinfo:
        RecoveryConfig(running_stale_threshold_ms=1_000, claimed_stale_threshold_ms=1_000)
    error = excinfo.value
    assert_unwrapped(error)
    assert isinstance(error, MultipleConfigurationErrors)
    assert isinstance(error, ValueError)
    assert error.report.phase_name == "RecoveryConfig"
    assert [e.message for e in error.errors] == [
        "running_stale_threshold_ms too low",
        "claimed_stale_threshold_ms too low",
    ]
    assert all(e.code is ErrorCode.CONFIG_INVALID_RECOVERY for e in error.errors)
    assert str(error).endswith("error: aborting due to 2 previous errors")


# --------------------------------------------------------------------------------------------------
# AppConfig rules 1-9
# --------------------------------------------------------------------------------------------------


def test_app_config_defaults() -> None:
    config = app_config()
    assert config.queue_mode is QueueMode.DEFAULT
    assert config.custom_queues is None
    assert config.cluster_wide_cap is None
    assert config.prefetch_buffer == 0
    assert config.claim_lease_ms is None
    assert config.recovery == RecoveryConfig()


Q = [{"name": "a"}]

RULES: list[tuple[str, dict[str, Any], ErrorCode, str]] = [
    ("1-list", {"custom_queues": Q}, ErrorCode.CONFIG_INVALID_QUEUE_MODE,
     "custom_queues must be None in DEFAULT mode"),
    ("1-empty", {"custom_queues": []}, ErrorCode.CONFIG_INVALID_QUEUE_MODE,
     "custom_queues must be None in DEFAULT mode"),
    ("2-none", {"queue_mode": QueueMode.CUSTOM}, ErrorCode.CONFIG_INVALID_QUEUE_MODE,
     "custom_queues required in CUSTOM mode"),
    ("2-empty", {"queue_mode": QueueMode.CUSTOM, "custom_queues": []},
     ErrorCode.CONFIG_INVALID_QUEUE_MODE, "custom_queues required in CUSTOM mode"),
    ("3", {"queue_mode": QueueMode.CUSTOM, "custom_queues": [{"name": "a"}, {"name": "a"}]},
     ErrorCode.CONFIG_INVALID_QUEUE_MODE, "duplicate queue names in custom_queues"),
    ("4-zero", {"cluster_wide_cap": 0}, ErrorCode.CONFIG_INVALID_CLUSTER_CAP,
     "cluster_wide_cap must be positive"),
    ("4-negative", {"cluster_wide_cap": -3}, ErrorCode.CONFIG_INVALID_CLUSTER_CAP,
     "cluster_wide_cap must be positive"),
    ("5", {"prefetch_buffer": -1}, ErrorCode.CONFIG_INVALID_PREFETCH,
     "prefetch_buffer must be non-negative"),
    ("6", {"prefetch_buffer": 2}, ErrorCode.CONFIG_INVALID_PREFETCH,
     "claim_lease_ms required when prefetch_buffer > 0"),
    ("7", {"prefetch_buffer": 2, "claim_lease_ms": 0}, ErrorCode.CONFIG_INVALID_PREFETCH,
     "claim_lease_ms must be positive"),
    ("8", {"claim_lease_ms": 5_000}, ErrorCode.CONFIG_INVALID_PREFETCH,
     "claim_lease_ms incompatible with hard cap mode"),
    ("9", {"cluster_wide_cap": 10, "prefetch_buffer": 2, "claim_lease_ms": 5_000},
     ErrorCode.CONFIG_INVALID_CLUSTER_CAP, "cluster_wide_cap incompatible with prefetch mode"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "code", "message"), [r[1:] for r in RULES], ids=[r[0] for r in RULES]
)
def test_each_rule_raises_its_configuration_error(
    kwargs: dict[str, Any], code: ErrorCode, message: str
) -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        app_config(**kwargs)
    error = excinfo.value
    assert_unwrapped(error)
    assert type(error) is ConfigurationError
    assert error.code is code
    assert error.message == message
    assert error.help_text
    assert isinstance(error, ValueError)
    assert isinstance(error, HorsiesError)


def test_rule_error_points_at_the_users_line() -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        AppConfig(broker=broker(), cluster_wide_cap=0)
    assert excinfo.value.location is not None
    assert excinfo.value.location.file == THIS_FILE
    assert excinfo.value.location.get_source_line() == (
        "        AppConfig(broker=broker(), cluster_wide_cap=0)"
    )


def test_duplicate_queue_note_names_the_repeated_queue() -> None:
    queues = [CustomQueueConfig(name=n) for n in ("a", "b", "a", "b", "c")]
    with pytest.raises(ConfigurationError) as excinfo:
        app_config(queue_mode=QueueMode.CUSTOM, custom_queues=queues)
    assert excinfo.value.notes == ["repeated: 'a', 'b'"]


def test_several_violations_are_collected_in_order() -> None:
    with pytest.raises(MultipleConfigurationErrors) as excinfo:
        app_config(custom_queues=[], cluster_wide_cap=0, prefetch_buffer=-1, claim_lease_ms=0)
    error = excinfo.value
    assert_unwrapped(error)
    assert error.report.phase_name == "AppConfig"
    assert [(e.code, e.message) for e in error.errors] == [
        (ErrorCode.CONFIG_INVALID_QUEUE_MODE, "custom_queues must be None in DEFAULT mode"),
        (ErrorCode.CONFIG_INVALID_CLUSTER_CAP, "cluster_wide_cap must be positive"),
        (ErrorCode.CONFIG_INVALID_PREFETCH, "prefetch_buffer must be non-negative"),
        (ErrorCode.CONFIG_INVALID_PREFETCH, "claim_lease_ms must be positive"),
    ]
    with pytest.raises(ValueError):
        app_config(cluster_wide_cap=0, claim_lease_ms=0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"cluster_wide_cap": 1},
        {"prefetch_buffer": 4, "claim_lease_ms": 1},
        {"queue_mode": QueueMode.CUSTOM, "custom_queues": [{"name": "a"}, {"name": "b"}]},
        {"queue_mode": "custom", "custom_queues": [{"name": "a"}]},
    ],
)
def test_valid_combinations_are_accepted(kwargs: dict[str, Any]) -> None:
    app_config(**kwargs)


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError):
        AppConfig.model_validate({"broker": {"database_url": URL}, "prefetch_bufer": 1})
    with pytest.raises(ValidationError):
        PostgresConfig.model_validate({"database_url": URL, "pool_sise": 3})


# --------------------------------------------------------------------------------------------------
# Library errors propagate unchanged through every pydantic entry point
# --------------------------------------------------------------------------------------------------


def test_nested_dict_errors_propagate_unchanged() -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        AppConfig.model_validate({"broker": {"database_url": "mysql://h/db"}})
    assert_unwrapped(excinfo.value)
    assert excinfo.value.code is ErrorCode.BROKER_INVALID_URL

    with pytest.raises(ConfigurationError) as nested_queue:
        AppConfig(
            broker=broker(),
            queue_mode=QueueMode.CUSTOM,
            custom_queues=[{"name": "bad name"}],  # pyright: ignore[reportArgumentType]
        )
    assert_unwrapped(nested_queue.value)
    assert nested_queue.value.message == "invalid queue name 'bad name'"


def test_errors_of_several_nested_models_are_collected() -> None:
    text = (
        '{"broker": {"database_url": "mysql://h/db"},'
        ' "recovery": {"running_stale_threshold_ms": 1000, "claimed_stale_threshold_ms": 1000}}'
    )
    with pytest.raises(MultipleConfigurationErrors) as excinfo:
        AppConfig.model_validate_json(text)
    assert_unwrapped(excinfo.value)
    assert [e.code for e in excinfo.value.errors] == [
        ErrorCode.BROKER_INVALID_URL,
        ErrorCode.CONFIG_INVALID_RECOVERY,
        ErrorCode.CONFIG_INVALID_RECOVERY,
    ]


def test_range_violations_stay_pydantic_errors_even_next_to_rule_violations() -> None:
    with pytest.raises(ValidationError):
        AppConfig.model_validate(
            {"broker": {"database_url": "mysql://h/db"}, "recovery": {"check_interval_ms": 1}}
        )
    with pytest.raises(ValidationError):
        app_config(queue_mode=QueueMode.CUSTOM, custom_queues=[{"name": "a", "priority": 0}])


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _custom() -> AppConfig:
    return app_config(
        queue_mode=QueueMode.CUSTOM,
        custom_queues=[
            CustomQueueConfig(name="urgent", priority=1, max_concurrency=2),
            CustomQueueConfig(name="bulk", priority=80, max_concurrency=0),
        ],
    )


def test_queue_helpers_in_default_mode() -> None:
    config = app_config()
    assert config.queue_names() == ["default"]
    assert config.queue_priority("default") == 100
    assert config.queue_max_concurrency("default") is None


def test_queue_helpers_in_custom_mode() -> None:
    config = _custom()
    assert config.queue_names() == ["urgent", "bulk"]
    assert config.queue_priority("urgent") == 1
    assert config.queue_priority("bulk") == 80
    assert config.queue_max_concurrency("urgent") == 2
    assert config.queue_max_concurrency("bulk") == 0


@pytest.mark.parametrize(("config", "name"), [(_custom(), "default"), (app_config(), "urgent")])
def test_queue_helpers_refuse_unknown_queues(config: AppConfig, name: str) -> None:
    for helper in (config.queue_priority, config.queue_max_concurrency):
        with pytest.raises(ConfigurationError) as excinfo:
            helper(name)
        assert excinfo.value.code is ErrorCode.TASK_INVALID_QUEUE
        assert excinfo.value.message == f"invalid queue_name '{name}'"
        assert excinfo.value.notes[0].startswith("valid queues: ")


# --------------------------------------------------------------------------------------------------
# log_config
# --------------------------------------------------------------------------------------------------


def test_log_config_content(caplog: pytest.LogCaptureFixture) -> None:
    config = app_config(
        queue_mode=QueueMode.CUSTOM,
        custom_queues=[CustomQueueConfig(name="urgent", priority=3, max_concurrency=7)],
        prefetch_buffer=2,
        claim_lease_ms=9_000,
    )
    logger = logging.getLogger("test.horsies.config")
    with caplog.at_level(logging.INFO, logger=logger.name):
        config.log_config(logger)
    assert len(caplog.records) == 1
    record = caplog.records[0]
    assert record.name == logger.name
    assert record.levelno == logging.INFO
    text = record.getMessage()
    lines = [line.strip() for line in text.splitlines()]
    assert lines[0] == "AppConfig:"
    assert "queue_mode: CUSTOM" in lines
    assert "- urgent (priority=3, max_concurrency=7)" in lines
    assert "prefetch_buffer: 2" in lines
    assert "claim_lease_ms: 9000ms" in lines
    assert "database_url: postgresql+psycopg://user:***@localhost:5432/app" in lines
    assert "pool_size: 5" in lines
    assert "max_overflow: 10" in lines
    for field in RecoveryConfig.model_fields:
        assert f"{field}: {getattr(config.recovery, field)}" in lines
    assert not any(line.startswith("cluster_wide_cap") for line in lines)
    assert "s3cret" not in text
    # Order: mode, queues, prefetch, lease, broker block, recovery block.
    order = ["queue_mode:", "- urgent", "prefetch_buffer:", "claim_lease_ms:", "broker:",
             "recovery:"]  # fmt: skip
    positions = [next(i for i, line in enumerate(lines) if line.startswith(o)) for o in order]
    assert positions == sorted(positions)


def test_log_config_defaults_to_the_root_logger(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        app_config(cluster_wide_cap=4).log_config()
    assert [r.name for r in caplog.records] == ["root"]
    text = caplog.records[0].getMessage()
    assert "queue_mode: DEFAULT" in text
    assert "cluster_wide_cap: 4" in text
    assert "claim_lease_ms" not in text


def test_log_config_is_a_no_op_in_worker_children(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HORSIES_CHILD_PROCESS", "1")
    with caplog.at_level(logging.DEBUG):
        app_config().log_config()
    assert caplog.records == []
