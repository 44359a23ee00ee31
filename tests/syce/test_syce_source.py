"""The data source on its own (no UI): index-friendly split queries and the finished-task cache."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from horsies.config import PostgresConfig
from syce import source as source_module
from syce.models import TASK_STATUSES
from syce.source import SourceUnavailable, SyceSource
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


def test_syce_source_caches_finished_answers_on_big_tables(
    src: SyceSource, clean_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(source_module, "BIG_TABLE_ROWS", 0)  # every table counts as big
    try:
        assert src.dashboard().task_counts["COMPLETED"] == 2
        with psycopg.connect(clean_db, autocommit=True) as conn:
            conn.execute(
                "UPDATE horsies_tasks SET status = 'COMPLETED', completed_at = now()"
                " WHERE id = 't-fail-1'"
            )
            conn.execute(
                "UPDATE horsies_tasks SET status = 'RUNNING', started_at = now()"
                " WHERE id = 't-claim-1'"
            )
        counts = src.dashboard().task_counts
        assert counts["COMPLETED"] == 2  # cached finished count
        assert counts["RUNNING"] == 3  # live counts are always exact
        src.invalidate()  # what `r` does
        assert src.dashboard().task_counts["COMPLETED"] == 3
    finally:
        src.close()


def test_syce_source_closed_never_reconnects(src: SyceSource) -> None:
    """A read queued in a thread worker when the app exits must not open a new connection
    (it would leak past the app's shutdown)."""
    src.ping()
    src.close()
    with pytest.raises(SourceUnavailable, match="shutting down"):
        src.ping()
    assert src._conn is None  # pyright: ignore[reportPrivateUsage]
