"""Pieces of SQL that several statements share; not statements themselves."""

from __future__ import annotations

from typing import Final

# Tasks (``t``) with the time of the latest runner heartbeat of their current attempt
# (``hb.last_heartbeat``; rows without an attempt were written before attempts existed).
TASKS_WITH_LAST_HEARTBEAT: Final = """
FROM horsies_tasks AS t
LEFT JOIN LATERAL (
    SELECT max(h.sent_at) AS last_heartbeat FROM horsies_heartbeats AS h
    WHERE h.task_id = t.id AND h.role = 'runner' AND (h.attempt IS NULL OR h.attempt = t.attempt)
) AS hb ON true"""

# RUNNING tasks whose later of started_at and last heartbeat is older than what the caller appends.
RUNNING_SILENT_SINCE: Final = (
    TASKS_WITH_LAST_HEARTBEAT
    + """
WHERE t.status = 'RUNNING'
  AND t.started_at IS NOT NULL
  AND GREATEST(t.started_at, hb.last_heartbeat)"""
)
