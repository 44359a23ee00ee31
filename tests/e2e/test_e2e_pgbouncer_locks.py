"""Advisory locks behind a real PgBouncer in transaction pooling.

A session-level advisory lock belongs to the server connection that took it, and in transaction
pooling that connection goes back to the pool when the statement ends: the client that took the
lock may not be able to release it, and nobody else can. horsies takes only transaction-level
locks (``pg_advisory_xact_lock``, ``pg_try_advisory_xact_lock``), which end with the transaction
that took them: migrations, the claim lock of a cluster-wide cap, the reaper, the prune, a
schedule's slot and a limit's claims.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import psycopg
import pytest
from apps.pooled import create_app
from horsies.broker.locks import PRUNE_LOCK_KEY, REAPER_LOCK_KEY
from horsies.broker.migrations import LATEST_VERSION
from horsies.config import RecoveryConfig, RetentionConfig
from pgbouncer_harness import Bouncer, PgBouncerBinary, StartBouncer
from process_harness import ROOT
from psycopg import sql

if TYPE_CHECKING:
    from tests.conftest import PgCluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

_ADVISORY_CALL = re.compile(r"pg_(?:try_)?advisory_\w+")
_LOCAL_SETTING = re.compile(r"set_config\(([^()]*)\)")
_MINE = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
_HELD = """
SELECT count(*) FROM pg_locks AS l JOIN pg_database AS d ON d.oid = l.database
WHERE l.locktype = 'advisory' AND d.datname = %s
"""


def _advisory_locks_held(admin_conninfo: str, database: str) -> int:
    with psycopg.connect(admin_conninfo, autocommit=True) as conn:
        row = conn.execute(_HELD, (database,)).fetchone()
    assert row is not None
    return int(row[0])


def test_horsies_takes_only_transaction_level_locks_and_settings() -> None:
    sources = sorted((ROOT / "packages").glob("*/src/**/*.py"))
    calls = {m for p in sources for m in _ADVISORY_CALL.findall(p.read_text(encoding="utf-8"))}
    assert calls, "the scan finds the lock calls"
    assert all("_xact_" in call for call in calls), calls
    settings = [m for p in sources for m in _LOCAL_SETTING.findall(p.read_text(encoding="utf-8"))]
    assert settings, "the scan finds the settings"
    assert all(s.replace(" ", "").endswith(",true") for s in settings), settings


def test_a_session_level_lock_stays_with_a_pooled_server_connection(
    pgbouncer: PgBouncerBinary, start_bouncer: StartBouncer, database_name: str
) -> None:
    key = 424242
    bouncer = start_bouncer(pool_size=2, settings=pgbouncer.transaction_settings)
    with (
        psycopg.connect(bouncer.conninfo(database_name), autocommit=True) as taker,
        psycopg.connect(bouncer.conninfo(database_name), autocommit=True) as other,
    ):
        taker.execute("SELECT pg_advisory_lock(%s)", (key,))
        # `other` gets the only server connection there is, the one that took the lock.
        other.execute("BEGIN")
        mine = _MINE
        assert other.execute(mine).fetchone() == (1,)
        # The taker's unlock runs on the other server connection, which holds nothing.
        assert taker.execute("SELECT pg_advisory_unlock(%s)", (key,)).fetchone() == (False,)
        assert other.execute(mine).fetchone() == (1,)
        assert other.execute("SELECT pg_advisory_unlock(%s)", (key,)).fetchone() == (True,)
        other.execute("COMMIT")


@pytest.fixture
def empty_database(pg_cluster: PgCluster) -> Iterator[str]:
    """A new database without any horsies table; its name."""
    name = f"horsies_pgb_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_cluster.admin_conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(pg_cluster.admin_conninfo, autocommit=True) as conn:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        conn.execute(drop.format(sql.Identifier(name)))


@pytest.fixture(scope="module", params=["transaction", "session"])
def bouncer(
    request: pytest.FixtureRequest, pgbouncer: PgBouncerBinary, start_bouncer: StartBouncer
) -> Bouncer:
    """A bouncer in each pooling mode: in transaction pooling fewer server connections than the
    tests' brokers, in session pooling one for each (a client keeps its own)."""
    if request.param == "session":
        return start_bouncer(pool_mode="session", pool_size=8)
    pgbouncer.skip_without_tracking()
    return start_bouncer(pool_size=3, settings=pgbouncer.transaction_settings)


def test_concurrent_migrations_apply_each_version_once(
    bouncer: Bouncer, empty_database: str, pg_cluster: PgCluster
) -> None:
    # In transaction pooling, more brokers than server connections: the ones waiting for the lock
    # hold theirs.
    apps = [create_app(bouncer.url(empty_database)) for _ in range(6)]
    errors: list[BaseException] = []

    def migrate(index: int) -> None:
        try:
            apps[index].get_broker().ensure_schema_initialized_sync()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=migrate, args=(i,)) for i in range(len(apps))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(t.is_alive() for t in threads), "a migration hung"
        assert errors == []
    finally:
        for app in apps:
            app.get_broker().close()
    conninfo = pg_cluster.conninfo_for(empty_database)
    with psycopg.connect(conninfo) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM horsies_schema_version")]
    assert sorted(versions) == list(range(1, LATEST_VERSION + 1))
    assert _advisory_locks_held(pg_cluster.admin_conninfo, empty_database) == 0


def test_the_reaper_and_prune_locks_are_honoured_and_released(
    bouncer: Bouncer, database_name: str, database_conninfo: str, pg_cluster: PgCluster
) -> None:
    app = create_app(bouncer.url(database_name))
    broker = app.get_broker()
    try:
        with psycopg.connect(database_conninfo) as holder:
            # Another process of the cluster in the middle of a reaper pass and a prune batch.
            holder.execute("SELECT pg_advisory_xact_lock(%s)", (REAPER_LOCK_KEY,))
            holder.execute("SELECT pg_advisory_xact_lock(%s)", (PRUNE_LOCK_KEY,))
            assert broker.reap(RecoveryConfig()).ran is False
            assert broker.prune(RetentionConfig()).busy is True
        # The holder's transaction ended (leaving the block commits): the locks are free.
        assert broker.reap(RecoveryConfig()).ran is True
        report = broker.prune(RetentionConfig())
        assert (report.busy, report.finished) == (False, True)
    finally:
        broker.close()
    assert _advisory_locks_held(pg_cluster.admin_conninfo, database_name) == 0
