"""Attempt history on a real worker: every attempt of a task is kept (retried ones with the error
that made them retry, a crashed one with its reason, the run before an operator's retry), in
order, with where each ran; a task that ran once has one attempt, its row's."""

from __future__ import annotations

from pathlib import Path

import pytest
from apps.basic import create_app
from e2e_harness import WorkerProcess, producer_app, worker_fixture
from horsies.app import Horsies

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

app = producer_app(create_app)
worker = worker_fixture("basic", "--processes", "2")


def test_retries_keep_every_attempt_with_its_error(
    worker: WorkerProcess, app: Horsies, tmp_path: Path
) -> None:
    handle = app.tasks["e2e.flaky"].send(str(tmp_path / "flaky.log"), 3)
    assert handle.get(timeout_ms=30_000).is_ok()
    attempts = handle.attempts()
    assert [a.status for a in attempts] == ["RETRIED", "RETRIED", "COMPLETED"]
    assert [a.error_code for a in attempts] == ["FLAKY", "FLAKY", None]
    assert [a.error_message for a in attempts] == ["attempt 1", "attempt 2", None]
    assert all(a.pid is not None and a.hostname is not None for a in attempts)
    assert all(a.started_at is not None and a.ended_at is not None for a in attempts)
    starts = [a.started_at for a in attempts if a.started_at is not None]
    assert starts == sorted(starts)
    numbers = [a.attempt for a in attempts]
    assert numbers == sorted(set(numbers))


def test_a_crashed_attempt_is_kept_with_its_reason(
    app: Horsies, worker: WorkerProcess, tmp_path: Path
) -> None:
    handle = app.tasks["e2e.crash_once"].send(str(tmp_path / "crash.log"))
    assert handle.get(timeout_ms=30_000).unwrap() == "survived"
    first, second = handle.attempts()
    assert (first.status, first.error_code) == ("RETRIED", "WORKER_CRASHED")
    assert (second.status, second.error_code) == ("COMPLETED", None)


def test_an_operator_retry_keeps_the_run_before_it(app: Horsies, worker: WorkerProcess) -> None:
    handle = app.tasks["e2e.fail"].send("boom")
    assert handle.get(timeout_ms=30_000).is_err()
    assert [a.status for a in handle.attempts()] == ["FAILED"]
    assert handle.retry()
    assert handle.get(timeout_ms=30_000).is_err()
    attempts = handle.attempts()
    assert [a.status for a in attempts] == ["FAILED", "FAILED"]
    assert attempts[0].error_code == attempts[1].error_code == "UNHANDLED_EXCEPTION"
    assert attempts[0].attempt < attempts[1].attempt


async def test_the_async_twin_reads_the_same(app: Horsies, worker: WorkerProcess) -> None:
    handle = await app.tasks["e2e.add"].send_async(2, 3)
    assert (await handle.get_async(timeout_ms=30_000)).unwrap() == 5
    (only,) = await handle.attempts_async()
    assert only.status == "COMPLETED"
    assert only.hostname is not None
