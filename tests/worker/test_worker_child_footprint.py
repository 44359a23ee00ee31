"""What a worker child costs: pages shared with the fork server, no database driver until a task
needs one, no helper process but the fork server.

Children are forked by a fork server that imported the app once (no ``multiprocessing`` start
method, so no resource-tracker process), and share its pages. Importing an app loads neither
psycopg nor asyncio: the database URL's libpq check waits for the broker in a child, and a workflow
built at import time creates its broker when it is first needed. A child that sends a task loads
the driver then.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import textwrap
from collections.abc import AsyncIterator

import psutil
import psycopg
import pytest
from async_wait import wait_until
from claimed_rows import claimed
from horsies.app import Horsies
from horsies.broker.claims import ClaimedTask
from horsies.codec import task_result_from_json
from horsies.config import AppConfig, PostgresConfig
from horsies.errors import ConfigurationError, ErrorCode
from horsies.results import TaskError, TaskResult
from horsies.workflows.nodes import TaskNode
from horsies.workflows.status import OnError
from horsies_worker.children import Assignment, ChildPool, ChildProcess
from horsies_worker.spawn import ChildInit
from process_harness import private_and_resident_kib, run_python

HERE = os.path.dirname(os.path.abspath(__file__))
APP_FILE = os.path.join(HERE, "worker_footprint_app.py")
THREADED_APP_FILE = os.path.join(HERE, "worker_threaded_app.py")
DRIVER_MODULES = ["psycopg", "asyncio"]


class Recorder:
    def __init__(self) -> None:
        self.results: dict[str, tuple[str, bool]] = {}
        self.exits: list[tuple[int, int | None]] = []
        self.ready: list[int] = []

    def on_result(self, child: ChildProcess, a: Assignment, result_json: str, ok: bool) -> None:
        self.results[a.task.id] = (result_json, ok)

    def on_exit(self, child: ChildProcess, assignments: object, exitcode: int | None) -> None:
        self.exits.append((child.pid, exitcode))

    def on_ready(self, child: ChildProcess) -> None:
        self.ready.append(child.pid)


def own_children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


@pytest.fixture
async def pool() -> AsyncIterator[tuple[ChildPool, Recorder, set[int]]]:
    """Two children of the footprint app; yields the pool, its recorder and the processes this
    test process gained while starting them."""
    rec = Recorder()
    init = ChildInit(locator=f"{APP_FILE}:app", loglevel="WARNING")
    before = own_children()
    children = ChildPool(
        2, init, on_result=rec.on_result, on_exit=rec.on_exit, on_ready=rec.on_ready
    )
    await asyncio.wait_for(children.start(), 60)
    try:
        yield children, rec, own_children() - before
    finally:
        await children.close(timeout=5)


async def run_in(child: ChildProcess, rec: Recorder, task: ClaimedTask) -> object:
    assignment = Assignment(task=task)
    child.reserve(assignment)
    assert child.send_tasks([assignment])
    await wait_until(lambda: task.id in rec.results)
    result_json, ok = rec.results[task.id]
    assert ok, result_json
    return task_result_from_json(result_json).unwrap()


@pytest.mark.timeout(90)
async def test_children_are_the_only_new_processes_and_load_no_driver(
    pool: tuple[ChildPool, Recorder, set[int]],
) -> None:
    children, rec, new_processes = pool
    # The fork server and the two children it forked, nothing else: no resource tracker.
    pids = {c.pid for c in children.children}
    (server,) = {psutil.Process(pid).ppid() for pid in pids}
    assert psutil.Process(server).ppid() == os.getpid()
    assert new_processes == {server, *pids}
    for proc in map(psutil.Process, new_processes):
        assert "resource_tracker" not in " ".join(proc.cmdline())
    args = json.dumps([DRIVER_MODULES])
    for index, child in enumerate(children.children):
        loaded = await run_in(child, rec, claimed(f"m{index}", "footprint.loaded", args))
        assert loaded == dict.fromkeys(DRIVER_MODULES, False)


def ended(pid: int) -> bool:
    """The process has exited (orphaned by its dead parent, it may be a zombie until init reaps
    it)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="Linux 4.14+ only")
@pytest.mark.timeout(90)
async def test_children_share_the_fork_servers_pages(
    pool: tuple[ChildPool, Recorder, set[int]],
) -> None:
    # A new interpreter that imported the app holds ~60 % of its pages alone (the interpreter's
    # heap, pydantic, horsies, the app); a child forked from the server that imported them, after
    # a task, well under a third.
    children, rec, _ = pool
    for index, child in enumerate(children.children):
        await run_in(child, rec, claimed(f"p{index}", "footprint.noop"))
        private, resident = private_and_resident_kib(child.pid)
        assert private < resident / 3, (child.pid, private, resident)


@pytest.mark.timeout(90)
async def test_the_app_is_imported_once_by_the_fork_server(
    pool: tuple[ChildPool, Recorder, set[int]],
) -> None:
    children, rec, _ = pool
    for index, child in enumerate(children.children):
        imported_in = await run_in(child, rec, claimed(f"i{index}", "footprint.imported_in"))
        assert imported_in == psutil.Process(child.pid).ppid() != child.pid


@pytest.mark.timeout(90)
async def test_children_import_an_app_whose_import_starts_threads_themselves(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A process with threads must not fork: the fork server that imported the app gives way to
    # one whose children import it after the fork.
    rec = Recorder()
    init = ChildInit(locator=f"{THREADED_APP_FILE}:app", loglevel="WARNING")
    children = ChildPool(
        2, init, on_result=rec.on_result, on_exit=rec.on_exit, on_ready=rec.on_ready
    )
    await asyncio.wait_for(children.start(), 60)
    try:
        for index, child in enumerate(children.children):
            task = claimed(f"t{index}", "threaded.imported_in")
            assert await run_in(child, rec, task) == child.pid
    finally:
        await children.close(timeout=5)
    assert "fork_server_threaded" in caplog.text


@pytest.mark.timeout(90)
async def test_a_dead_fork_server_is_replaced_with_its_children(
    pool: tuple[ChildPool, Recorder, set[int]],
) -> None:
    children, rec, _ = pool
    pids = [c.pid for c in children.children]
    (server,) = {psutil.Process(pid).ppid() for pid in pids}
    os.kill(server, signal.SIGKILL)
    # Its children die with it (parent-death signal); each is seen and replaced.
    await wait_until(lambda: {pid for pid, _ in rec.exits} == set(pids))
    await wait_until(lambda: len(rec.ready) == 2, timeout=60)
    assert all(map(ended, pids))
    replacements = {c.pid for c in children.children}
    (new_server,) = {psutil.Process(pid).ppid() for pid in replacements}
    assert new_server != server
    for index, child in enumerate(children.children):
        assert await run_in(child, rec, claimed(f"r{index}", "footprint.noop")) is None


@pytest.mark.timeout(90)
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
async def test_a_signalled_child_is_seen_through_its_sentinel_and_replaced(
    pool: tuple[ChildPool, Recorder, set[int]], signum: int
) -> None:
    children, rec, _ = pool
    victim = children.children[0].pid
    os.kill(victim, signum)
    await wait_until(lambda: rec.exits == [(victim, -signum)])
    await wait_until(lambda: len(rec.ready) == 1)
    assert victim not in {c.pid for c in children.children}
    assert not psutil.pid_exists(victim)  # reaped, not left a zombie


@pytest.mark.timeout(90)
async def test_a_child_that_sends_loads_the_driver_then(
    database_url: str, clean_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Children inherit the environment: the app they import connects to the test database.
    monkeypatch.setenv("HORSIES_FOOTPRINT_DATABASE_URL", database_url)
    rec = Recorder()
    init = ChildInit(locator=f"{APP_FILE}:app", loglevel="WARNING")
    children = ChildPool(
        1, init, on_result=rec.on_result, on_exit=rec.on_exit, on_ready=rec.on_ready
    )
    await asyncio.wait_for(children.start(), 60)
    try:
        report = await run_in(children.children[0], rec, claimed("s", "footprint.send_noop"))
    finally:
        await children.close(timeout=5)
    assert isinstance(report, dict)
    assert report["before"] is False
    assert report["after"] is True
    with psycopg.connect(clean_db) as conn:
        row = conn.execute(
            "SELECT task_name FROM horsies_tasks WHERE id = %s", (report["task_id"],)
        ).fetchone()
    assert row == ("footprint.noop",)


def test_building_a_workflow_does_not_create_the_broker() -> None:
    app = Horsies(AppConfig(broker=PostgresConfig(database_url="postgresql://u:p@localhost:1/x")))

    @app.task("lazy.noop")
    def noop() -> TaskResult[None, TaskError]:
        return TaskResult(ok=None)

    spec = app.workflow("lazy_broker", [TaskNode(fn=noop)])
    paused = spec.with_on_error(OnError.PAUSE)
    assert app._broker is None  # pyright: ignore[reportPrivateUsage]
    broker = app.get_broker()
    try:
        assert spec.broker is broker
        assert paused.broker is broker
    finally:
        broker.close()


def _run_as_child(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HORSIES_CHILD_PROCESS": "1"}
    return run_python("-c", textwrap.dedent(code), env=env)


def test_in_a_child_the_url_is_checked_by_libpq_when_the_broker_is_created() -> None:
    # A URL libpq cannot parse: refused when the config is built everywhere but in worker
    # children, where the check waits for the broker (the worker's main process checked it).
    url = "postgresql+psycopg://alice:p%zz-secret@localhost:5432/app"
    with pytest.raises(ConfigurationError):
        PostgresConfig(database_url=url)
    done = _run_as_child(
        f"""
        import sys
        from horsies.app import Horsies
        from horsies.config import AppConfig, PostgresConfig
        from horsies.errors import ConfigurationError

        app = Horsies(AppConfig(broker=PostgresConfig(database_url={url!r})))
        print("psycopg loaded:", "psycopg" in sys.modules)
        try:
            app.get_broker()
        except ConfigurationError as exc:
            print("refused:", exc.code.value, "secret" in str(exc))
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "psycopg loaded: False",
        f"refused: {ErrorCode.BROKER_INVALID_URL.value} False",
    ]
