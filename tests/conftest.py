"""Shared fixtures: one PostgreSQL server per test session, a fresh database per test module.

The server is an embedded PostgreSQL (``horsies.embedded``) in a temporary directory, unless
``HORSIES_TEST_DATABASE_URL`` names an existing server (its database is used only to run
``CREATE DATABASE``). At session start a template database is created and migrated once; every test
module then gets its own database copied from the template (``CREATE DATABASE ... TEMPLATE``, fast),
dropped at the end of the module.

Fixtures:
- ``pg_cluster`` (session): the server; ``pg_cluster.url_for(db)``, ``pg_cluster.conninfo_for(db)``.
- ``database_url`` (module): ``postgresql+psycopg://`` URL of the module's fresh, migrated database.
- ``database_conninfo`` (module): the same database as a plain libpq URL, for psycopg.
- ``clean_db`` (function): empties every horsies table of the module database before the test.
- ``broker`` (function): a ``PostgresBroker`` on the module database, closed after the test.
- ``server_data_parent`` (function): a directory for the data of a server a test starts itself.

The fixtures of ``horsies.testing`` (``horsies_*``) are enabled here for every test.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from db_rows import ready_mismatches
from hypothesis import HealthCheck, settings
from psycopg import sql
from schema_setup import migrate

if TYPE_CHECKING:
    from horsies.broker import PostgresBroker
    from horsies.embedded import EmbeddedServer

# The machine is shared and noisy: a slow example is not a failure. Every test still has a timeout.
settings.register_profile(
    "horsies", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("horsies")

# Here, at the top: pytest takes ``pytest_plugins`` only from the conftest files it loads at
# start-up, and the examples' tests sit in a folder it loads later (not named ``test*``). The
# same line in tests/testing/conftest.py is what an app's own suite would write; pytest registers
# the plugin once.
pytest_plugins = ["horsies.testing.pytest_plugin"]

_SERVER_START_TIMEOUT_S = 60.0
_HORSIES_TABLES = (
    "horsies_tasks",
    "horsies_heartbeats",
    "horsies_worker_states",
    "horsies_schedule_state",
    "horsies_workflow_tasks",
    "horsies_workflows",
    "horsies_limits",
    "horsies_limit_starts",
    "horsies_ready",
    "horsies_task_attempts",
)


@dataclass
class PgCluster:
    """The session's PostgreSQL server and its migrated template database."""

    base_url: str  # postgresql+psycopg:// URL of the admin database
    template: str
    server: EmbeddedServer | None = None

    def url_for(self, database: str) -> str:
        """``postgresql+psycopg://`` URL of ``database`` on this server."""
        parts = urlsplit(self.base_url)
        return urlunsplit(parts._replace(scheme="postgresql+psycopg", path="/" + database))

    def conninfo_for(self, database: str) -> str:
        """Plain libpq URL of ``database`` on this server."""
        return self.url_for(database).replace("postgresql+psycopg://", "postgresql://", 1)

    @property
    def admin_conninfo(self) -> str:
        """libpq URL of the admin database (the one CREATE/DROP DATABASE run in)."""
        parts = urlsplit(self.base_url)
        return urlunsplit(parts._replace(scheme="postgresql"))


def _admin(cluster: PgCluster) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(cluster.admin_conninfo, autocommit=True, connect_timeout=10)


def _drop_database(cluster: PgCluster, name: str) -> None:
    with _admin(cluster) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """Start (or connect to) the session's PostgreSQL and build the migrated template database."""
    server: EmbeddedServer | None = None
    env_url = os.environ.get("HORSIES_TEST_DATABASE_URL")
    if env_url:
        base_url = env_url
    else:
        from horsies.embedded import reap_orphans, start_embedded

        reap_orphans()  # servers of earlier runs that were killed before their cleanup
        server = start_embedded(persistent=False, timeout_s=_SERVER_START_TIMEOUT_S)
        base_url = server.url
    template = f"horsies_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    cluster = PgCluster(base_url=base_url, template=template, server=server)
    try:
        with _admin(cluster) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(template)))
        migrate(cluster.url_for(template))
        yield cluster
    finally:
        try:
            _drop_database(cluster, template)
        finally:
            if server is not None:
                server.stop()


_db_counter = itertools.count(1)


@pytest.fixture(scope="module")
def database_name(pg_cluster: PgCluster) -> Iterator[str]:
    """Name of the module's fresh database (a copy of the migrated template)."""
    name = f"horsies_t{next(_db_counter)}_{os.getpid()}"
    with _admin(pg_cluster) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(pg_cluster.template)
            )
        )
    try:
        yield name
    finally:
        _drop_database(pg_cluster, name)


@pytest.fixture(scope="module")
def database_url(pg_cluster: PgCluster, database_name: str) -> str:
    """``postgresql+psycopg://`` URL of the module's fresh, migrated database."""
    return pg_cluster.url_for(database_name)


@pytest.fixture(scope="module")
def database_conninfo(pg_cluster: PgCluster, database_name: str) -> str:
    """Plain libpq URL (``postgresql://``) of the module's database, for direct psycopg use."""
    return pg_cluster.conninfo_for(database_name)


@pytest.fixture
def empty_db(pg_cluster: PgCluster) -> Iterator[str]:
    """A brand-new database without any horsies table (libpq URL), dropped after the test."""
    name = f"horsies_empty_{uuid.uuid4().hex[:8]}"
    with _admin(pg_cluster) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield pg_cluster.conninfo_for(name)
    finally:
        _drop_database(pg_cluster, name)


@pytest.fixture
def clean_db(database_conninfo: str) -> Iterator[str]:
    """Empty every horsies table of the module's database; returns its libpq URL. Afterwards,
    every task the test left claimable must still be in ``horsies_ready``, whatever way it took
    there (a task missing from it would never be claimed)."""
    with psycopg.connect(database_conninfo, autocommit=True) as conn:
        conn.execute(
            sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                sql.SQL(", ").join(sql.Identifier(t) for t in _HORSIES_TABLES)
            )
        )
    yield database_conninfo
    missing = [m for m in ready_mismatches(database_conninfo) if m[0] == "missing"]
    assert not missing, f"claimable tasks missing from horsies_ready: {missing[:5]}"


@pytest.fixture
def broker(database_url: str) -> Iterator[PostgresBroker]:
    """A ``PostgresBroker`` on the module's database (small pool), closed after the test."""
    from horsies.broker import PostgresBroker
    from horsies.config import PostgresConfig
    from horsies.workflows.store.hooks import WORKFLOW_STORE

    b = PostgresBroker(
        PostgresConfig(database_url=database_url, pool_size=1, max_overflow=8),
        workflows=WORKFLOW_STORE,
    )
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def server_data_parent() -> Iterator[Path]:
    """An empty directory outside pytest's temporary root, removed after the test, to hold the
    data directory of a PostgreSQL server started by the test. The server runs as another user,
    so its directory's parents are opened to that user; any pytest session starting meanwhile on
    this machine closes ``/tmp/pytest-of-<user>`` again (mode 0700), which would lock the server's
    user out of a data directory below it."""
    parent = Path(tempfile.mkdtemp(prefix="horsies-test-data-"))
    yield parent
    shutil.rmtree(parent, ignore_errors=True)
