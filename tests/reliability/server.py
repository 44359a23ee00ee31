"""A dedicated embedded PostgreSQL that a scenario may stop and start again (restart scenarios).

The session's shared server (``tests/conftest.py``) serves every other test module and must never
be restarted; a module that restarts PostgreSQL uses :class:`RestartableServer` instead: its own
cluster in a short temporary directory (``horsies-pg-*`` with an ``owner.pid`` file, so
``horsies.embedded.reap_orphans`` removes it if the test run is killed), started with
``persistent=True`` so that stopping it keeps the data, and restarted on the same data directory
and the same Unix socket, hence the same URL: clients reconnect to the very address they used.

Fast shutdown (``pg_ctl -m fast``) terminates every client connection and writes a checkpoint, so
every commit acknowledged before the stop survives the restart (durability is not what these
scenarios test; ``fsync`` is off for speed).

A module points the suite's fixtures (``ledger``, ``start_worker``, ``make_producer``) at it by
overriding the module-scoped ``database_url`` and ``database_conninfo`` fixtures with
:attr:`RestartableServer.url` and :attr:`RestartableServer.conninfo`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from horsies.embedded import EmbeddedServer, start_embedded
from psycopg import sql
from schema_setup import migrate

from tests.reliability.ledger import create_ledger

__all__ = ["DATABASE", "RestartableServer", "restartable_fixtures"]

DATABASE = "horsies_rel"
_START_TIMEOUT_S = 60.0
# Durability is not under test (a fast shutdown checkpoints anyway): keep the restarts cheap.
_SETTINGS = {"fsync": "off", "full_page_writes": "off", "max_connections": "300"}


class RestartableServer:
    """An embedded PostgreSQL in its own temporary directory that can be stopped and restarted.

    ``url``/``conninfo`` name database :data:`DATABASE` (migrated, with the ledger table) and stay
    the same across restarts. :meth:`close` stops the server and deletes its files.
    """

    def __init__(self) -> None:
        # Short path under the temp dir: the socket fits in the data directory itself, and
        # reap_orphans() recognises the prefix and the owner file.
        self.data_dir = Path(tempfile.mkdtemp(prefix="horsies-pg-"))
        (self.data_dir / "owner.pid").write_text(str(os.getpid()))
        self._server: EmbeddedServer | None = None
        self.restarts = 0
        self.down_at: float | None = None
        """``time.monotonic()`` of the last stop."""
        self.up_at: float | None = None
        """``time.monotonic()`` when the last start returned (the server accepts connections)."""
        self.start()
        with psycopg.connect(self.conninfo_for("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
        migrate(self.url)
        create_ledger(self.conninfo)

    @property
    def server(self) -> EmbeddedServer:
        if self._server is None:
            raise RuntimeError("the restartable server has been closed")
        return self._server

    @property
    def url(self) -> str:
        """``postgresql+psycopg://`` URL of :data:`DATABASE` (stable across restarts)."""
        return self.server.url_for(DATABASE)

    @property
    def conninfo(self) -> str:
        """Plain libpq URL of :data:`DATABASE` (stable across restarts)."""
        return self.server.conninfo_for(DATABASE)

    def conninfo_for(self, database: str) -> str:
        return self.server.conninfo_for(database)

    @property
    def running(self) -> bool:
        return self._server is not None and self._server.is_running()

    def start(self) -> None:
        """Start the server on its data directory (no-op when it is running)."""
        server = start_embedded(
            self.data_dir, persistent=True, timeout_s=_START_TIMEOUT_S, extra_settings=_SETTINGS
        )
        if self._server is not None and server.socket_dir != self._server.socket_dir:
            raise AssertionError("the restarted server listens on another socket")
        self._server = server
        self.up_at = time.monotonic()

    def stop(self) -> None:
        """Fast shutdown: every client connection is terminated; the data is kept."""
        # A fresh handle each time: EmbeddedServer.stop is once-only per instance.
        _fresh_handle(self.server).stop(timeout_s=_START_TIMEOUT_S)
        self.down_at = time.monotonic()

    def restart(self, down_s: float = 0.0) -> float:
        """Stop, stay down ``down_s`` seconds (clients meanwhile see "connection refused" or "no
        such file"), start again; returns how long the server was unreachable."""
        self.stop()
        if down_s > 0:
            time.sleep(down_s)  # the outage itself, not a synchronisation
        self.start()
        self.restarts += 1
        assert self.down_at is not None
        assert self.up_at is not None
        return self.up_at - self.down_at

    def close(self) -> None:
        """Stop the server and delete its files (idempotent)."""
        server, self._server = self._server, None
        try:
            if server is not None:
                with contextlib.suppress(Exception):
                    _fresh_handle(server).stop(timeout_s=30)
        finally:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def _fresh_handle(server: EmbeddedServer) -> EmbeddedServer:
    """A new handle on the same running server (``EmbeddedServer.stop`` is once-only per
    instance, and the server is stopped and restarted several times)."""
    return EmbeddedServer(
        data_dir=server.data_dir,
        socket_dir=server.socket_dir,
        persistent=True,
        pid=server.pid,
        run_as=server.run_as,
    )


def restartable_fixtures() -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
    """Module-scoped fixtures that put a test module's database on its own restartable server:
    ``restartable_server, database_url, database_conninfo = restartable_fixtures()`` (the last
    two override those of ``tests/conftest.py`` for that module only)."""

    @pytest.fixture(scope="module")
    def restartable_server() -> Iterator[RestartableServer]:
        """The module's own PostgreSQL, restarted by its tests (stopped and deleted afterwards)."""
        server = RestartableServer()
        try:
            yield server
        finally:
            server.close()

    @pytest.fixture(scope="module")
    def database_url(restartable_server: RestartableServer) -> str:
        return restartable_server.url

    @pytest.fixture(scope="module")
    def database_conninfo(restartable_server: RestartableServer) -> str:
        return restartable_server.conninfo

    return restartable_server, database_url, database_conninfo
