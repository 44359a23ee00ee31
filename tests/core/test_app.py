"""The `Horsies` application object: its task registry (a read-only mapping), its broker (the
`broker` property and `get_broker()` are one object), send suppression, check() and the banner."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from horsies.app import Horsies, TaskRegistry
from horsies.banner import render_banner
from horsies.config import AppConfig, CustomQueueConfig, PostgresConfig, QueueMode
from horsies.env import SUPPRESS_SENDS as SUPPRESS_SENDS_ENV
from horsies.errors import (
    ConfigurationError,
    ErrorCode,
    HorsiesError,
    NotRegistered,
    RegistryError,
)
from horsies.results import TaskError, TaskResult
from import_sandbox import restored_imports, write

URL = "postgresql+psycopg://alice:s3cret-pw@localhost:1/nowhere"


def make_app(**config: object) -> Horsies:
    return Horsies(AppConfig(broker=PostgresConfig(database_url=URL), **config))  # type: ignore[arg-type]


def custom_config() -> dict[str, object]:
    return {
        "queue_mode": QueueMode.CUSTOM,
        "custom_queues": [
            CustomQueueConfig(name="critical", priority=1),
            CustomQueueConfig(name="bulk", priority=90, max_concurrency=2),
        ],
    }


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Horsies:
    monkeypatch.delenv(SUPPRESS_SENDS_ENV, raising=False)
    monkeypatch.delenv("HORSIES_CHILD_PROCESS", raising=False)
    return make_app()


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temporary directory importable as a source root; sys.path/sys.modules restored after."""
    with restored_imports(tmp_path, monkeypatch):
        sys.path.insert(0, str(tmp_path))
        yield tmp_path


# -- construction ---------------------------------------------------------------------------------


def test_construction_does_no_io_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="horsies"):
        app = make_app()
    assert app._broker is None
    assert [record.name for record in caplog.records] == ["horsies.app"]
    assert app.logger.name == "horsies.app"
    assert app.role == "producer"


def test_config_must_be_an_app_config() -> None:
    with pytest.raises(TypeError):
        Horsies({"broker": URL})  # type: ignore[arg-type]


# -- registry --------------------------------------------------------------------------------------


def test_registry_is_a_read_only_mapping(app: Horsies) -> None:
    @app.task("first")
    def first() -> TaskResult[int, TaskError]:
        return TaskResult(ok=1)

    @app.task("second")
    def second() -> TaskResult[int, TaskError]:
        return TaskResult(ok=2)

    assert isinstance(app.tasks, TaskRegistry)
    assert list(app.tasks) == ["first", "second"] == app.list_tasks()
    assert len(app.tasks) == 2
    assert "first" in app.tasks
    assert "missing" not in app.tasks
    assert app.tasks.get("missing") is None
    assert app.tasks.get("first") is first
    assert dict(app.tasks.items()) == {"first": first, "second": second}
    with pytest.raises(TypeError):
        app.tasks["third"] = first  # type: ignore[index]


def test_unknown_task_lookup_raises_not_registered(app: Horsies) -> None:
    with pytest.raises(NotRegistered) as info:
        app.tasks["nope"]
    error = info.value
    assert isinstance(error, KeyError)
    assert isinstance(error, RegistryError)
    assert error.code is ErrorCode.TASK_NOT_REGISTERED
    assert error.message == "task 'nope' not registered"
    assert error.task_name == "nope"


# -- discovery ------------------------------------------------------------------------------------


def test_discover_tasks_records_and_replaces(
    app: Horsies, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="horsies"):
        app.discover_tasks(["a.tasks", "b/tasks.py"])
    assert "Registered 2 task module(s) for discovery" in caplog.text
    listed = app.get_discovered_task_modules()
    listed.append("mutated")
    assert app.get_discovered_task_modules() == ["a.tasks", "b/tasks.py"]
    app.discover_tasks(["c.tasks"])
    assert app.get_discovered_task_modules() == ["c.tasks"]


def test_discovery_log_is_quiet_in_worker_children(
    app: Horsies, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("HORSIES_CHILD_PROCESS", "1")
    with caplog.at_level(logging.INFO, logger="horsies"):
        app.discover_tasks(["x"])
    assert "for discovery" not in caplog.text
    monkeypatch.setenv("HORSIES_CHILD_DISCOVERY_LOGS", "1")
    with caplog.at_level(logging.INFO, logger="horsies"):
        app.discover_tasks(["x"])
    assert "Registered 1 task module(s) for discovery" in caplog.text


def test_expand_module_globs(app: Horsies, sandbox: Path) -> None:
    for name in (
        "pkg/a.py",
        "pkg/sub/b.py",
        "pkg/test_skip.py",
        "pkg/skip_test.py",
        "pkg/conftest.py",
    ):
        write(sandbox / name, "")
    (sandbox / "pkg" / "dir.py").mkdir()  # a directory named like a module is not a file
    (sandbox / "pkg" / "notes.txt").write_text("")
    expanded = app.expand_module_globs(
        ["pkg/**/*.py", "pkg/a.py", "some.dotted.module", "missing/file.py", "pkg/*"]
    )
    real = os.path.realpath
    assert expanded == [
        real(sandbox / "pkg/a.py"),
        real(sandbox / "pkg/sub/b.py"),
        "some.dotted.module",
    ]


def test_expand_module_globs_custom_excludes_and_symlinks(app: Horsies, sandbox: Path) -> None:
    target = write(sandbox / "real" / "test_tasks.py", "")
    (sandbox / "linked.py").symlink_to(target)
    assert app.expand_module_globs(["*.py", "real/*.py"], exclude=["*/nothing*"]) == [
        os.path.realpath(target)
    ]
    assert app.expand_module_globs(["real/test_tasks.py"]) == []


def test_import_task_modules(app: Horsies, sandbox: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(sandbox / "dotted_tasks.py", "VALUE = 1\n")
    file_path = write(sandbox / "sub" / "file_tasks.py", "VALUE = 2\n")
    app.discover_tasks(["dotted_tasks", "sub/file_tasks.py", "sub/missing.py"])
    with caplog.at_level(logging.WARNING, logger="horsies"):
        imported = app.import_task_modules()
    assert imported == ["dotted_tasks", os.path.realpath(file_path)]
    assert "sub/missing.py" in caplog.text
    assert sys.modules["dotted_tasks"].VALUE == 1
    assert sys.modules["file_tasks"].VALUE == 2
    with pytest.raises(ModuleNotFoundError):
        app.import_task_modules(["no_such_module_here"])


# -- broker ----------------------------------------------------------------------------------------


def test_broker_is_created_once_and_lazily(app: Horsies) -> None:
    broker = app.get_broker()
    try:
        assert app.get_broker() is broker
        assert app.broker is broker
        assert broker.app is app
    finally:
        broker.close()


def test_broker_construction_error_is_a_value_error(
    app: Horsies, broker_construction_fails: str
) -> None:
    expected = f"^Failed to get broker: {broker_construction_fails}$"
    with pytest.raises(ValueError, match=expected):
        app.get_broker()


# -- send suppression -----------------------------------------------------------------------------


def test_suppression_flag_and_env(app: Horsies, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not app.are_sends_suppressed()
    app.suppress_sends()
    assert app.are_sends_suppressed()
    app.suppress_sends(False)
    assert not app.are_sends_suppressed()
    monkeypatch.setenv(SUPPRESS_SENDS_ENV, "0")
    assert not app.are_sends_suppressed()
    monkeypatch.setenv(SUPPRESS_SENDS_ENV, "1")
    assert app.are_sends_suppressed()


# -- queues ---------------------------------------------------------------------------------------


def test_default_mode_queues(app: Horsies) -> None:
    assert app.get_valid_queue_names() == ["default"]
    assert app.validate_queue_name(None) == "default"
    assert app.resolve_queue(None) == ("default", 100)
    with pytest.raises(ConfigurationError) as info:
        app.validate_queue_name("default")
    assert info.value.code is ErrorCode.CONFIG_INVALID_QUEUE_MODE
    assert info.value.message == "cannot specify queue_name in DEFAULT mode"
    assert isinstance(info.value, ValueError)


def test_custom_mode_queues() -> None:
    app = make_app(**custom_config())
    assert app.get_valid_queue_names() == ["critical", "bulk"]
    assert app.validate_queue_name("bulk") == "bulk"
    assert app.resolve_queue("bulk") == ("bulk", 90)
    assert app.resolve_queue("critical") == ("critical", 1)
    with pytest.raises(ConfigurationError) as missing:
        app.validate_queue_name(None)
    assert missing.value.code is ErrorCode.CONFIG_INVALID_QUEUE_MODE
    assert missing.value.message == "queue_name is required in CUSTOM mode"
    with pytest.raises(ConfigurationError) as unknown:
        app.validate_queue_name("other")
    assert unknown.value.code is ErrorCode.TASK_INVALID_QUEUE
    assert unknown.value.message == "invalid queue_name 'other'"
    assert unknown.value.notes == ["valid queues: critical, bulk"]


# -- role -----------------------------------------------------------------------------------------


def test_set_role(app: Horsies) -> None:
    app.set_role("worker")
    assert app.role == "worker"
    app.set_role("scheduler")
    assert app.role == "scheduler"
    with pytest.raises(ValueError, match="role must be one of"):
        app.set_role("chef")


# -- check() ---------------------------------------------------------------------------------------


def test_check_without_modules_passes(app: Horsies) -> None:
    assert app.check() == []


def test_check_collects_every_import_problem(app: Horsies, sandbox: Path) -> None:
    write(sandbox / "good_tasks.py", "VALUE = 1\n")
    write(
        sandbox / "bad_def_tasks.py",
        """
        from horsies.results import TaskError, TaskResult
        from app_holder import app

        @app.task("nope", queue_name="x")
        def nope() -> TaskResult[int, TaskError]:
            return TaskResult(ok=1)
        """,
    )
    write(
        sandbox / "many_errors_tasks.py",
        """
        from horsies.errors import ConfigurationError, raise_collected
        raise_collected([ConfigurationError("first"), ConfigurationError("second")], "phase")
        """,
    )
    write(sandbox / "crashing_tasks.py", "raise RuntimeError('kaboom')\n")
    sys.modules["app_holder"] = type(sys)("app_holder")
    sys.modules["app_holder"].app = app  # type: ignore[attr-defined]
    app.discover_tasks(
        [
            "good_tasks",
            "bad_def_tasks",
            "many_errors_tasks",
            "crashing_tasks",
            "missing/tasks.py",
        ]
    )
    errors = app.check()
    assert all(isinstance(error, HorsiesError) for error in errors)
    assert [error.message for error in errors] == [
        "cannot specify queue_name in DEFAULT mode",
        "first",
        "second",
        "failed to import module: crashing_tasks",
        "task module not found: missing/tasks.py",
    ]
    crash = errors[3]
    assert crash.code is ErrorCode.APP_LOAD_FAILED
    assert crash.notes == ["RuntimeError: kaboom"]
    assert errors[4].code is ErrorCode.APP_LOAD_FAILED
    assert errors[4].location is None


def test_check_suppresses_sends_and_restores_the_flag(app: Horsies, sandbox: Path) -> None:
    @app.task("pinged")
    def pinged() -> TaskResult[int, TaskError]:
        return TaskResult(ok=1)

    sys.modules["sending_holder"] = type(sys)("sending_holder")
    sys.modules["sending_holder"].task = pinged  # type: ignore[attr-defined]
    write(sandbox / "sending_tasks.py", "from sending_holder import task\nHANDLE = task.send()\n")
    app.discover_tasks(["sending_tasks"])
    assert app.check() == []
    assert sys.modules["sending_tasks"].HANDLE.task_id == "<suppressed>"
    assert not app.are_sends_suppressed()
    app.suppress_sends(True)
    app.check()
    assert app.are_sends_suppressed()


def test_check_live_reports_unreachable_database(app: Horsies) -> None:
    errors = app.check(live=True)
    assert len(errors) == 1
    error = errors[0]
    assert error.code is ErrorCode.BROKER_UNREACHABLE
    assert error.message == "broker connectivity check failed"
    assert "s3cret-pw" not in str(error)
    app.get_broker().close()


def test_check_live_skips_connectivity_after_import_errors(app: Horsies) -> None:
    app.discover_tasks(["missing/tasks.py"])
    errors = app.check(live=True)
    assert [error.message for error in errors] == ["task module not found: missing/tasks.py"]
    assert app._broker is None


def test_check_live_against_postgres(database_url: str) -> None:
    app = Horsies(AppConfig(broker=PostgresConfig(database_url=database_url)))
    assert app.check(live=True) == []
    app.get_broker().close()


# -- banner ----------------------------------------------------------------------------------------


def test_banner_content_and_masked_password() -> None:
    app = make_app(**custom_config(), cluster_wide_cap=7)

    @app.task("zeta", queue_name="bulk")
    def zeta() -> TaskResult[int, TaskError]:
        return TaskResult(ok=1)

    @app.task("alpha", queue_name="critical")
    def alpha() -> TaskResult[int, TaskError]:
        return TaskResult(ok=1)

    app.set_role("worker")
    text = render_banner(app)
    assert "distributed task queue and workflow engine" in text
    assert ".> role:        worker" in text
    assert ".> queue_mode:  CUSTOM" in text
    assert ".> queues:      critical, bulk" in text
    assert ".> cap:         7 (cluster-wide)" in text
    assert "s3cret-pw" not in text
    assert "alice:***@localhost" in text
    assert "[tasks] (2 registered)" in text
    assert text.index(". alpha") < text.index(". zeta")
    assert ".> role:        scheduler" in render_banner(app, "scheduler")


def test_banner_default_mode_has_no_cap_line(app: Horsies) -> None:
    text = render_banner(app, "worker")
    assert ".> queues:      default" in text
    assert ".> queue_mode:  DEFAULT" in text
    assert "cap:" not in text
    assert "[tasks] (0 registered)" in text


# -- documented deep imports -----------------------------------------------------------------------


def test_documented_deep_imports_still_work() -> None:
    import horsies.codec
    import horsies.config
    import horsies.errors
    from horsies.broker import PostgresBroker
    from horsies.core.brokers.postgres import PostgresBroker as CompatBroker
    from horsies.core.codec import serde
    from horsies.core.errors import (
        ConfigurationError as CompatConfigurationError,
    )
    from horsies.core.errors import (
        HorsiesError as CompatHorsiesError,
    )
    from horsies.core.errors import RegistryError, SourceLocation, TaskDefinitionError
    from horsies.core.models.queues import CustomQueueConfig as CompatQueue
    from horsies.core.models.queues import QueueMode as CompatMode
    from horsies.core.models.recovery import RecoveryConfig
    from horsies.core.task_decorator import TaskHandle
    from horsies.tasks.handle import TaskHandle as RealHandle

    assert CompatMode is QueueMode
    assert CompatQueue is CustomQueueConfig
    assert RecoveryConfig is horsies.config.RecoveryConfig
    assert CompatHorsiesError is HorsiesError
    assert CompatConfigurationError is ConfigurationError
    assert (RegistryError, SourceLocation, TaskDefinitionError) == (
        horsies.errors.RegistryError,
        horsies.errors.SourceLocation,
        horsies.errors.TaskDefinitionError,
    )
    assert TaskHandle is RealHandle
    assert CompatBroker is PostgresBroker
    for name in (
        "to_jsonable",
        "rehydrate_value",
        "args_to_json",
        "kwargs_to_json",
        "dumps_json",
        "loads_json",
        "task_result_from_json",
        "SerializationError",
    ):
        assert getattr(serde, name) is getattr(horsies.codec, name)
