"""Limits in Syce: the Limits tab (every limit, what waits on it, its busiest keys), a task waiting
on a limit told apart from one waiting for a free worker (task list and detail), the limits a
worker enforces, and the plans of the limit questions (live tasks only, through indexes)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, LiteralString, cast

import psycopg
import pytest
from db_rows import sql
from horsies.config import PostgresConfig
from syce import queries
from syce.app import SyceApp
from syce.models import LimitsData, TasksData, TaskWait, WorkersData
from syce.screens.modals import TaskDetailScreen
from syce.screens.tasks import TasksPane
from syce.source import SyceSource
from syce_seed import seed, seed_limits, wait_for
from textual.widgets import DataTable, Static

pytestmark = pytest.mark.timeout(90)

SIZE = (150, 48)


@pytest.fixture
def src(database_url: str, clean_db: str) -> Iterator[SyceSource]:
    seed(clean_db)
    seed_limits(clean_db)
    source = SyceSource(PostgresConfig(database_url=database_url))
    yield source
    source.close()


@pytest.fixture
def syce_app(database_url: str, clean_db: str) -> SyceApp:
    seed(clean_db)
    seed_limits(clean_db)
    return SyceApp(PostgresConfig(database_url=database_url), tick_rate=4.0)


# -- the source ----------------------------------------------------------------------------------


def test_every_limit_with_what_waits_on_it(src: SyceSource) -> None:
    data = src.limits(None)
    limits = {limit.name: limit for limit in data.limits}
    assert list(limits) == ["ghost", "reports", "tenant-api"]
    assert data.selected == "ghost"  # the first, when none is chosen
    tenant = limits["tenant-api"]
    assert tenant.numbers == "2 at once · 10 per 1m"
    assert (tenant.waiting, tenant.held, tenant.in_flight) == (4, 3, 2)
    assert (tenant.starts_in_window, tenant.keys_waiting, tenant.workers) == (2, 2, 1)
    reports = limits["reports"]
    assert (reports.numbers, reports.waiting, reports.held, reports.workers) == (
        "1 at once",
        1,
        0,
        1,
    )
    ghost = limits["ghost"]
    assert (ghost.registered, ghost.numbers, ghost.waiting, ghost.held) == (False, "-", 2, 2)
    assert ghost.workers == 0

    keys = src.limits("tenant-api").keys
    assert [(k.key, k.waiting, k.in_flight, k.starts_in_window, k.held) for k in keys] == [
        ("acme", 3, 2, 2, True),
        ("globex", 1, 0, 0, False),
    ]
    assert [limit.name for limit in src.limits(None, "REP").limits] == ["reports"]
    assert src.limits("tenant-api", "nothing like it") == LimitsData((), None, ())


def test_a_task_held_by_its_limit_is_told_from_one_waiting_for_a_worker(src: SyceSource) -> None:
    pending = {t.task_id: t for t in src.tasks_of("", ["PENDING"])}
    short = {task_id: t.wait.short() if t.wait else None for task_id, t in pending.items()}
    assert short["t-lim-acme-1"] == "waiting: limit tenant-api key acme"
    assert short["t-lim-globex"] == "limit tenant-api key globex"
    assert short["t-lim-report"] == "limit reports"
    assert short["t-lim-ghost-1"] == "waiting: limit ghost key x"
    assert short["t-pend-1"] == ""

    def describe(task_id: str) -> str:
        detail = src.task_detail(task_id)
        assert detail is not None
        assert detail.row["id"] == task_id
        assert detail.wait is not None
        return detail.wait.describe()

    assert describe("t-lim-acme-2") == (
        "waiting: limit tenant-api key acme (2/2 running, 2/10 starts in 1m)"
    )
    assert describe("t-lim-globex") == (
        "waiting for a free worker (limit tenant-api key globex has room: 0/2 running, "
        "0/10 starts in 1m)"
    )
    assert describe("t-lim-ghost-2").startswith(
        "waiting: limit ghost key x; no worker has registered this limit"
    )
    assert describe("t-pend-1") == "waiting for a free worker"
    running = src.task_detail("t-lim-run-1")
    assert running is not None
    assert running.wait is None
    assert src.task_detail("missing") is None


def test_a_task_not_due_or_expired_says_so(src: SyceSource, clean_db: str) -> None:
    sql(
        clean_db,
        "UPDATE horsies_tasks SET sent_at = now() + interval '1 hour' WHERE id = 't-lim-acme-1'",
    )
    sql(
        clean_db,
        "UPDATE horsies_tasks SET good_until = now() - interval '1 minute' WHERE id = 't-pend-2'",
    )
    pending = {t.task_id: t.wait for t in src.tasks_of("", ["PENDING"])}
    assert pending["t-lim-acme-1"] is not None
    assert pending["t-lim-acme-1"].short() == "scheduled"
    assert pending["t-lim-acme-1"].describe().startswith("scheduled: due at ")
    assert pending["t-pend-2"] is not None
    assert pending["t-pend-2"].describe() == "expired: past its good_until, it will never start"


def test_wait_sentences() -> None:
    """Each reason in words, without a database (numbers as the detail shows them)."""
    base = TaskWait(
        not_due=False, sent_at=None, retry_later=False, next_retry_at=None, expired=False,
        limit_name="smtp", limit_key="", registered=True, concurrency=None, rate=5, per_ms=250,
        in_flight=0, starts_in_window=5, held=True,
    )  # fmt: skip
    assert base.describe() == "waiting: limit smtp (5/5 starts in 0.25s)"
    later = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)
    retry = TaskWait(**{**_fields(base), "retry_later": True, "next_retry_at": later})
    assert retry.short() == "retry later"
    assert retry.describe() == "retry waits until 2026-12-07 09:30:00 UTC"
    plain = TaskWait(**{**_fields(base), "limit_name": None, "limit_key": None, "held": False})
    assert (plain.short(), plain.describe()) == ("", "waiting for a free worker")


def _fields(wait: TaskWait) -> dict[str, Any]:
    return {name: getattr(wait, name) for name in TaskWait.__slots__}


def test_workers_say_which_limits_they_enforce(src: SyceSource) -> None:
    workers = {w.worker_id: w for w in src.live_workers()}
    assert workers["w-alpha"].limits == {"default": ("tenant-api", "reports")}
    assert workers["w-alpha"].enforces("reports")
    assert workers["w-beta"].limits is None  # its snapshots predate the column
    assert not workers["w-beta"].enforces("reports")


# -- plans ---------------------------------------------------------------------------------------


def _plan(conninfo: str, statement: LiteralString, params: dict[str, Any]) -> str:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")  # a tiny table would be scanned otherwise
        rows = conn.execute("EXPLAIN " + statement, params).fetchall()
    return "\n".join(str(row[0]) for row in rows)


def test_limit_questions_read_live_limited_tasks_through_their_indexes(
    src: SyceSource, clean_db: str
) -> None:
    questions: list[tuple[LiteralString, dict[str, Any]]] = [
        (queries.LIMITS, {}),
        (queries.LIMIT_KEYS, {"name": "tenant-api"}),
    ]
    for statement, params in questions:
        plan = _plan(clean_db, statement, params)
        assert "Seq Scan on horsies_tasks" not in plan, plan
        assert "ix_horsies_tasks_limit_pending" in plan, plan
        assert "ix_horsies_tasks_limit_in_flight" in plan, plan
    plan = _plan(clean_db, queries.TASK_WAITS, {"ids": ["t-lim-acme-1"]})
    assert "Seq Scan on horsies_tasks" not in plan, plan
    assert "ix_horsies_tasks_limit_in_flight" in plan, plan


def test_pending_questions_keep_an_index_beside_limited_tasks(
    src: SyceSource, clean_db: str
) -> None:
    """The claim index's second column became ``limit_name IS NULL`` (migration 10); its
    predicate did not change, so every count and list of PENDING tasks keeps an index."""
    params = {
        "worker_id": None,
        "statuses": ["PENDING"],
        "search": "",
        "pattern": "%",
        "prefix": "%",
    }
    for statement in (
        queries.ACTIVE_QUEUE_COUNTS,
        queries.TASK_GROUPS_PENDING,
        queries.TASKS_OF_WORKER_PENDING,
    ):
        plan = _plan(clean_db, statement, params)
        assert "Seq Scan on horsies_tasks" not in plan, plan


# -- the screens ---------------------------------------------------------------------------------


def table(app: SyceApp, selector: str) -> DataTable[Any]:
    return cast("DataTable[Any]", app.screen.query_one(selector, DataTable))


def static_text(app: SyceApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


async def test_syce_limits_tab_lists_limits_and_the_keys_of_the_selected_one(
    syce_app: SyceApp,
) -> None:
    async with syce_app.run_test(size=SIZE) as pilot:
        await pilot.press("6")
        pane = syce_app.pane("limits")
        await wait_for(pilot, lambda: pane.data is not None, what="limits")
        limits = table(syce_app, "#limits-table")
        assert [str(k.value) for k in limits.rows] == ["ghost", "reports", "tenant-api"]
        assert limits.get_row("tenant-api")[:7] == [
            "tenant-api", "2 at once · 10 per 1m", "4", "3", "2", "2", "2",
        ]  # fmt: skip
        assert limits.get_row("tenant-api")[7] == "1 worker"
        assert limits.get_row("ghost")[7] == "[red]not registered[/red]"
        assert "Busiest keys of ghost" in static_text(syce_app, "#limit-keys-title")
        await pilot.press("down", "down")
        await wait_for(
            pilot,
            lambda: cast(LimitsData, pane.data).selected == "tenant-api",
            what="tenant-api selected",
        )
        await wait_for(pilot, lambda: table(syce_app, "#limit-keys").row_count == 2, what="keys")
        keys = table(syce_app, "#limit-keys")
        assert keys.get_row("k:acme") == [
            "acme", "3", "2", "2", "[yellow]held: 2/2 running[/yellow]",
        ]  # fmt: skip
        assert keys.get_row("k:globex") == ["globex", "1", "0", "0", "room: waits for a worker"]
        assert "2 with waiting tasks" in static_text(syce_app, "#limit-keys-title")


async def test_syce_task_list_and_detail_show_the_limit_a_task_waits_on(
    syce_app: SyceApp,
) -> None:
    async with syce_app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        pane = cast(TasksPane, syce_app.pane("tasks"))
        await wait_for(pilot, lambda: pane.data is not None, what="tasks")
        await pilot.press("enter")  # the unclaimed group: the pending tasks
        await wait_for(pilot, lambda: cast(TasksData, pane.data).expanded == "", what="expanded")
        rows = table(syce_app, "#tasks-table")
        assert rows.get_row("t:t-lim-acme-1")[1] == (
            "crm.sync  [dim]waiting: limit tenant-api key acme[/dim]"
        )
        assert rows.get_row("t:t-pend-1")[1] == "app.send_mail"
        keys = [str(k.value) for k in rows.rows]
        await pilot.press(*["down"] * keys.index("t:t-lim-acme-1"), "enter")
        await wait_for(pilot, lambda: isinstance(syce_app.screen, TaskDetailScreen), what="detail")
        assert static_text(syce_app, "#task-wait") == (
            "waiting: limit tenant-api key acme (2/2 running, 2/10 starts in 1m)"
        )
        assert '"limit_key": "acme"' in cast(TaskDetailScreen, syce_app.screen).json


async def test_syce_worker_detail_lists_its_limits(syce_app: SyceApp) -> None:
    async with syce_app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        pane = syce_app.pane("workers")
        await wait_for(pilot, lambda: pane.data is not None, what="workers")
        assert cast(WorkersData, pane.data).selected == "w-alpha"
        assert "limits      default: tenant-api, reports" in static_text(syce_app, "#worker-detail")
