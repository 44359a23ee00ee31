"""SQL of the scheduler service: the ``horsies_schedule_state`` rows.

Names read noun, verb, precondition. Several schedulers may run at once; a slot is never enqueued
twice because a run holds the schedule's advisory lock (``SCHEDULE_TRY_LOCK``) and advances the row
only if ``next_run_at`` is still the value it read (``SCHEDULE_STATE_ADVANCE_IF_DUE``), in the same
transaction as the task insert. Times come from the database clock (``clock_timestamp()``), so
schedulers on hosts with skewed clocks agree on what is due. Parameters are named (``%(name)s``);
nothing is ever formatted into these strings.
"""

from __future__ import annotations

from typing import Final

# Take the schedule's transaction-scoped advisory lock if free (true) or report it held (false).
SCHEDULE_TRY_LOCK: Final = "SELECT pg_try_advisory_xact_lock(%(key)s)"

# The database clock and the state rows of the named schedules (missing names have no row).
SCHEDULE_STATE_GET_MANY: Final = """
SELECT clock_timestamp() AS now, s.schedule_name, s.last_run_at, s.next_run_at, s.last_task_id,
       s.run_count, s.config_hash, s.updated_at
FROM (SELECT 1) AS one
LEFT JOIN horsies_schedule_state AS s ON s.schedule_name = ANY(%(names)s::text[])
ORDER BY s.next_run_at NULLS FIRST, s.schedule_name
"""

# The database clock and one schedule's state row (all state columns NULL when there is none).
SCHEDULE_STATE_GET: Final = """
SELECT clock_timestamp() AS now, s.schedule_name, s.last_run_at, s.next_run_at, s.last_task_id,
       s.run_count, s.config_hash, s.updated_at
FROM (SELECT 1) AS one
LEFT JOIN horsies_schedule_state AS s ON s.schedule_name = %(name)s
"""

# Create the state rows of new schedules (first run = first slot after start-up); existing rows,
# written meanwhile by another scheduler, are left alone. Returns the names created.
SCHEDULE_STATE_INSERT_MANY_IF_ABSENT: Final = """
INSERT INTO horsies_schedule_state (
    schedule_name, last_run_at, next_run_at, last_task_id, run_count, config_hash, updated_at)
SELECT r.schedule_name, NULL, r.next_run_at, NULL, 0, r.config_hash, now()
FROM unnest(%(names)s::text[], %(next_run_ats)s::timestamptz[], %(config_hashes)s::text[])
    AS r(schedule_name, next_run_at, config_hash)
ON CONFLICT (schedule_name) DO NOTHING
RETURNING schedule_name
"""

# Recalculate the next run of schedules whose pattern or timezone changed (config hash differs) or
# whose next run is unset; missed runs are not caught up across a change. Returns the names reset.
SCHEDULE_STATE_RESET_MANY_IF_CHANGED: Final = """
UPDATE horsies_schedule_state AS s
SET next_run_at = r.next_run_at, config_hash = r.config_hash, updated_at = now()
FROM unnest(%(names)s::text[], %(next_run_ats)s::timestamptz[], %(config_hashes)s::text[])
    AS r(schedule_name, next_run_at, config_hash)
WHERE s.schedule_name = r.schedule_name
  AND (s.config_hash IS DISTINCT FROM r.config_hash OR s.next_run_at IS NULL)
RETURNING s.schedule_name
"""

# Record a run (at ran_at, the clock the runs were planned with): advance next_run_at, count the
# tasks enqueued, remember the last one. Only if next_run_at is still the value read under the
# lock, so a concurrent run or reset wins cleanly.
SCHEDULE_STATE_ADVANCE_IF_DUE: Final = """
UPDATE horsies_schedule_state
SET last_run_at = %(ran_at)s, next_run_at = %(next_run_at)s, last_task_id = %(last_task_id)s,
    run_count = run_count + %(runs)s, updated_at = now()
WHERE schedule_name = %(name)s AND next_run_at = %(expected_next_run_at)s
"""
