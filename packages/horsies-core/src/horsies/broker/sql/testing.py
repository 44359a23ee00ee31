"""SQL of the testing helpers (``horsies.testing``): throw-away databases, what was sent, whether a
worker is up.

The ``DATABASE_*`` statements name databases, which are identifiers and cannot be parameters: their
``{}`` placeholders are filled by the caller with ``psycopg.sql.Identifier`` (never with text).
"""

from __future__ import annotations

from typing import Final

# -- throw-away databases (run on the server's admin database, autocommit) ------------------------

# An empty database, to become the template that horsies' migrations are applied to.
DATABASE_CREATE: Final = "CREATE DATABASE {}"

# A copy of the migrated template: the copy is as the template is, without running any migration.
DATABASE_CREATE_FROM_TEMPLATE: Final = "CREATE DATABASE {} TEMPLATE {}"

# Drop a database even while connections to it are open (PostgreSQL 13+): a test's pools and
# listener may still hold some.
DATABASE_DROP_FORCED: Final = "DROP DATABASE IF EXISTS {} WITH (FORCE)"

# -- emptying a database between tests -------------------------------------------------------------

# Every row of horsies' tables, the schema version kept. DELETE, not TRUNCATE: on the few rows a
# test leaves, DELETE takes about a millisecond where TRUNCATE, which gives every table and index
# a new file, takes tens (bench/testing_databases.py). Nodes go before the workflows they
# reference; no other table references another.
TABLES_EMPTY_ALL: Final = """
DELETE FROM horsies_workflow_tasks;
DELETE FROM horsies_workflows;
DELETE FROM horsies_tasks;
DELETE FROM horsies_heartbeats;
DELETE FROM horsies_worker_states;
DELETE FROM horsies_schedule_state;
DELETE FROM horsies_limits;
DELETE FROM horsies_limit_starts;
DELETE FROM horsies_task_attempts;
"""

# -- reading what was sent -------------------------------------------------------------------------

# Tasks in the order they were sent (created_at: the sending transaction; sent_at orders the rows
# of one batch), optionally of one task name and of one queue.
TASK_LIST_SENT: Final = """
SELECT id, task_name, args, kwargs, queue_name, priority, status, sent_at
FROM horsies_tasks
WHERE (%(task_name)s::text IS NULL OR task_name = %(task_name)s::text)
  AND (%(queue_name)s::text IS NULL OR queue_name = %(queue_name)s::text)
ORDER BY created_at, sent_at, id
"""

# -- a worker started by a test --------------------------------------------------------------------

# Whether the worker main process %(pid)s on %(hostname)s, started at %(not_before)s or later (by
# this host's clock, which both sides read), has written a snapshot: a worker writes its first one
# once its children are up and it listens for tasks.
WORKER_STATE_EXISTS_FOR_PROCESS: Final = """
SELECT EXISTS (
    SELECT 1 FROM horsies_worker_states
    WHERE pid = %(pid)s AND hostname = %(hostname)s AND worker_started_at >= %(not_before)s
)
"""
