"""The rate log's run numbers (migration 14): a rate-limited key's starts in its window are counted
from the numbers at the window's two ends, exactly, also with claimers racing; the log never goes
back in time; a key's expired starts go when its numbers pass a multiple of 64; and a database
that logged starts before migration 14 keeps its windows across the upgrade.

The claims here call the limited claim directly (one transaction each, as a worker's exchange),
on windows of a day or more, so no test waits for a window to pass."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, LiteralString

import psycopg
import pytest
from horsies.broker.driver_sync import run_op
from horsies.broker.limits import limited_claim_query
from horsies.broker.migrations import LATEST_VERSION, migrate_step_op
from horsies.broker.sql.schema import MIGRATIONS, SCHEMA_VERSION_SELECT
from schema_setup import migrate
from thread_harness import race

pytestmark = pytest.mark.timeout(60)

DAY_MS = 86_400_000
LIMIT = "per-day"


def _limit(conn: psycopg.Connection[Any], rate: int, per_ms: int = DAY_MS) -> None:
    conn.execute(
        "INSERT INTO horsies_limits (name, rate, per_ms) VALUES (%s, %s, %s)", (LIMIT, rate, per_ms)
    )


def _send(conn: psycopg.Connection[Any], key: str, count: int) -> None:
    conn.execute(
        "INSERT INTO horsies_tasks (id, task_name, queue_name, status, sent_at, limit_name, "
        "limit_key) SELECT %(key)s || '-' || g, 't', 'default', 'PENDING', "
        "now() - (1000 - g) * interval '1 millisecond', %(limit)s, %(key)s "
        "FROM generate_series(1, %(count)s) AS g",
        {"key": key, "count": count, "limit": LIMIT},
    )


def _log(conn: psycopg.Connection[Any], key: str, *ages_s: float, first: int = 1) -> None:
    """Starts of ``key`` logged ``ages_s`` seconds ago (negative: ahead of the clock), numbered
    from ``first`` in the order given."""
    for n, age in enumerate(ages_s, start=first):
        conn.execute(
            "INSERT INTO horsies_limit_starts (limit_name, limit_key, started_at, n) "
            "VALUES (%s, %s, now() - %s * interval '1 second', %s)",
            (LIMIT, key, age, n),
        )


def _claim(conninfo: str, pids: Sequence[int]) -> tuple[list[str], int | None]:
    """One claim-and-start for ``pids`` in its own transaction: the ids started and the wake-up
    in ms (None when no key waits on its rate)."""
    query = limited_claim_query("w", "h", "default", pids, limit_names=[LIMIT])
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(query.sql, query.params).fetchall()
    wakes = [r[-1] for r in rows if r[0] is None]
    return [r[0] for r in rows if r[0] is not None], (wakes[0] if wakes else None)


def _one(conn: psycopg.Connection[Any], query: LiteralString) -> Any:
    """The single value ``query`` returns."""
    row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def _runs(conn: psycopg.Connection[Any]) -> dict[str, list[int]]:
    """Each key's logged start numbers, in time order."""
    runs: dict[str, list[int]] = {}
    for key, n in conn.execute(
        "SELECT limit_key, n FROM horsies_limit_starts ORDER BY limit_key, started_at, n"
    ):
        runs.setdefault(key, []).append(n)
    return runs


@pytest.fixture
def db(clean_db: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(clean_db, autocommit=True) as conn:
        yield conn


def test_a_window_starts_exactly_its_rate_then_says_when_it_frees(
    db: psycopg.Connection[Any], clean_db: str
) -> None:
    _limit(db, rate=5)
    for key in ("a", "b"):
        _send(db, key, 8)
    started: list[str] = []
    wake: int | None = None
    for _ in range(10):
        ids, wake = _claim(clean_db, [1, 2, 3])
        started += ids
        if not ids:
            break
    assert sorted(started) == sorted(f"{k}-{i}" for k in "ab" for i in range(1, 6))
    assert _runs(db) == {"a": [1, 2, 3, 4, 5], "b": [1, 2, 3, 4, 5]}
    # Held by the rate: the first of the window's starts leaves it in a day.
    assert wake is not None
    assert DAY_MS - 60_000 < wake <= DAY_MS


def test_racing_claimers_never_start_more_than_the_window_allows(
    db: psycopg.Connection[Any], clean_db: str
) -> None:
    _limit(db, rate=5)
    for key in ("a", "b", "c", "d"):
        _send(db, key, 12)
    started: list[str] = []
    lock = threading.Lock()

    def claimer(index: int) -> None:
        for _ in range(6):
            ids, _ = _claim(clean_db, list(range(index * 10, index * 10 + 4)))
            with lock:
                started.extend(ids)

    race(6, claimer, timeout_s=40)
    assert len(started) == len(set(started)) == 20
    assert _runs(db) == {key: [1, 2, 3, 4, 5] for key in "abcd"}


def test_the_log_never_goes_back_in_time(db: psycopg.Connection[Any], clean_db: str) -> None:
    # Two starts logged an hour ahead of the clock (it stepped back since): they stay in the
    # window, and the next start is logged at their time, after them, not at the clock's.
    _limit(db, rate=3, per_ms=2 * 3_600_000)
    _send(db, "k", 4)
    _log(db, "k", -3600, -3600)
    ids, wake = _claim(clean_db, [1, 2])
    assert ids == ["k-1"]
    assert wake is None
    rows = db.execute(
        "SELECT n, started_at FROM horsies_limit_starts ORDER BY n DESC LIMIT 2"
    ).fetchall()
    assert [r[0] for r in rows] == [3, 2]
    assert rows[0][1] == rows[1][1]
    assert _one(db, "SELECT started_at FROM horsies_tasks WHERE id = 'k-1'") < rows[0][1]
    assert _claim(clean_db, [1, 2])[0] == []


def test_a_keys_expired_starts_go_when_its_numbers_pass_a_multiple_of_64(
    db: psycopg.Connection[Any], clean_db: str
) -> None:
    _limit(db, rate=100)
    _send(db, "k", 4)
    _log(db, "k", *[DAY_MS / 1000 + 60] * 62)  # numbers 1..62, all out of the window
    assert _claim(clean_db, [1, 2])[0] == ["k-1", "k-2"]
    assert _runs(db) == {"k": [63, 64]}


def test_expired_starts_stay_until_then_and_are_never_counted(
    db: psycopg.Connection[Any], clean_db: str
) -> None:
    _limit(db, rate=3)
    _send(db, "k", 4)
    _log(db, "k", *[DAY_MS / 1000 + 60] * 10)
    _log(db, "k", 5.0, first=11)  # one start in the window: two more may start
    assert _claim(clean_db, [1, 2, 3])[0] == ["k-1", "k-2"]
    # The reaper's retention takes the expired ones (LIMIT_STARTS_PRUNE).
    assert _runs(db) == {"k": list(range(1, 14))}
    assert _claim(clean_db, [1, 2, 3])[0] == []


def test_numbers_start_again_once_every_start_of_a_key_is_gone(
    db: psycopg.Connection[Any], clean_db: str
) -> None:
    _limit(db, rate=2)
    _send(db, "k", 4)
    _log(db, "k", 5.0, first=40)
    assert _claim(clean_db, [1, 2])[0] == ["k-1"]  # 40 is in the window, 41 is the second
    db.execute("DELETE FROM horsies_limit_starts")  # an operator, or a retention of a removed limit
    assert _claim(clean_db, [1, 2])[0] == ["k-2", "k-3"]
    assert _runs(db) == {"k": [1, 2]}


# -- the upgrade ----------------------------------------------------------------------------------


@pytest.fixture(params=[10, 13], ids=lambda v: f"from-{v}")
def db_before_14(empty_db: str, request: pytest.FixtureRequest) -> str:
    """A new database migrated up to migration 10 (the rate log's first version) or 13 (the one
    before 14), as a libpq URL."""
    version: int = request.param
    with psycopg.connect(empty_db) as conn:
        while True:
            with conn.transaction():
                if run_op(conn, migrate_step_op(MIGRATIONS[:version])) is None:
                    break
    return empty_db


def test_migration_14_keeps_the_windows_of_starts_logged_before_it(db_before_14: str) -> None:
    with psycopg.connect(db_before_14, autocommit=True) as conn:
        assert _one(conn, SCHEMA_VERSION_SELECT) in (10, 13)
        _limit(conn, rate=3)
        _send(conn, "acme", 2)
        _send(conn, "globex", 2)
        # The old log: no numbers; acme has two expired starts and its three in the window.
        starts = [("acme", 2 * DAY_MS), ("acme", 2 * DAY_MS + 1), ("acme", 3_000),
                  ("acme", 2_000), ("acme", 1_000), ("globex", 4_000)]  # fmt: skip
        for key, age_ms in starts:
            conn.execute(
                "INSERT INTO horsies_limit_starts (limit_name, limit_key, started_at) "
                "VALUES (%s, %s, now() - %s * interval '1 millisecond')",
                (LIMIT, key, age_ms),
            )
    migrate(db_before_14)
    with psycopg.connect(db_before_14, autocommit=True) as conn:
        assert _one(conn, SCHEMA_VERSION_SELECT) == LATEST_VERSION
        assert _runs(conn) == {"acme": [1, 2, 3, 4, 5], "globex": [1]}
        oldest_in_window: datetime = _one(
            conn, "SELECT started_at FROM horsies_limit_starts WHERE n = 3 AND limit_key = 'acme'"
        )
        # acme's window is full: nothing of it starts, and the claim says when its oldest start
        # leaves the window; globex has room for two more and starts both of its tasks.
        ids, wake = _claim(db_before_14, [1, 2])
        assert sorted(ids) == ["globex-1", "globex-2"]
        assert _runs(conn)["globex"] == [1, 2, 3]
        now: datetime = _one(conn, "SELECT now()")
        expected = (oldest_in_window + timedelta(milliseconds=DAY_MS) - now).total_seconds()
        assert wake is not None
        assert abs(wake / 1000 - expected) < 60
