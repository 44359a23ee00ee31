"""The `horsies` CLI: `horsies check` (its imports run with sends suppressed), plugin sub-commands,
error rendering."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from horsies import cli
from process_harness import run_horsies

APPS = Path(__file__).resolve().parent / "apps"
OK_APP = f"{APPS / 'check_ok_app.py'}:app"


def assert_rendered_failure(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "ok: all validations passed" not in result.stdout


# -- success --------------------------------------------------------------------------------------


def test_check_ok_with_file_locator() -> None:
    result = run_horsies("check", OK_APP)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith(
        "ok: all validations passed\n  2 task(s) registered\n"
        "  scheduler: start-up validations passed\n"
    )
    assert "Task send suppressed during module import/discovery: check_ok.hello" in result.stdout
    # Every import done by the command runs with sends suppressed.
    assert "app-module-send:<suppressed>" in result.stderr
    assert "task-module-send:<suppressed>" in result.stderr


def test_check_ok_with_dotted_locator_option() -> None:
    result = run_horsies("check", "-m", "check_ok_app:app", "--loglevel", "debug", cwd=APPS)
    assert result.returncode == 0, result.stderr
    assert "ok: all validations passed\n  2 task(s) registered\n" in result.stdout


def test_check_finds_the_single_app_without_attribute() -> None:
    result = run_horsies("check", str(APPS / "check_ok_app.py"))
    assert result.returncode == 0, result.stderr


def test_check_runs_the_schedulers_start_up_validations() -> None:
    """What `horsies scheduler` refuses at start-up, `horsies check` refuses too."""
    result = run_horsies("check", f"{APPS / 'check_schedule_app.py'}:app")
    assert_rendered_failure(result)
    assert "error[E300]" in result.stderr  # the unregistered task
    assert "error[E205]" in result.stderr  # the missing argument
    assert "aborting due to 2 previous errors" in result.stderr


def test_check_lists_the_limits_of_the_app() -> None:
    """Each limit with its numbers, its key and the tasks under it by queue."""
    result = run_horsies("check", f"{APPS / 'check_limits_app.py'}:app")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "ok: all validations passed\n"
        "  5 task(s) registered\n"
        "  3 limit(s):\n"
        "    reports: concurrency 1, one key; tasks report.build (queue default)\n"
        "    smtp: 5 starts per 0.5 s, per key from mail_domain();"
        " tasks mail.send (queue default)\n"
        "    tenant-api: concurrency 2, 10 starts per 1 s, per key of tenant_id;"
        " tasks crm.sync, crm.export (queue default)\n"
        "  scheduler: start-up validations passed\n"
    )


def test_check_accepts_limits_with_cluster_wide_caps() -> None:
    """Limits and cluster-wide caps hold together (the limited claim takes what the caps leave)."""
    result = run_horsies("check", f"{APPS / 'check_limits_capped_app.py'}:app")
    assert result.returncode == 0, result.stderr
    assert "tenant-api: concurrency 1, per key of tenant_id; tasks capped.sync" in result.stdout


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        ('Limit("l", concurrency=0)', "concurrency: a whole number >= 1"),
        ('Limit("l", concurrency=1, on=["tenant"])', "'tenant' is not a parameter of the task"),
        ('Limit("l", concurrency=1, on=["task_ctx"])', "is filled in by the worker"),
        ('Limit("l", rate=1, key=lambda: "x")', "called with one argument"),
        ('Limit("l", rate=1, key=pick)', "a plain function"),
    ],
)
def test_check_refuses_a_limit_that_cannot_work(tmp_path: Path, limit: str, expected: str) -> None:
    app_file = tmp_path / "limit_app.py"
    app_file.write_text(
        "from horsies import AppConfig, Horsies, Limit, PostgresConfig, TaskError, TaskResult\n"
        "from horsies.tasks.context import TaskContext\n"
        "app = Horsies(AppConfig(broker=PostgresConfig(\n"
        "    database_url='postgresql://u:p@localhost:1/db')))\n"
        "async def pick(arguments: object) -> str:\n"
        "    return 'x'\n"
        f"@app.task('limited', limit={limit})\n"
        "def limited(account: str, task_ctx: TaskContext | None = None)"
        " -> TaskResult[None, TaskError]:\n"
        "    return TaskResult(ok=None)\n"
    )
    result = run_horsies("check", f"{app_file}:app")
    assert_rendered_failure(result)
    assert "error[E102]: invalid limit option" in result.stderr
    assert expected in result.stderr
    assert "limit_app.py:7" in result.stderr


def test_check_says_which_validations_it_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without horsies-scheduler installed there is nothing to run its validations: say so."""
    monkeypatch.setattr(cli, "CHECKED_BY", {**cli.CHECKED_BY, "imaginary": "horsies-imaginary"})
    # The command configures the "horsies" logger of this process: put it back afterwards.
    logger = logging.getLogger("horsies")
    for attribute in ("handlers", "level", "propagate"):
        value = getattr(logger, attribute)
        monkeypatch.setattr(logger, attribute, list(value) if isinstance(value, list) else value)
    result = CliRunner().invoke(cli.main, ["check", OK_APP])
    assert result.exit_code == 0, result.output
    assert "skipped: imaginary validations (horsies-imaginary is not installed)" in result.output


def test_check_live_against_postgres(database_url: str) -> None:
    result = run_horsies("check", OK_APP, "--live", env={"HORSIES_TEST_APP_DB_URL": database_url})
    assert result.returncode == 0, result.stderr
    assert "ok: all validations passed" in result.stdout


# -- validation failures --------------------------------------------------------------------------


def test_check_reports_every_error_together() -> None:
    result = run_horsies("check", f"{APPS / 'check_bad_app.py'}:app")
    assert_rendered_failure(result)
    stderr = result.stderr
    assert "error[E200]: cannot specify queue_name in DEFAULT mode" in stderr
    assert "check_bad_tasks.py:9" in stderr
    assert '@app.task("check_bad.queued", queue_name="emails")' in stderr
    assert f"error[E208]: task module not found: {APPS / 'does_not_exist.py'}" in stderr
    assert stderr.rstrip().endswith("error: aborting due to 2 previous errors")


def test_check_live_with_unreachable_database() -> None:
    result = run_horsies("check", OK_APP, "--live")
    assert_rendered_failure(result)
    assert "error[E209]: broker connectivity check failed" in result.stderr
    assert "aborting due to 1 previous error" in result.stderr
    assert "secret" not in result.stderr


# -- discovery failures ---------------------------------------------------------------------------


def test_definition_error_in_the_app_module() -> None:
    result = run_horsies("check", f"{APPS / 'check_broken_app.py'}:app")
    assert_rendered_failure(result)
    assert "error[E100]: task function must declare an explicit return type" in result.stderr
    assert "check_broken_app.py:11" in result.stderr


def test_exception_in_the_app_module_points_at_the_line() -> None:
    result = run_horsies("check", f"{APPS / 'check_crash_app.py'}:app")
    assert_rendered_failure(result)
    assert "error[E208]: failed to import app module" in result.stderr
    assert "KeyError: 'DATABASE_URL'" in result.stderr
    assert "check_crash_app.py:6" in result.stderr
    assert "HORSIES_VERBOSE=1" in result.stderr


def test_a_syntax_error_in_the_app_module_points_at_the_users_line(tmp_path: Path) -> None:
    app_file = tmp_path / "broken_syntax_app.py"
    app_file.write_text("from horsies import Horsies\n\napp = Horsies(\n    config=)\n")
    result = run_horsies("check", f"{app_file}:app")
    assert_rendered_failure(result)
    assert "SyntaxError" in result.stderr
    assert "broken_syntax_app.py:4" in result.stderr, result.stderr
    assert "importlib" not in result.stderr


def test_verbose_shows_the_traceback_of_import_failures() -> None:
    result = run_horsies(
        "check", f"{APPS / 'check_crash_app.py'}:app", env={"HORSIES_VERBOSE": "1"}
    )
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["check"], "error[E206]: missing module argument"),
        (
            ["check", "no_such_pkg_xyz.mod:app"],
            "error[E208]: module not found: no_such_pkg_xyz.mod",
        ),
        (["check", "pkg.instance.py"], "error[E206]: ambiguous module locator: 'pkg.instance.py'"),
        (["check", "missing/app.py:app"], "error[E208]: cannot load app from 'missing/app.py:app'"),
        (["check", f"{APPS / 'check_ok_app.py'}:nope"], "has no attribute 'nope'"),
        (["check", f"{APPS / 'check_ok_app.py'}:os"], "expected a Horsies instance"),
        (["check", OK_APP, "--bogus"], "error[E206]: No such option '--bogus'"),
        (["check", OK_APP, "--loglevel", "LOUD"], "error[E206]: Invalid value for '--loglevel'"),
        (["frobnicate"], "error[E206]: No such command 'frobnicate'"),
    ],
)
def test_bad_input_is_a_rendered_error(args: Sequence[str], expected: str) -> None:
    result = run_horsies(*args)
    assert_rendered_failure(result)
    assert expected in result.stderr


# -- the command group ---------------------------------------------------------------------------


def test_help_lists_core_and_plugin_commands() -> None:
    result = run_horsies("--help")
    assert result.returncode == 0
    for name in ("check", "worker", "scheduler"):
        assert f"  {name}" in result.stdout


def test_no_arguments_prints_help() -> None:
    result = run_horsies()
    assert result.returncode == 0
    assert "Usage: horsies" in result.stdout


def test_console_script_and_version() -> None:
    script = Path(sys.executable).parent / "horsies"
    result = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0
    assert metadata.version("horsies-core") in result.stdout


def test_installed_worker_plugin_is_loaded() -> None:
    result = run_horsies("worker", "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage: horsies worker" in result.stdout


class FakeEntryPoint:
    def __init__(self, name: str, loaded: Any) -> None:
        self.name = name
        self.value = f"fake_module:{name}"
        self._loaded = loaded

    def load(self) -> Any:
        if isinstance(self._loaded, Exception):
            raise self._loaded
        return self._loaded


def use_entry_points(monkeypatch: pytest.MonkeyPatch, *entry_points: FakeEntryPoint) -> None:
    def fake(self: cli.HorsiesGroup) -> dict[str, Any]:
        return {ep.name: ep for ep in entry_points}

    monkeypatch.setattr(cli.HorsiesGroup, "_entry_points", fake)


def test_missing_worker_package_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    use_entry_points(monkeypatch)
    runner = CliRunner()
    listing = runner.invoke(cli.main, ["--help"])
    assert listing.exit_code == 0
    assert "worker     Run a worker that executes tasks. [not installed]" in listing.output
    result = runner.invoke(cli.main, ["worker", "myapp:app", "--processes", "2"])
    assert result.exit_code == 1
    assert "horsies-worker package, which is not installed" in result.output
    assert "pip install horsies-worker" in result.output


def test_plugin_commands_come_from_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    @click.command("hello")
    def hello() -> None:
        click.echo("hello from a plugin")

    use_entry_points(
        monkeypatch,
        FakeEntryPoint("hello", hello),
        FakeEntryPoint("broken", ImportError("missing dependency")),
    )
    runner = CliRunner()
    assert runner.invoke(cli.main, ["hello"]).output == "hello from a plugin\n"
    broken = runner.invoke(cli.main, ["broken"])
    assert broken.exit_code == 1
    assert "cannot load the `horsies broken` command" in broken.output
    assert "ImportError: missing dependency" in broken.output
