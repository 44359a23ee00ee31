"""Versioned schema migrations, safe when many processes start at once.

Fast path: one read of ``horsies_schema_version``; when it already holds the latest version nothing
is locked. Otherwise each pending migration runs in its own transaction that first takes
``pg_advisory_xact_lock(SCHEMA_LOCK_KEY)``, re-reads the version under the lock (another process may
have applied it meanwhile), applies the migration's SQL and records it. Ten processes racing on a
fresh database therefore apply every migration exactly once and all return when the schema is
current.

``PostgresBroker`` runs :func:`migrate_program` before its first statement (and on
``ensure_schema_initialized``).
"""

from __future__ import annotations

import threading
from typing import Final

from horsies.broker.locks import SCHEMA_LOCK_KEY
from horsies.broker.programs import Program, run
from horsies.broker.sql.schema import (
    MIGRATIONS,
    SCHEMA_VERSION_CREATE,
    SCHEMA_VERSION_EXISTS,
    SCHEMA_VERSION_INSERT,
    SCHEMA_VERSION_LOCK,
    SCHEMA_VERSION_SELECT,
    Migration,
)
from horsies.broker.steps import Op, Query
from horsies.logs import get_logger

__all__ = [
    "LATEST_VERSION",
    "SchemaGate",
    "migrate_program",
    "migrate_step_op",
    "next_migration",
    "schema_version_op",
]

_log = get_logger("broker")

LATEST_VERSION: Final = MIGRATIONS[-1].version


def next_migration(
    current: int, migrations: tuple[Migration, ...] = MIGRATIONS
) -> Migration | None:
    """The first migration newer than ``current`` (None when the schema is up to date or newer)."""
    return next((m for m in migrations if m.version > current), None)


def schema_version_op() -> Op[int]:
    """Applied schema version without locking (0 when no version table exists yet)."""
    exists = yield Query(SCHEMA_VERSION_EXISTS)
    if not exists.rows[0][0]:
        return 0
    res = yield Query(SCHEMA_VERSION_SELECT)
    return int(res.rows[0][0])


def migrate_step_op(migrations: tuple[Migration, ...] = MIGRATIONS) -> Op[int | None]:
    """Apply the next pending migration under the schema lock (run in a transaction).

    Returns the version applied, or None when nothing was pending.
    """
    yield Query(SCHEMA_VERSION_LOCK, {"key": SCHEMA_LOCK_KEY})
    yield Query(SCHEMA_VERSION_CREATE, rows="none", prepare=False)
    res = yield Query(SCHEMA_VERSION_SELECT)
    pending = next_migration(int(res.rows[0][0]), migrations)
    if pending is None:
        return None
    # Several statements in one simple-protocol call (no parameters, never prepared).
    yield Query(pending.sql, rows="none", prepare=False)
    yield Query(
        SCHEMA_VERSION_INSERT,
        {"version": pending.version, "description": pending.description},
        rows="none",
    )
    _log.info("schema migration %d applied: %s", pending.version, pending.description)
    return pending.version


def migrate_program(
    deadline: float | None = None, action: str = "schema initialisation"
) -> Program[int]:
    """Bring the schema up to date; returns the schema version. Run it without the broker's own
    schema check (``bootstrap=True``): this is what that check runs. ``deadline`` bounds each wait
    for a connection and ``action`` names the call that needed the schema in errors (the
    caller's own deadline and name)."""
    current = yield from run(schema_version_op(), action, deadline=deadline)
    if current >= LATEST_VERSION:
        return current
    while True:
        applied = yield from run(migrate_step_op(), action, transaction=True, deadline=deadline)
        if applied is None:
            return (yield from run(schema_version_op(), action, deadline=deadline))


class SchemaGate:
    """Whether a broker has brought the schema up to date, shared by its two drivers: each checks
    it before its first statement and runs :func:`migrate_program` once."""

    def __init__(self) -> None:
        self.ready = False
        self.lock = (
            threading.Lock()
        )  # one sync migration at a time (concurrent async ones are safe)
