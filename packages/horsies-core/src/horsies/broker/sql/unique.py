"""SQL of unique tasks: the insert that yields to a row holding the same key, and the release of a
key whose holder has left its scope (see ``broker/unique.py`` for the protocol)."""

from __future__ import annotations

from typing import Final

# A key's holder is in scope while it is waiting to start ('pending': PENDING or CLAIMED, also
# while a retry waits), until it ends ('active': not yet COMPLETED, FAILED or CANCELLED), or until
# `unique_until` ('window'). Written once: the holder's read and the release test the same thing.
_IN_SCOPE: Final = """(
    (unique_scope = 'pending' AND status IN ('PENDING', 'CLAIMED'))
    OR (unique_scope = 'active' AND status IN ('PENDING', 'CLAIMED', 'RUNNING'))
    OR (unique_scope = 'window' AND unique_until > now()))"""

# Insert one PENDING task with a unique key (TASK_INSERT's columns, its limit's name and key or
# NULLs, and the delay of
# TASK_INSERT_AFTER_DELAY when %(delay_s)s is set); nothing is inserted (no row returned) when a
# row holds the key. A holder still being inserted by another transaction is waited for: its
# commit makes this a conflict, its rollback lets this insert through.
TASK_INSERT_UNIQUE: Final = """
INSERT INTO horsies_tasks (
    id, task_name, queue_name, priority, args, kwargs, status, sent_at, good_until,
    max_retries, retry_count, task_options, claimed, created_at, updated_at,
    unique_key, unique_scope, unique_until, limit_name, limit_key)
VALUES (
    %(id)s, %(task_name)s, %(queue_name)s, %(priority)s, %(args)s, %(kwargs)s, 'PENDING',
    COALESCE(
        %(sent_at)s::timestamptz, now() + COALESCE(%(delay_s)s::float8, 0) * interval '1 second'
    ),
    %(good_until)s::timestamptz, %(max_retries)s, 0, %(task_options)s, false, now(), now(),
    %(unique_key)s, %(unique_scope)s, now() + %(unique_window_s)s::float8 * interval '1 second',
    %(limit_name)s, %(limit_key)s)
ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING
RETURNING id
"""

# The key's holder: its id and whether it is in scope (no row: the key is free again).
TASK_UNIQUE_HOLDER: Final = (
    "SELECT id, " + _IN_SCOPE + " FROM horsies_tasks WHERE unique_key = %(unique_key)s\n"
)

# Free a key whose holder has left its scope (re-tested under the row lock, so a holder that a
# retry has just made PENDING again keeps it). Returns the holder's id when released.
TASK_UNIQUE_RELEASE: Final = (
    "UPDATE horsies_tasks SET unique_key = NULL\n"
    "WHERE unique_key = %(unique_key)s AND NOT " + _IN_SCOPE + "\nRETURNING id\n"
)
