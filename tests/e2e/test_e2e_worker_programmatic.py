"""``run_worker(app)`` (importable from ``horsies``) called from a script; the imports done by the
worker run with sends suppressed."""

from __future__ import annotations

import signal
import sys

import pytest
from e2e_harness import ROOT, Db, StartWorker, wait_until
from horsies.broker import PostgresBroker
from horsies.codec import task_result_from_json
from horsies.config import PostgresConfig

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def test_run_worker_from_a_script(start_worker: StartWorker, database_url: str, db: Db) -> None:
    broker = PostgresBroker(PostgresConfig(database_url=database_url))
    broker.ensure_schema_initialized_sync()
    broker.close()
    script = str(ROOT / "tests" / "e2e" / "apps" / "script_worker.py")
    worker = start_worker("script_worker", command=[sys.executable, script])

    def completed() -> list[dict[str, object]]:
        return db.query(
            "SELECT * FROM horsies_tasks WHERE task_name = 'script.add' AND status = 'COMPLETED'"
        )

    rows = wait_until(completed, 30, "the script's task to complete")
    assert task_result_from_json(str(rows[0]["result"])).unwrap() == 42
    # The module-level send ran in the parent only: the two children imported the script
    # with sends suppressed.
    assert len(db.query("SELECT id FROM horsies_tasks WHERE task_name = 'script.add'")) == 1

    worker.send_signal(signal.SIGTERM)
    assert worker.wait_exit(30) == 0
