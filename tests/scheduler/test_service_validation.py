"""Start-up validation of schedules and what a valid schedule enqueues (with the task's own
options: queue unless overridden, retry policy, auto_retry_for).

No database: building an app and resolving its schedules does no I/O.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from horsies import (
    AppConfig,
    CustomQueueConfig,
    Horsies,
    IntervalSchedule,
    Limit,
    PostgresConfig,
    QueueMode,
    RetryPolicy,
    ScheduleConfig,
    TaskError,
    TaskResult,
    TaskSchedule,
)
from horsies.broker.limits import LimitTag
from horsies.errors import (
    ConfigurationError,
    ErrorCode,
    MultipleValidationErrors,
    NotRegistered,
    RegistryError,
)
from horsies_scheduler.calculator import config_hash
from horsies_scheduler.validation import (
    resolve_schedule,
    resolve_schedules,
)

URL = "postgresql+psycopg://u:p@127.0.0.1:1/unused"
EVERY_MINUTE = IntervalSchedule(minutes=1)


def default_app() -> Horsies:
    app = Horsies(AppConfig(broker=PostgresConfig(database_url=URL)))

    @app.task("plain")
    def plain() -> TaskResult[int, TaskError]:
        return TaskResult(ok=1)

    @app.task("needs", retry_policy=RetryPolicy.fixed([5, 10, 20]), auto_retry_for=["KeyError"])
    def needs(
        a: int, b: int, /, c: int, *rest: int, d: int, e: int = 0, **more: Any
    ) -> TaskResult[int, TaskError]:
        return TaskResult(ok=a + b + c + d + e)

    @app.task("strict")
    def strict(x: int, *, y: int = 0) -> TaskResult[int, TaskError]:
        return TaskResult(ok=x + y)

    @app.task("meta")
    def meta(x: int, workflow_meta: object) -> TaskResult[int, TaskError]:
        return TaskResult(ok=x)

    return app


def custom_app() -> Horsies:
    app = Horsies(
        AppConfig(
            broker=PostgresConfig(database_url=URL),
            queue_mode=QueueMode.CUSTOM,
            custom_queues=[
                CustomQueueConfig(name="low", priority=90),
                CustomQueueConfig(name="urgent", priority=1),
            ],
        )
    )

    @app.task("report", queue_name="low", good_until=dt.datetime(2099, 1, 1, tzinfo=dt.UTC))
    def report() -> TaskResult[int, TaskError]:
        return TaskResult(ok=1)

    return app


def schedule(task_name: str, **extra: Any) -> TaskSchedule:
    return TaskSchedule(
        name=extra.pop("name", "s"), task_name=task_name, pattern=EVERY_MINUTE, **extra
    )


# -- task registered -------------------------------------------------------------------------------


def test_unregistered_task_is_e300_listing_the_available_tasks() -> None:
    with pytest.raises(NotRegistered) as info:
        resolve_schedule(default_app(), schedule("nope"))
    error = info.value
    assert isinstance(error, RegistryError)
    assert isinstance(error, KeyError)
    assert error.code is ErrorCode.TASK_NOT_REGISTERED
    assert error.message == "scheduled task 'nope' not registered"
    assert "available tasks: meta, needs, plain, strict" in error.notes
    assert error.location is None


# -- queue -----------------------------------------------------------------------------------------


def test_queue_name_in_default_mode_is_e205_with_the_cause_as_note() -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve_schedule(default_app(), schedule("plain", queue_name="urgent"))
    error = info.value
    assert error.code is ErrorCode.CONFIG_INVALID_SCHEDULE
    assert error.message == "invalid queue configuration for schedule 's'"
    assert "[E200] cannot specify queue_name in DEFAULT mode" in error.notes


def test_unknown_custom_queue_is_e205() -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve_schedule(custom_app(), schedule("report", queue_name="nowhere"))
    assert info.value.code is ErrorCode.CONFIG_INVALID_SCHEDULE
    assert any("invalid queue_name 'nowhere'" in note for note in info.value.notes)


def test_custom_mode_uses_the_task_queue_or_the_override_with_its_priority() -> None:
    app = custom_app()
    own = resolve_schedule(app, schedule("report")).task
    assert (own.queue_name, own.priority) == ("low", 90)
    override = resolve_schedule(app, schedule("report", queue_name="urgent")).task
    assert (override.queue_name, override.priority) == ("urgent", 1)
    # The task's own options, good_until included.
    assert override.good_until == dt.datetime(2099, 1, 1, tzinfo=dt.UTC)


# -- required parameters ---------------------------------------------------------------------------


def test_missing_params_are_e205_naming_them() -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve_schedule(default_app(), schedule("needs", args=(1,)))
    error = info.value
    assert error.code is ErrorCode.CONFIG_INVALID_SCHEDULE
    assert error.message == "schedule 's' is missing required params for task 'needs'"
    assert "missing: b, c, d" in error.notes


def test_arguments_the_task_cannot_accept_are_e205() -> None:
    app = default_app()
    for bad in (
        schedule("strict", args=(1, 2)),  # too many positionals
        schedule("strict", args=(1,), kwargs={"z": 1}),  # unknown keyword
        schedule("needs", kwargs={"a": 1, "b": 2, "c": 3, "d": 4}),  # positional-only by name
    ):
        with pytest.raises(ConfigurationError) as info:
            resolve_schedule(app, bad)
        assert info.value.code is ErrorCode.CONFIG_INVALID_SCHEDULE
        assert "does not accept" in info.value.message


def test_workflow_meta_is_injected_not_required() -> None:
    assert resolve_schedule(default_app(), schedule("meta", args=(1,))).task.args == (1,)


def test_unserializable_arguments_are_e205() -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve_schedule(default_app(), schedule("strict", args=(object(),)))
    assert info.value.message == "arguments of schedule 's' cannot be serialized"


def test_arguments_above_max_payload_bytes_are_refused_at_start_up() -> None:
    app = default_app()
    app.config = app.config.model_copy(update={"max_payload_bytes": 1024})
    with pytest.raises(ConfigurationError) as info:
        resolve_schedule(app, schedule("strict", args=("x" * 2000,)))
    assert info.value.message == "arguments of schedule 's' are too large"
    assert "above the limit of 1,024 bytes" in " ".join(info.value.notes)
    assert resolve_schedule(app, schedule("strict", args=("x" * 500,))).task.args == ("x" * 500,)


# -- valid schedules -------------------------------------------------------------------------------


def test_target_carries_the_task_options_and_arguments() -> None:
    app = default_app()
    target = resolve_schedule(
        app,
        schedule(
            "needs",
            name="n",
            args=(1, 2, 3),
            kwargs={"d": 4},
            catch_up_missed=True,
            timezone="Europe/Berlin",
        ),
    )
    task = target.task
    assert target.name == "n"
    assert target.catch_up_missed is True
    assert target.timezone == "Europe/Berlin"
    assert target.config_hash == config_hash(EVERY_MINUTE, "Europe/Berlin")
    assert (task.task_name, task.args, task.kwargs) == ("needs", (1, 2, 3), {"d": 4})
    assert (task.queue_name, task.priority) == ("default", 100)
    needs = app.tasks["needs"]
    assert task.task_options == needs.task_options_json
    assert task.max_retries == 3
    assert task.task_id is None
    assert task.sent_at is None


def test_resolve_schedules_skips_disabled_and_reports_every_problem() -> None:
    app = default_app()
    config = ScheduleConfig(
        schedules=[
            schedule("plain", name="ok"),
            schedule("nope", name="off", enabled=False),
            schedule("nope", name="bad-task"),
            schedule("needs", name="bad-args"),
        ]
    )
    with pytest.raises(MultipleValidationErrors) as info:
        resolve_schedules(app, config.schedules)
    codes = [error.code for error in info.value.errors]
    assert codes == [ErrorCode.TASK_NOT_REGISTERED, ErrorCode.CONFIG_INVALID_SCHEDULE]
    valid = resolve_schedules(app, [config.schedules[0], config.schedules[1]])
    assert [target.name for target in valid] == ["ok"]


def test_a_single_problem_is_raised_as_itself() -> None:
    with pytest.raises(NotRegistered):
        resolve_schedules(default_app(), [schedule("nope")])


def test_a_scheduled_task_under_a_limit_is_stored_under_its_key() -> None:
    app = Horsies(AppConfig(broker=PostgresConfig(database_url=URL)))

    @app.task("per-tenant", limit=Limit("tenants", concurrency=1, on=["tenant"]))
    def per_tenant(tenant: str) -> TaskResult[None, TaskError]:
        return TaskResult(ok=None)

    @app.task("by-domain", limit=Limit("domains", rate=1, key=lambda a: a["email"].split("@")[1]))
    def by_domain(email: str) -> TaskResult[None, TaskError]:
        return TaskResult(ok=None)

    target = resolve_schedule(app, schedule("per-tenant", kwargs={"tenant": "acme"}))
    assert target.task.limit == LimitTag("tenants", "acme")
    with pytest.raises(ConfigurationError) as info:
        resolve_schedule(app, schedule("by-domain", args=("no-at-sign",)))
    assert info.value.code is ErrorCode.CONFIG_INVALID_SCHEDULE
    assert "key function of limit 'domains' raised IndexError" in str(info.value)
