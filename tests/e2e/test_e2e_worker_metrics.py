"""Prometheus metrics scraped over HTTP from a real ``horsies worker --metrics-port`` and checked
against the tasks it ran: started and finished counts by outcome (ok, failed, retried,
cancelled), run-time histograms, claim round trips, the queue gauges while tasks wait and the live
worker count; a missing extra and a port in use fail the start with a clear error.
"""

from __future__ import annotations

import re
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from apps.metrics import create_app
from e2e_harness import Db, StartWorker, WorkerProcess, error_of, producer_app, wait_until
from horsies.app import Horsies
from horsies.results import LibraryErrorCode
from process_harness import child_env, run_python
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

GET_MS = 30_000
GAUGE_WAIT_S = 45.0  # the gauges are read every 15 s
HOLD_S = 60.0  # the longest a held task runs when a test fails before releasing it

app = producer_app(create_app)


class Scrape:
    """One scrape of ``/metrics``, parsed: sample values by name and labels."""

    def __init__(self, port: int) -> None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            assert response.status == 200
            text = response.read().decode()
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float:
        """The value of one sample (it must exist)."""
        return self.samples[(name, frozenset(labels.items()))]


@pytest.fixture(scope="module")
def worker(start_worker: StartWorker, app: Horsies) -> WorkerProcess:
    del app  # the producer creates the schema before the worker starts
    return start_worker("metrics", "--processes", "2", "--metrics-port", "0")


@pytest.fixture(scope="module")
def port(worker: WorkerProcess) -> int:
    """The port the worker chose for ``--metrics-port 0`` (it logs it before it is ready)."""
    found = re.search(r"metrics_serving: http://127\.0\.0\.1:(\d+)/metrics", worker.output())
    assert found is not None, worker.output()
    return int(found.group(1))


@pytest.fixture
def release(tmp_path: Path) -> Iterator[Path]:
    """The file that ends this test's held tasks; created at teardown in any case."""
    path = tmp_path / "release"
    yield path
    path.touch()


def _delta(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    return after.value(name, **labels) - before.value(name, **labels)


def test_counts_and_run_times_match_the_tasks_run(app: Horsies, port: int, tmp_path: Path) -> None:
    before = Scrape(port)
    ok = [app.tasks["metrics.ok"].send(i) for i in range(5)]
    async_ok = [app.tasks["metrics.async_ok"].send(i) for i in range(2)]
    fail = [app.tasks["metrics.fail"].send() for _ in range(3)]
    flaky = app.tasks["metrics.flaky"].send(str(tmp_path / "flaky.runs"))
    assert [h.get(timeout_ms=GET_MS).unwrap() for h in ok] == list(range(5))
    assert [h.get(timeout_ms=GET_MS).unwrap() for h in async_ok] == [0, 1]
    for handle in fail:
        assert error_of(handle.get(timeout_ms=GET_MS)).error_code == "UNHANDLED_EXCEPTION"
    assert flaky.get(timeout_ms=GET_MS).unwrap() == 2
    # Each outcome is counted before it is written, so a result's get() sees it counted.
    after = Scrape(port)

    q = "default"
    expected = {  # task -> (started, {outcome: finished})
        "metrics.ok": (5, {"ok": 5, "failed": 0, "retried": 0, "cancelled": 0}),
        "metrics.async_ok": (2, {"ok": 2, "failed": 0, "retried": 0, "cancelled": 0}),
        "metrics.fail": (3, {"ok": 0, "failed": 3, "retried": 0, "cancelled": 0}),
        "metrics.flaky": (2, {"ok": 1, "failed": 0, "retried": 1, "cancelled": 0}),
    }
    for task, (started, finished) in expected.items():
        assert _delta(before, after, "horsies_tasks_started_total", queue=q, task=task) == started
        for outcome, count in finished.items():
            labels = {"queue": q, "task": task, "outcome": outcome}
            assert _delta(before, after, "horsies_tasks_finished_total", **labels) == count
        runs = _delta(before, after, "horsies_task_run_seconds_count", queue=q, task=task)
        assert runs == started
        total_s = _delta(before, after, "horsies_task_run_seconds_sum", queue=q, task=task)
        assert 0 < total_s < 30
    assert _delta(before, after, "horsies_claim_seconds_count") >= 1
    # Every served task has its series from the start, at zero until it runs.
    assert after.value("horsies_tasks_started_total", queue=q, task="metrics.hold") >= 0
    for operation in ("claim", "finish", "heartbeat", "snapshot", "gauges"):
        assert after.value("horsies_database_errors_total", operation=operation) == 0


def test_a_stopped_run_counts_as_cancelled(app: Horsies, port: int, db: Db, release: Path) -> None:
    before = Scrape(port)
    handle = app.tasks["metrics.hold"].send(str(release), HOLD_S)
    wait_until(lambda: db.task(handle.task_id)["status"] == "RUNNING", 30, "the task to run")
    assert handle.cancel()
    assert error_of(handle.get(timeout_ms=GET_MS)).error_code == LibraryErrorCode.TASK_CANCELLED
    after = Scrape(port)
    labels = {"queue": "default", "task": "metrics.hold"}
    assert _delta(before, after, "horsies_tasks_started_total", **labels) == 1
    assert _delta(before, after, "horsies_tasks_finished_total", outcome="cancelled", **labels) == 1
    assert _delta(before, after, "horsies_tasks_finished_total", outcome="failed", **labels) == 0


def test_queue_gauges_show_what_waits_and_workers_alive(
    app: Horsies, port: int, db: Db, release: Path
) -> None:
    holds = [app.tasks["metrics.hold"].send(str(release), HOLD_S) for _ in range(2)]
    wait_until(
        lambda: all(db.task(h.task_id)["status"] == "RUNNING" for h in holds),
        30,
        "both children to be busy",
    )
    waiting = [app.tasks["metrics.ok"].send(i) for i in range(3)]

    def backlog_seen() -> Scrape | None:
        scrape = Scrape(port)
        depth = scrape.value("horsies_queue_depth", queue="default")
        return scrape if depth == 3 else None

    seen: Scrape = wait_until(backlog_seen, GAUGE_WAIT_S, "a queue depth of 3")
    assert 0 < seen.value("horsies_queue_oldest_pending_seconds", queue="default") < 60
    assert seen.value("horsies_workers_alive") == 1
    release.touch()
    assert [h.get(timeout_ms=GET_MS).unwrap() for h in waiting] == [0, 1, 2]
    assert all(h.get(timeout_ms=GET_MS).unwrap() for h in holds)

    def drained() -> bool:
        scrape = Scrape(port)
        return (
            scrape.value("horsies_queue_depth", queue="default") == 0
            and scrape.value("horsies_queue_oldest_pending_seconds", queue="default") == 0
        )

    wait_until(drained, GAUGE_WAIT_S, "the queue gauges to drop to 0")


def test_a_port_in_use_fails_the_start(start_worker: StartWorker, app: Horsies) -> None:
    del app
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        worker = start_worker("metrics", "--metrics-port", str(busy), ready=False)
        assert worker.wait_exit(60) == 1
    assert f"cannot serve metrics on 127.0.0.1:{busy}" in worker.output()


def test_metrics_without_the_extra_say_what_to_install() -> None:
    hide = (
        "import sys; sys.modules['prometheus_client'] = None; from horsies.cli import main; "
        "main(['worker', 'tests.e2e.apps.metrics:app', '--metrics-port', '0'])"
    )
    result = run_python("-c", hide, env={**child_env({}), "NO_COLOR": "1"})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "error[E210]: --metrics-port needs the prometheus-client package" in result.stderr
    assert 'pip install "horsies-worker[metrics]"' in result.stderr
    assert "Traceback" not in result.stderr
