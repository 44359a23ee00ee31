"""SQL of ``horsies_ready``: the claimable tasks' own small table, which ordinary claims read
instead of the task table's claim index (migration 16; reasoning and figures in docs/schema.md,
"At size").

The claim index of ``horsies_tasks`` keeps an entry for every task it has seen claimed until a
vacuum of the whole task table removes it, and each claim of the queue reads over those entries
first. When the table holds millions of ended tasks that vacuum is long and rare, so claims read
four to six times the pages they read on an empty table. ``horsies_ready`` holds one row per task
an ordinary claim may take (PENDING or CLAIMED, under no limit) and nothing else, so its vacuum is
a fraction of a second whatever the history holds.

Triggers on ``horsies_tasks`` keep it exact, so no statement that changes a task has to know about
it: the statement-level INSERT trigger adds the rows of new tasks, a row-level UPDATE trigger
moves a task in or out (its WHEN clause keeps every other update out of PL/pgSQL: finishing,
heartbeats, prefetch claims that only move PENDING to CLAIMED), and DELETE and TRUNCATE take their
rows with them. A row is found by its whole key, so no second index is needed.

The claims' candidates are read here too (``claimable_in_queue``).
"""

from __future__ import annotations

from typing import Final, LiteralString

from horsies.broker.sql import fragments

__all__ = ["V16_READY", "claimable_in_queue"]


def _claimable(row: LiteralString) -> LiteralString:
    """Whether the task ``row`` (``OLD``, ``NEW`` or a table alias) belongs in horsies_ready: what
    an ordinary claim may take. A row without sent_at is never due, so never claimable."""
    return (
        "("
        + row
        + ".status IN ('PENDING', 'CLAIMED') AND "
        + row
        + ".limit_name IS NULL AND "
        + row
        + ".sent_at IS NOT NULL)"
    )


def _key_matches(row: LiteralString) -> LiteralString:
    """The horsies_ready row of task ``row``, by the table's whole key."""
    return (
        "queue_name = "
        + row
        + ".queue_name AND priority = "
        + row
        + ".priority AND sent_at = "
        + row
        + ".sent_at AND id = "
        + row
        + ".id"
    )


_TRACK_FUNCTION: Final = (
    """
CREATE OR REPLACE FUNCTION horsies_ready_track() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND """
    + _claimable("OLD")
    + """ THEN
        DELETE FROM horsies_ready WHERE """
    + _key_matches("OLD")
    + """;
    END IF;
    IF TG_OP = 'UPDATE' AND """
    + _claimable("NEW")
    + """ THEN
        INSERT INTO horsies_ready (queue_name, priority, sent_at, id)
        VALUES (NEW.queue_name, NEW.priority, NEW.sent_at, NEW.id);
    END IF;
    RETURN NULL;
END
$$;
"""
)

# The statement-level INSERT function of migration 1, with the new tasks' rows added first.
_INSERTED_FUNCTION: Final = fragments.tasks_inserted_function(
    """    INSERT INTO horsies_ready (queue_name, priority, sent_at, id)
    SELECT n.queue_name, n.priority, n.sent_at, n.id FROM horsies_inserted_tasks AS n
    WHERE """
    + _claimable("n")
    + """;
    -- One wake-up per queue and statement, whatever the number of rows.
"""
)

# Migration 16. The triggers are created before the existing rows are copied: creating them locks
# the task table against writes until the migration commits, so no task changes between the copy
# and the first trigger that would have recorded the change.
V16_READY: Final = (
    """
CREATE TABLE IF NOT EXISTS horsies_ready (
    queue_name VARCHAR(100) NOT NULL,
    priority   INTEGER      NOT NULL,
    sent_at    TIMESTAMPTZ  NOT NULL,
    id         VARCHAR(36)  NOT NULL,
    CONSTRAINT pk_horsies_ready PRIMARY KEY (queue_name, priority, sent_at, id)
) WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000);
"""
    + _TRACK_FUNCTION
    + _INSERTED_FUNCTION
    + """
DROP TRIGGER IF EXISTS horsies_ready_update_trigger ON horsies_tasks;
CREATE TRIGGER horsies_ready_update_trigger
    AFTER UPDATE OF status, sent_at, priority, queue_name, limit_name ON horsies_tasks
    FOR EACH ROW
    WHEN ("""
    + _claimable("OLD")
    + " IS DISTINCT FROM "
    + _claimable("NEW")
    + "\n          OR ("
    + _claimable("NEW")
    + """
              AND (OLD.queue_name, OLD.priority, OLD.sent_at)
                  IS DISTINCT FROM (NEW.queue_name, NEW.priority, NEW.sent_at)))
    EXECUTE FUNCTION horsies_ready_track();

DROP TRIGGER IF EXISTS horsies_ready_delete_trigger ON horsies_tasks;
CREATE TRIGGER horsies_ready_delete_trigger
    AFTER DELETE ON horsies_tasks
    FOR EACH ROW
    WHEN """
    + _claimable("OLD")
    + """
    EXECUTE FUNCTION horsies_ready_track();

CREATE OR REPLACE FUNCTION horsies_ready_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Not TRUNCATE: the statement that fired this may be truncating horsies_ready too.
    DELETE FROM horsies_ready;
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS horsies_ready_truncate_trigger ON horsies_tasks;
CREATE TRIGGER horsies_ready_truncate_trigger
    AFTER TRUNCATE ON horsies_tasks
    FOR EACH STATEMENT
    EXECUTE FUNCTION horsies_ready_truncate();

INSERT INTO horsies_ready (queue_name, priority, sent_at, id)
SELECT t.queue_name, t.priority, t.sent_at, t.id FROM horsies_tasks AS t
WHERE """
    + _claimable("t")
    + """;
"""
)


# Claimable rows of one queue, most urgent then oldest first: PENDING (or CLAIMED with an expired
# lease), due, not expired, under no limit (those are claimed by the limited claim, sql/limits.py),
# ``also`` true, each locked unless another pass holds it. The candidates come in order from this
# table; each is checked again and locked on its task row ``c`` as it comes, in a lateral
# sub-select: written as a plain join, the generic plan of a big table hashed every pending row of
# the task table's claim index with this one and sorted them (a core per claim at 10 M rows). The
# sub-select must stay below the walk of the index, never below a sort: the claims run with
# sequential and bitmap scans off (TASK_PLANS_GENERIC_IN_TRANSACTION in sql/tasks.py says why).
# The one definition the claim statements of sql/tasks.py select their candidates with.
def claimable_in_queue(also: LiteralString) -> LiteralString:
    """The FROM ... ORDER BY of the claims' candidates ``c`` (id, priority, sent_at)."""
    return (
        """
    FROM horsies_ready AS r
    CROSS JOIN LATERAL (
        SELECT c.id, c.priority, c.sent_at FROM horsies_tasks AS c
        WHERE c.id = r.id
          AND c.status IN ('PENDING', 'CLAIMED') AND c.limit_name IS NULL
          AND (c.status = 'PENDING'
               OR (c.claim_expires_at IS NOT NULL AND c.claim_expires_at < now()))
          AND c.sent_at <= now() AND (c.next_retry_at IS NULL OR c.next_retry_at <= now())
          AND (c.good_until IS NULL OR c.good_until > now())
          AND """
        + also
        + """
        FOR UPDATE SKIP LOCKED
    ) AS c
    WHERE r.queue_name = %(queue_name)s AND r.sent_at <= now()
    ORDER BY r.priority, r.sent_at, r.id
"""
    )
