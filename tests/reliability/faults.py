"""Fault primitives shared by the reliability scenarios: cutting connections server-side.

``terminate_backends`` is the connection-cut primitive (``pg_terminate_backend``): the victims see
their next (or current) statement fail with a connection error, as after a network cut or a
server-side kill, and must reconnect by themselves.
"""

from __future__ import annotations

import psycopg

__all__ = ["terminate_backends"]


def terminate_backends(conninfo: str, *, application_name: str | None = None) -> int:
    """``pg_terminate_backend`` on every other client backend of ``conninfo``'s database.

    Only backends connected to the same database as ``conninfo`` are cut, never the caller's own
    connection; with ``application_name`` only those whose ``application_name`` equals it.
    Returns how many backends were terminated.
    """
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))"
            " FROM pg_stat_activity"
            " WHERE datname = current_database()"
            "   AND pid <> pg_backend_pid()"
            "   AND backend_type = 'client backend'"
            "   AND (%(app)s::text IS NULL OR application_name = %(app)s::text)",
            {"app": application_name},
        ).fetchone()
    return int(row[0]) if row else 0
