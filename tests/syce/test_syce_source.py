"""The data source on its own (no UI): index-friendly split queries and the finished-task cache."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import LiteralString

import psycopg
import pytest
from horsies.config import PostgresConfig
from syce import queries
from syce.format import count
from syce.models import TASK_STATUSES
from syce.source import SourceUnavailable, SyceSource, newest_once
from syce_seed import seed

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def src(database_url: str, clean_db: str) -> Iterator[SyceSource]:
    seed(clean_db)
    source = SyceSource(PostgresConfig(database_url=database_url))
    yield source
    source.close()


def test_syce_source_groups_and_tasks_per_status_set(src: SyceSource) -> None:
    try:
        groups = {g.key: g.counts for g in src.task_groups(TASK_STATUSES)}
        assert groups == {
            "": {"PENDING": 3},
            "w-alpha": {"CLAIMED": 1, "RUNNING": 2},
            "w-beta": {"COMPLETED": 2, "FAILED": 1},
        }
        assert src.task_groups([]) == ()
        assert [t.task_id for t in src.tasks_of("", TASK_STATUSES)] == [
            "t-pend-1",
            "t-pend-2",
            "t-pend-3",
        ]
        assert {t.task_id for t in src.tasks_of("w-alpha", ["RUNNING"])} == {"t-run-1", "t-run-2"}
        assert [t.task_id for t in src.tasks_of("w-beta", ["FAILED"])] == ["t-fail-1"]
        assert [t.task_id for t in src.tasks_of("w-beta", TASK_STATUSES, "explo")] == ["t-fail-1"]
        # LIKE wildcards in a search are literal
        assert src.task_groups(TASK_STATUSES, "%") == ()
        row = src.task("t-fail-1")
        assert row is not None
        assert row["status"] == "FAILED"
        assert src.task("missing") is None
        assert src.workflow("missing") is None
    finally:
        src.close()


def test_syce_source_counts_of_finished_tasks_stop_at_the_cap(
    src: SyceSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finished counts are bounded (a big table is never counted in full); live ones are exact."""
    assert src.dashboard().task_counts["COMPLETED"] == 2
    monkeypatch.setattr(queries, "STATUS_COUNT_CAP", 1)
    monkeypatch.setattr(queries, "GROUP_COUNT_CAP", 1)
    counts = src.dashboard().task_counts
    assert counts["COMPLETED"] == 1  # 2 rows, counting stopped at the cap
    assert counts["PENDING"] == 3
    groups = {g.worker_id: g.counts for g in src.task_groups(["COMPLETED", "PENDING"])}
    assert all(counts.get("COMPLETED", 0) <= 1 for counts in groups.values())
    assert groups[None]["PENDING"] == 3
    assert count(9_999, 10_000) == "9999"
    assert count(10_000, 10_000) == "10000+"
    assert count(7, 10_000, capped=True) == "7+"


def test_syce_finished_queries_use_the_finished_index(src: SyceSource, clean_db: str) -> None:
    """Every finished-task question is served by ix_horsies_tasks_finished (no sequential scan
    of the task table, whatever its size)."""
    params = {
        "cap": 10,
        "worker_id": "w-alpha",
        "statuses": ["COMPLETED"],
        "search": "",
        "pattern": "%",
        "prefix": "%",
    }
    statements: list[LiteralString] = [
        queries.FINISHED_STATUS_COUNTS,
        *queries.TASK_GROUPS_FINISHED.values(),
        *queries.TASK_GROUPS_FINISHED_SEARCH.values(),
        *queries.TASKS_OF_WORKER_FINISHED.values(),
        *queries.UNCLAIMED_TASKS_FINISHED.values(),
    ]
    with psycopg.connect(clean_db, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")  # a tiny table would be scanned otherwise
        for statement in statements:
            plan = "\n".join(
                row[0] for row in conn.execute("EXPLAIN " + statement, params).fetchall()
            )
            assert "ix_horsies_tasks_finished" in plan, plan
            assert "Seq Scan on horsies_tasks" not in plan, plan


def test_a_new_workers_hostname_is_read_through_the_index_on_a_big_table(clean_db: str) -> None:
    """The Tasks tab names each worker group by the hostname of one of its finished tasks: for a
    worker whose tasks are the newest of a big history, a bare ``LIMIT 1`` was planned as a scan
    of the whole table from its oldest rows."""
    with psycopg.connect(clean_db, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO horsies_tasks (id, task_name, queue_name, priority, status, sent_at,
                   completed_at, claimed, claimed_by_worker_id, worker_hostname, retry_count,
                   max_retries, created_at, updated_at)
               SELECT 'h-' || g, 'app.t', 'default', 100, 'COMPLETED', now(), now(), true,
                      CASE WHEN g > 40000 THEN 'w-new' ELSE 'w-old' END, 'host', 0, 0, now(), now()
               FROM generate_series(1, 40005) AS g"""
        )
        conn.execute("VACUUM ANALYZE horsies_tasks")
        for statement in (
            queries.TASK_GROUPS_FINISHED["COMPLETED"],
            queries.TASK_GROUPS_FINISHED_SEARCH["COMPLETED"],
        ):
            plan = "\n".join(
                row[0]
                for row in conn.execute(
                    "EXPLAIN " + statement,
                    {"cap": 10, "search": "", "pattern": "%", "prefix": "%"},
                ).fetchall()
            )
            assert "Seq Scan on horsies_tasks" not in plan, plan


def test_syce_source_closed_never_reconnects(src: SyceSource) -> None:
    """A read queued in a thread worker when the app exits must not open a new connection
    (it would leak past the app's shutdown)."""
    src.ping()
    src.close()
    with pytest.raises(SourceUnavailable, match="shutting down"):
        src.ping()
    assert src._conn is None  # pyright: ignore[reportPrivateUsage]


def test_a_task_seen_in_two_statuses_is_listed_once_with_the_later_one() -> None:
    """The Tasks tab reads a group with one statement per status: a task that went from RUNNING
    to CANCELLED between two of them comes back twice (the table refused the duplicate row)."""
    sent = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    rows = [
        {"id": "a", "status": "RUNNING", "sent_at": sent},
        {"id": "b", "status": "RUNNING", "sent_at": sent + timedelta(seconds=1)},
        {"id": "a", "status": "CANCELLED", "sent_at": sent},
    ]
    assert [(r["id"], r["status"]) for r in newest_once(rows)] == [
        ("b", "RUNNING"),
        ("a", "CANCELLED"),
    ]
