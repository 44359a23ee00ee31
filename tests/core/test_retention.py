"""Retention against a real PostgreSQL: rows past their period are removed and nothing else
(pending and running tasks, recent results, workflows whose tree is not done), in batches, with
per-queue and per-task periods; a dry run removes nothing; a prune that finds another pruning
stops at once; ``horsies db prune`` prints what it removed."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from horsies import Horsies
from horsies.broker.locks import PRUNE_LOCK_KEY
from horsies.broker.programs import Program, Run
from horsies.broker.retention import PruneReport, prune_program
from horsies.config import AppConfig, CustomQueueConfig, PostgresConfig, QueueMode, RetentionConfig
from horsies.results import TaskError, TaskResult
from horsies.workflows.nodes import TaskNode
from process_harness import ROOT

pytestmark = pytest.mark.timeout(60)

HOUR = 3600.0


def make_app(database_url: str, **retention: Any) -> Horsies:
    app = Horsies(
        AppConfig(
            broker=PostgresConfig(database_url=database_url),
            queue_mode=QueueMode.CUSTOM,
            custom_queues=[CustomQueueConfig(name="main"), CustomQueueConfig(name="audit")],
            retention=RetentionConfig(**retention),
        )
    )

    @app.task("rt.job", queue_name="main")
    def job(n: int) -> TaskResult[int, TaskError]:
        return TaskResult(ok=n)

    @app.task("rt.audit", queue_name="audit")
    def audit(n: int) -> TaskResult[int, TaskError]:
        return TaskResult(ok=n)

    @app.task("rt.precious", queue_name="main")
    def precious(n: int) -> TaskResult[int, TaskError]:
        return TaskResult(ok=n)

    return app


@pytest.fixture(scope="module")
def app(database_url: str) -> Iterator[Horsies]:
    producer = make_app(database_url)
    producer.get_broker().ensure_schema_initialized_sync()
    yield producer
    producer.get_broker().close()


@pytest.fixture
def db(app: Horsies, clean_db: str) -> str:
    return clean_db


def age(conninfo: str, ids: list[str], status: str, hours: float) -> None:
    """End the tasks ``ids`` with ``status``, ``hours`` ago."""
    stamp = {"COMPLETED": "completed_at", "FAILED": "failed_at"}.get(status)
    extra = f", {stamp} = now() - %(h)s * interval '1 hour'" if stamp else ""
    query = (
        f"UPDATE horsies_tasks SET status = %(s)s, updated_at = now() - %(h)s * interval '1 hour'"
        f"{extra} WHERE id = ANY(%(ids)s)"
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(query, {"s": status, "h": hours, "ids": ids})  # pyright: ignore[reportArgumentType]


def statuses(conninfo: str) -> dict[str, str]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return dict(conn.execute("SELECT id, status FROM horsies_tasks").fetchall())


def ids(handles: list[Any]) -> list[str]:
    return [h.task_id for h in handles]


def test_only_ended_tasks_past_their_period_go(app: Horsies, db: str) -> None:
    job = app.tasks["rt.job"]
    old_done = ids(job.send_many([{"n": i} for i in range(5)]))
    old_failed = ids(job.send_many([{"n": i} for i in range(3)]))
    old_cancelled = ids(job.send_many([{"n": 0}]))
    recent = ids(job.send_many([{"n": 0}, {"n": 1}]))
    pending = ids(job.send_many([{"n": 0}]))
    age(db, old_done, "COMPLETED", 24 * 31)
    age(db, old_failed, "FAILED", 24 * 40)
    age(db, old_cancelled, "CANCELLED", 24 * 31)
    age(db, recent, "COMPLETED", 24 * 29)
    with psycopg.connect(db, autocommit=True) as conn:  # old, but still pending
        conn.execute(
            "UPDATE horsies_tasks SET updated_at = now() - interval '90 days' WHERE id = %s",
            (pending[0],),
        )
    with psycopg.connect(db, autocommit=True) as conn:  # earlier attempts of two of them
        conn.execute(
            "INSERT INTO horsies_task_attempts (task_id, attempt, ended_at, status)"
            " VALUES (%s, 1, now(), 'RETRIED'), (%s, 1, now(), 'RETRIED')",
            (old_done[0], recent[0]),
        )
    report = app.get_broker().prune(app.config.retention)
    assert report.tasks == 9
    assert report.finished
    assert not report.busy
    assert set(statuses(db)) == {*recent, *pending}
    with psycopg.connect(db, autocommit=True) as conn:
        kept = conn.execute("SELECT task_id FROM horsies_task_attempts").fetchall()
    assert kept == [(recent[0],)]  # attempts go with their task, and only then


def test_batches_dry_runs_and_per_queue_and_per_task_periods(database_url: str, db: str) -> None:
    app = make_app(
        database_url,
        finished_tasks_s=48 * HOUR,
        queues={"audit": None},  # kept forever
        tasks={"rt.precious": 365 * 24 * HOUR},
        batch_size=10,
    )
    try:
        jobs = ids(app.tasks["rt.job"].send_many([{"n": i} for i in range(25)]))
        audits = ids(app.tasks["rt.audit"].send_many([{"n": i} for i in range(4)]))
        precious = ids(app.tasks["rt.precious"].send_many([{"n": i} for i in range(3)]))
        for group in (jobs, audits, precious):
            age(db, group, "COMPLETED", 72)
        broker = app.get_broker()
        dry = broker.prune(app.config.retention, dry_run=True)
        assert dry.tasks == 25
        assert len(statuses(db)) == 32  # a dry run removes nothing
        report = broker.prune(app.config.retention)
        assert report.by_rule == {
            "tasks task=rt.precious": 0,
            "tasks": 25,
            "workflows": 0,
            "heartbeats": 0,
            "worker_states": 0,
            "limit_starts": 0,
        }
        assert set(statuses(db)) == {*audits, *precious}
    finally:
        app.get_broker().close()


def test_a_prune_stops_while_another_holds_the_lock(app: Horsies, db: str) -> None:
    done = ids(app.tasks["rt.job"].send_many([{"n": 1}]))
    age(db, done, "COMPLETED", 24 * 60)
    with psycopg.connect(db) as other, other.transaction():
        other.execute("SELECT pg_advisory_xact_lock(%s)", (PRUNE_LOCK_KEY,))
        report = app.get_broker().prune(app.config.retention)
    assert report.busy
    assert report.total == 0
    assert set(statuses(db)) == set(done)


def test_workflows_go_with_their_whole_tree_once_every_task_ended(app: Horsies, db: str) -> None:
    job = app.tasks["rt.job"]
    spec = app.workflow("rt.pair", [TaskNode(fn=job, args=(1,)), TaskNode(fn=job, args=(2,))])
    ended = spec.start()
    running = spec.start()
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "UPDATE horsies_tasks SET status = 'COMPLETED',"
            " completed_at = now() - interval '40 days', updated_at = now() - interval '40 days'"
            " WHERE workflow_id = ANY(%s)",
            ([ended.workflow_id, running.workflow_id],),
        )
        conn.execute(
            "UPDATE horsies_workflows SET status = 'COMPLETED', completed_at = now(),"
            " updated_at = now() - interval '40 days' WHERE id = %s",
            (ended.workflow_id,),
        )
        # The other one is still RUNNING, however old its rows are.
        conn.execute(
            "UPDATE horsies_workflows SET updated_at = now() - interval '40 days' WHERE id = %s",
            (running.workflow_id,),
        )
    report = app.get_broker().prune(app.config.retention)
    assert report.workflows == 1
    assert report.tasks == 0  # node tasks never go on their own
    with psycopg.connect(db, autocommit=True) as conn:
        left = conn.execute("SELECT id FROM horsies_workflows").fetchall()
        nodes = conn.execute("SELECT DISTINCT workflow_id FROM horsies_workflow_tasks").fetchall()
        tasks = conn.execute("SELECT DISTINCT workflow_id FROM horsies_tasks").fetchall()
    assert left == nodes == tasks == [(running.workflow_id,)]


def test_heartbeats_and_snapshots_past_their_period_go(app: Horsies, db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO horsies_heartbeats (task_id, sender_id, role, sent_at, hostname, pid)"
            " SELECT 't' || i, 'w', 'runner', now() - (i + 0.5) * interval '1 hour', 'h', 1"
            " FROM generate_series(0, 47) AS i"
        )
    report = app.get_broker().prune(app.config.retention)
    assert report.heartbeats == 24  # more than 24 hours old: 24.5 .. 47.5
    with psycopg.connect(db, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM horsies_heartbeats").fetchone()
    assert row == (24,)


def test_db_prune_prints_what_it_removed(app: Horsies, db: str, tmp_path: Path) -> None:
    done = ids(app.tasks["rt.job"].send_many([{"n": i} for i in range(3)]))
    age(db, done, "COMPLETED", 24 * 31)
    module = tmp_path / "prune_app.py"
    module.write_text(
        "from horsies import Horsies\n"
        "from horsies.config import AppConfig, PostgresConfig\n"
        f"url = {app.config.broker.database_url!r}\n"
        "app = Horsies(AppConfig(broker=PostgresConfig(database_url=url)))\n"
    )
    command = [sys.executable, "-m", "horsies", "db", "prune", f"{module}:app"]
    dry = subprocess.run(
        [*command, "--dry-run"], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )
    assert dry.returncode == 0, dry.stderr
    assert "would remove          3 tasks" in dry.stdout
    assert len(statuses(db)) == 3
    real = subprocess.run(
        command, capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )
    assert real.returncode == 0, real.stderr
    assert "removed 3 row(s) in all" in real.stdout
    assert statuses(db) == {}


@pytest.mark.parametrize("driver", ["sync", "async"])
async def test_a_prune_rests_between_batches_as_long_as_each_took(
    database_url: str, db: str, driver: str
) -> None:
    """Working through a backlog, the prune pauses after each full batch for as long as the batch
    took, so the queue beside it keeps at least half of the time; no pause after the last batch.
    Both drivers pause (the sync one sleeps, the async one awaits)."""
    app = make_app(database_url, batch_size=10)
    try:
        jobs = ids(app.tasks["rt.job"].send_many([{"n": i} for i in range(25)]))
        age(db, jobs, "COMPLETED", 24 * 60)
        effects: list[tuple[str, float]] = []

        def recorded(program: Program[PruneReport]) -> Program[PruneReport]:
            value: Any = None
            while True:
                try:
                    effect = program.send(value)
                except StopIteration as stop:
                    return stop.value
                began = time.monotonic()
                value = yield effect
                kind = effect.action if isinstance(effect, Run) else type(effect).__name__
                effects.append((kind, time.monotonic() - began))

        broker = app.get_broker()
        program = recorded(prune_program(app.config.retention))
        if driver == "sync":
            report = broker.run_program(program)
        else:
            report = await broker.run_program_async(program)
        assert report.tasks == 25
        # The tasks' rule: 10, 10, then 5 rows (done, no pause); then the next rule's batch.
        kinds = [kind for kind, _ in effects]
        assert kinds[:6] == ["prune", "Wait", "prune", "Wait", "prune", "prune"]
        for (_, worked), (_, rested) in ((effects[0], effects[1]), (effects[2], effects[3])):
            assert rested >= worked * 0.9
    finally:
        app.get_broker().close()


def test_a_prune_stopped_by_another_pruner_reports_what_it_removed(
    database_url: str, db: str
) -> None:
    """A prune that finds the lock taken between two batches stops, and its report still counts
    the rows its earlier batches removed (they are gone: a report of none would be wrong)."""
    app = make_app(database_url, batch_size=10)
    try:
        jobs = ids(app.tasks["rt.job"].send_many([{"n": i} for i in range(25)]))
        age(db, jobs, "COMPLETED", 24 * 60)
        with psycopg.connect(db) as other:

            def taken_after_first_batch(program: Program[PruneReport]) -> Program[PruneReport]:
                value: Any = None
                batches = 0
                while True:
                    try:
                        effect = program.send(value)
                    except StopIteration as stop:
                        return stop.value
                    value = yield effect
                    if isinstance(effect, Run) and effect.action == "prune":
                        batches += 1
                        if batches == 1:  # another process takes the lock before the next batch
                            other.execute("SELECT pg_advisory_xact_lock(%s)", (PRUNE_LOCK_KEY,))

            broker = app.get_broker()
            report = broker.run_program(
                taken_after_first_batch(prune_program(app.config.retention))
            )
            other.rollback()
        assert report.busy
        assert not report.finished
        assert report.tasks == 10
        assert report.by_rule == {"tasks": 10}
        assert len(statuses(db)) == 15
    finally:
        app.get_broker().close()
