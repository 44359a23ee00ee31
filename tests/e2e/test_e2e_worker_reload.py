"""``horsies worker --reload``: a change to the app's file starts a new worker that runs the new
code; SIGINT to the supervisor stops every process it started. Without watchfiles, ``--reload`` is
a rendered error."""

from __future__ import annotations

import signal
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from e2e_harness import ENV_URL
from horsies.app import Horsies
from horsies.config import AppConfig, PostgresConfig
from horsies.results import TaskError, TaskResult
from process_harness import LoggedProcess, child_env, run_python, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

GET_MS = 30_000
READY = " ready: "

APP_SOURCE = textwrap.dedent(
    f"""
    import os
    import time
    from pathlib import Path

    from horsies.app import Horsies
    from horsies.config import AppConfig, PostgresConfig
    from horsies.results import TaskError, TaskResult

    app = Horsies(AppConfig(broker=PostgresConfig(database_url=os.environ["{ENV_URL}"])))


    @app.task("reload.first")
    def first() -> TaskResult[str, TaskError]:
        return TaskResult(ok="first")


    @app.task("reload.slow")
    def slow(folder: str) -> TaskResult[int, TaskError]:
        Path(folder, "started").touch()
        deadline = time.monotonic() + 30
        while not Path(folder, "release").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return TaskResult(ok=os.getpid())
    """
)

ADDED_TASK = textwrap.dedent(
    """

    @app.task("reload.second")
    def second() -> TaskResult[str, TaskError]:
        return TaskResult(ok="second, from the new code")
    """
)


@pytest.fixture(scope="module")
def producer(database_url: str) -> Iterator[Horsies]:
    """The sending side: knows both task names, whatever version the worker runs."""
    app = Horsies(AppConfig(broker=PostgresConfig(database_url=database_url)))

    @app.task("reload.first")
    def first() -> TaskResult[str, TaskError]:
        raise AssertionError("runs in the worker only")

    @app.task("reload.second")
    def second() -> TaskResult[str, TaskError]:
        raise AssertionError("runs in the worker only")

    @app.task("reload.slow")
    def slow(folder: str) -> TaskResult[int, TaskError]:
        raise AssertionError("runs in the worker only")

    app.get_broker().ensure_schema_initialized_sync()
    yield app
    app.get_broker().close()


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_changed_app_file_restarts_the_worker_with_the_new_code(
    database_url: str, producer: Horsies, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    app_file = project / "reload_app.py"
    app_file.write_text(APP_SOURCE)
    command = [
        sys.executable,
        "-m",
        "horsies",
        "worker",
        "reload_app.py:app",
        "--processes",
        "1",
        "--shutdown-timeout",
        "10",
        "--reload",
    ]
    env = child_env({ENV_URL: database_url, "NO_COLOR": "1"})
    supervisor = LoggedProcess(command, env, tmp_path / "reload.log", cwd=project)
    try:
        supervisor.wait_output(READY, timeout=60)
        first = producer.tasks["reload.first"].send().get(timeout_ms=GET_MS)
        assert first.unwrap() == "first"
        gates = tmp_path / "gates"
        gates.mkdir()
        in_flight = producer.tasks["reload.slow"].send(str(gates))
        wait_until((gates / "started").exists, 30, "the slow task to start")

        app_file.write_text(APP_SOURCE + ADDED_TASK)
        # The old worker stops as on Ctrl+C: it waits for the task it runs.
        supervisor.wait_output("Stop requested", timeout=30)
        (gates / "release").touch()
        assert in_flight.get(timeout_ms=GET_MS).is_ok()
        wait_until(
            lambda: supervisor.output().count(READY) >= 2 or not supervisor.alive,
            60,
            "the second worker to be ready",
        )
        output = supervisor.output()
        assert "reload_restart: reload_app.py changed" in output
        assert output.index(" stopped") < output.rindex(READY)  # the old one stopped first
        second = producer.tasks["reload.second"].send().get(timeout_ms=GET_MS)
        assert second.unwrap() == "second, from the new code"

        started = [p.pid for p in psutil.Process(supervisor.pid).children(recursive=True)]
        assert len(started) == 3, started  # the worker, its fork server and its one child
        supervisor.send_signal(signal.SIGINT)
        assert supervisor.wait_exit(60) == 0
        wait_until(lambda: not any(alive(pid) for pid in started), 30, "every process to exit")
        assert "reload_stopped" in supervisor.output()
    finally:
        supervisor.reap()


def test_the_worker_stops_when_its_supervisor_is_killed(
    database_url: str, producer: Horsies, tmp_path: Path
) -> None:
    """A supervisor that dies without stopping its worker (SIGKILL) leaves nothing running: the
    worker gets SIGTERM from the kernel and stops as on Ctrl+C."""
    del producer  # the schema exists before the worker starts
    project = tmp_path / "project"
    project.mkdir()
    (project / "reload_app.py").write_text(APP_SOURCE)
    command = [sys.executable, "-m", "horsies", "worker", "reload_app.py:app", "--processes", "1"]
    env = child_env({ENV_URL: database_url, "NO_COLOR": "1"})
    supervisor = LoggedProcess([*command, "--reload"], env, tmp_path / "reload.log", cwd=project)
    try:
        supervisor.wait_output(READY, timeout=60)
        started = [p.pid for p in psutil.Process(supervisor.pid).children(recursive=True)]
        assert len(started) == 3, started  # the worker, its fork server and its one child
        supervisor.send_signal(signal.SIGKILL)
        supervisor.wait_exit(10)
        wait_until(lambda: not any(alive(pid) for pid in started), 60, "the worker to stop")
        assert " stopped" in supervisor.output()  # a graceful stop, not a kill
    finally:
        supervisor.reap()


def test_reload_without_watchfiles_says_what_to_install() -> None:
    hide = (
        "import sys; sys.modules['watchfiles'] = None; from horsies.cli import main; "
        "main(['worker', 'tests.e2e.apps.basic:app', '--reload'])"
    )
    result = run_python("-c", hide, env={**child_env({}), "NO_COLOR": "1"})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "error[E210]: --reload needs the watchfiles package" in result.stderr
    assert 'pip install "horsies-worker[reload]"' in result.stderr
    assert "Traceback" not in result.stderr
