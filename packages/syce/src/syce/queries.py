"""Every SQL statement Syce runs: read-only, bounded (LIMIT), one named constant per question.

Parameters use psycopg's named style. Windows are passed as ``timedelta`` values (adapted to
``interval``).

Index use: ``horsies_tasks`` has partial indexes for the live statuses only
(``ix_horsies_tasks_claim``: PENDING/CLAIMED; ``ix_horsies_tasks_in_flight``: CLAIMED/RUNNING, on
``(status, queue_name, claimed_by_worker_id)``). So the questions about live tasks are asked with
literal status predicates that imply those index predicates (``status = 'PENDING'``,
``status IN ('CLAIMED', 'RUNNING')``) and stay fast however many finished tasks the table holds.
Finished tasks are served by ``ix_horsies_tasks_finished`` (``(status, claimed_by_worker_id,
sent_at DESC)`` for the finished statuses, migration 3): each question is asked once per finished
status with the status as a literal (so the partial index applies), workers are enumerated by
skipping through the index, and counts stop at ``%(cap)s`` rows (shown as "cap+"),
so no refresh ever reads more than a bounded slice of a big table.
Snapshot queries use ``(worker_id, snapshot_at)`` and ``snapshot_at`` indexes.

Tasks under a rate or concurrency limit have two partial indexes of their own (migration 10):
``ix_horsies_tasks_limit_pending`` (PENDING, ``limit_name IS NOT NULL``) and
``ix_horsies_tasks_limit_in_flight`` (CLAIMED/RUNNING, ``limit_name IS NOT NULL``, on
``(limit_name, limit_key)``); the limit questions repeat those predicates literally, so they read
live limited tasks only. The claim index's second column is ``limit_name IS NULL`` since then, but
its predicate is unchanged: the PENDING questions above keep it.
"""

from __future__ import annotations

from typing import Final, LiteralString

ROW_LIMIT: Final = 200
"""Upper bound on the rows of any list query."""

FINISHED_STATUSES: Final = ("COMPLETED", "FAILED", "CANCELLED")
"""The finished statuses Syce counts (each has its slice of ``ix_horsies_tasks_finished``)."""

STATUS_COUNT_CAP: Final = 100_000
"""The dashboard's count of each finished status stops here (shown as "100000+")."""

GROUP_COUNT_CAP: Final = 10_000
"""A worker group's count of each finished status stops here (shown as "10000+")."""

SEARCH_COUNT_CAP: Final = 2_000
"""With a search, a group's count of each finished status is the number of matches among its
newest this-many tasks of that status (the text of each is read from the table, not the index)."""


def finished_count_cap(search: str) -> int:
    """Where the Tasks tab's finished counts stop, with or without a search."""
    return SEARCH_COUNT_CAP if search.strip() else GROUP_COUNT_CAP


def _per_status(template: LiteralString) -> dict[str, LiteralString]:
    """``template`` with ``{status}`` replaced by each finished status (a literal, so the planner
    can prove the partial index's predicate)."""
    return {status: template.replace("{status}", status) for status in FINISHED_STATUSES}


FINISHED_STATUS_COUNTS: Final[LiteralString] = "\nUNION ALL\n".join(
    _per_status(
        """(SELECT '{status}' AS status, count(*) AS n
 FROM (SELECT 1 FROM horsies_tasks WHERE status = '{status}' LIMIT %(cap)s) AS capped)"""
    ).values()
)

ACTIVE_QUEUE_COUNTS: Final[LiteralString] = """
SELECT queue_name, 'PENDING' AS status, count(*) AS n
FROM horsies_tasks
WHERE status = 'PENDING'
GROUP BY queue_name
UNION ALL
SELECT queue_name, status, count(*) AS n
FROM horsies_tasks
WHERE status IN ('CLAIMED', 'RUNNING')
GROUP BY queue_name, status
LIMIT 3000
"""
"""Per queue, its PENDING, CLAIMED and RUNNING counts (the dashboard's live totals are their
sums)."""

WORKFLOW_STATUS_COUNTS: Final[LiteralString] = """
SELECT status, count(*) AS n
FROM horsies_workflows
GROUP BY status
LIMIT 50
"""

_WORKER_IDS: Final[LiteralString] = """
WITH RECURSIVE ids(worker_id, depth) AS (
    (SELECT worker_id, 1 FROM horsies_worker_states ORDER BY worker_id LIMIT 1)
    UNION ALL
    SELECT (SELECT s.worker_id FROM horsies_worker_states s
             WHERE s.worker_id > ids.worker_id ORDER BY s.worker_id LIMIT 1),
           ids.depth + 1
    FROM ids
    WHERE ids.worker_id IS NOT NULL AND ids.depth < 5000
)
"""
"""Every distinct worker id by skipping through the ``(worker_id, snapshot_at)`` index (a loose
index scan: one index probe per worker, however many snapshots each has)."""

LATEST_WORKER_SNAPSHOTS: Final[LiteralString] = (
    _WORKER_IDS
    + """
SELECT latest.*
FROM ids
CROSS JOIN LATERAL (
    SELECT worker_id, hostname, pid, processes, tasks_running, tasks_claimed,
           cpu_percent, memory_usage_mb, memory_percent, worker_started_at, snapshot_at, queues,
           stopped_at, async_concurrency, limits, now() - snapshot_at AS age
    FROM horsies_worker_states s
    WHERE s.worker_id = ids.worker_id
    ORDER BY s.snapshot_at DESC
    LIMIT 1
) AS latest
WHERE latest.snapshot_at > now() - %(since)s
  AND (%(with_stopped)s OR latest.stopped_at IS NULL)
LIMIT 500
"""
)
"""The latest snapshot of each worker seen since ``%(since)s``; workers whose latest snapshot says
they stopped only ``%(with_stopped)s``."""

CLUSTER_UTILISATION_TREND: Final[LiteralString] = """
SELECT date_bin(%(bucket)s, snapshot_at, TIMESTAMPTZ '2000-01-01') AS bucket,
       sum(tasks_running)::float8 / NULLIF(sum(processes), 0) AS utilisation
FROM horsies_worker_states
WHERE snapshot_at > now() - %(window)s AND stopped_at IS NULL
GROUP BY 1
ORDER BY 1
LIMIT 500
"""
"""Cluster utilisation per bucket; a stopped worker's last snapshot is no sample of its load."""

WORKER_HISTORY: Final[LiteralString] = """
SELECT date_bin(%(bucket)s, snapshot_at, TIMESTAMPTZ '2000-01-01') AS bucket,
       avg(tasks_running)::float8 AS running,
       avg(tasks_claimed)::float8 AS claimed,
       avg(cpu_percent)::float8 AS cpu,
       avg(memory_percent)::float8 AS memory
FROM horsies_worker_states
WHERE worker_id = %(worker_id)s AND snapshot_at > now() - %(window)s AND stopped_at IS NULL
GROUP BY 1
ORDER BY 1
LIMIT 500
"""

STALE_CLAIMS: Final[LiteralString] = """
SELECT id, task_name, queue_name, claimed_by_worker_id, now() - claimed_at AS age
FROM horsies_tasks
WHERE status = 'CLAIMED' AND claimed_at < now() - %(threshold)s
ORDER BY claimed_at
LIMIT 50
"""

_SEARCH: Final[LiteralString] = (
    "(%(search)s = '' OR task_name ILIKE %(pattern)s OR id LIKE %(prefix)s)"
)

TASK_GROUPS_PENDING: Final[LiteralString] = f"""
SELECT NULL::text AS worker_id, NULL::text AS hostname, 'PENDING' AS status, count(*) AS n
FROM horsies_tasks
WHERE status = 'PENDING' AND {_SEARCH}
HAVING count(*) > 0
"""
"""Every PENDING task is in the unclaimed group: each way back to PENDING (retry, release,
requeue) clears the claiming worker, so counting by worker would only read a column the claim
index does not hold."""

TASK_GROUPS_IN_FLIGHT: Final[LiteralString] = f"""
SELECT claimed_by_worker_id AS worker_id, max(worker_hostname) AS hostname, status, count(*) AS n
FROM horsies_tasks
WHERE status IN ('CLAIMED', 'RUNNING') AND status = ANY(%(statuses)s) AND {_SEARCH}
GROUP BY claimed_by_worker_id, status
LIMIT 1000
"""


def _finished_groups(recent: LiteralString) -> dict[str, LiteralString]:
    """Per finished status, the groups of that status, each counted by ``recent`` (a count over
    the rows of one group, ``{where}``, newest first, at most ``%(cap)s``)."""
    count_of_worker = recent.replace("{where}", "claimed_by_worker_id = w.worker_id")
    count_unclaimed = recent.replace("{where}", "claimed_by_worker_id IS NULL")
    return _per_status(
        f"""
WITH RECURSIVE workers(worker_id) AS (
    (SELECT claimed_by_worker_id FROM horsies_tasks
     WHERE status = '{{status}}' AND claimed_by_worker_id IS NOT NULL
     ORDER BY claimed_by_worker_id LIMIT 1)
    UNION ALL
    SELECT (SELECT t.claimed_by_worker_id FROM horsies_tasks t
             WHERE t.status = '{{status}}' AND t.claimed_by_worker_id > workers.worker_id
             ORDER BY t.claimed_by_worker_id LIMIT 1)
    FROM workers
    WHERE workers.worker_id IS NOT NULL
)
SELECT w.worker_id, '{{status}}' AS status,
       (SELECT worker_hostname FROM horsies_tasks
         WHERE status = '{{status}}' AND claimed_by_worker_id = w.worker_id
         ORDER BY sent_at DESC NULLS LAST LIMIT 1) AS hostname,
       ({count_of_worker}) AS n
FROM (SELECT worker_id FROM workers WHERE worker_id IS NOT NULL LIMIT 1000) AS w
UNION ALL
SELECT NULL, '{{status}}', NULL, ({count_unclaimed})
"""
    )


TASK_GROUPS_FINISHED: Final = _finished_groups(
    """SELECT count(*) FROM (SELECT 1 FROM horsies_tasks
         WHERE status = '{status}' AND {where}
         ORDER BY sent_at DESC NULLS LAST LIMIT %(cap)s) AS recent"""
)
"""Per finished status: (worker_id, status, hostname, n) for every worker with such tasks, plus
the unclaimed group (worker_id NULL); ``n`` counts the group's tasks of that status up to
``%(cap)s``, from the index alone; groups with n = 0 included. (Both the hostname and the count
read the group's tasks in index order: a bare LIMIT let the planner scan the table from its
oldest rows for a worker whose tasks are the newest.)"""

TASK_GROUPS_FINISHED_SEARCH: Final = _finished_groups(
    f"""SELECT count(*) FROM (SELECT task_name, id FROM horsies_tasks
         WHERE status = '{{status}}' AND {{where}}
         ORDER BY sent_at DESC NULLS LAST LIMIT %(cap)s) AS recent WHERE {_SEARCH}"""
)
"""The same with a search: ``n`` counts the matches among the group's newest ``%(cap)s`` tasks
of that status."""

_TASK_COLUMNS: Final[LiteralString] = "id, task_name, queue_name, status, sent_at, retry_count"


def _newest_tasks(where: LiteralString) -> LiteralString:
    """The newest 100 tasks matching ``where`` and the search."""
    return f"""
SELECT {_TASK_COLUMNS}
FROM horsies_tasks
WHERE {where} AND {_SEARCH}
ORDER BY sent_at DESC NULLS LAST, id
LIMIT 100
"""


TASKS_OF_WORKER_PENDING: Final = _newest_tasks(
    "status = 'PENDING' AND claimed_by_worker_id IS NOT DISTINCT FROM %(worker_id)s"
)

TASKS_OF_WORKER_IN_FLIGHT: Final = _newest_tasks(
    "status IN ('CLAIMED', 'RUNNING') AND status = ANY(%(statuses)s)"
    " AND claimed_by_worker_id = %(worker_id)s"
)

TASKS_OF_WORKER_FINISHED: Final = _per_status(
    _newest_tasks("status = '{status}' AND claimed_by_worker_id = %(worker_id)s")
)
"""Per finished status: the newest 100 such tasks of one worker."""

UNCLAIMED_TASKS_FINISHED: Final = _per_status(
    _newest_tasks("status = '{status}' AND claimed_by_worker_id IS NULL")
)
"""Per finished status: the newest 100 such tasks no worker claimed (cancelled before a claim)."""

TASK_BY_ID: Final[LiteralString] = """
SELECT * FROM horsies_tasks WHERE id = %(id)s LIMIT 1
"""

WORKFLOWS: Final[LiteralString] = """
SELECT w.id, w.name, w.status, w.created_at, w.updated_at,
       n.total, n.completed, n.failed, n.skipped
FROM (
    SELECT id, name, status, created_at, updated_at
    FROM horsies_workflows
    WHERE status = ANY(%(statuses)s)
      AND (%(search)s = '' OR name ILIKE %(pattern)s OR id LIKE %(prefix)s)
    ORDER BY updated_at DESC
    LIMIT 200
) AS w
CROSS JOIN LATERAL (
    SELECT count(*) AS total,
           count(*) FILTER (WHERE t.status = 'COMPLETED') AS completed,
           count(*) FILTER (WHERE t.status = 'FAILED') AS failed,
           count(*) FILTER (WHERE t.status = 'SKIPPED') AS skipped
    FROM horsies_workflow_tasks t
    WHERE t.workflow_id = w.id
) AS n
ORDER BY w.updated_at DESC
"""
"""The 200 most recently updated workflows of the chosen statuses, with their nodes counted (only
for those 200)."""

WORKFLOW_BY_ID: Final[LiteralString] = """
SELECT * FROM horsies_workflows WHERE id = %(id)s LIMIT 1
"""

WORKFLOW_NODES: Final[LiteralString] = """
SELECT task_index, node_id, task_name, status, task_id, queue_name, dependencies,
       is_subworkflow, sub_workflow_id, started_at, completed_at
FROM horsies_workflow_tasks
WHERE workflow_id = %(id)s
ORDER BY task_index
LIMIT 1000
"""

_HELD: Final[LiteralString] = """coalesce(l.name IS NULL OR {in_flight} >= l.concurrency
             OR {starts} >= l.rate, false)"""
"""Whether a key's tasks wait on their limit (rather than for a free worker): the key is at its
concurrency or its rate, or no worker registered the limit (``l``: its ``horsies_limits`` row)."""


def _limit_keys(one_limit: bool) -> LiteralString:
    """``WITH ... keyed``: one row per (limit, key) with live tasks or starts in the rate's window:
    ``waiting``, ``in_flight``, ``starts_in_window``, ``held``. With ``one_limit`` every part is
    narrowed to the limit ``%(name)s``."""
    task_filter: LiteralString = " AND t.limit_name = %(name)s" if one_limit else ""
    start_filter: LiteralString = " AND l.name = %(name)s" if one_limit else ""
    held = _HELD.replace("{in_flight}", "k.in_flight").replace("{starts}", "k.starts_in_window")
    return f"""
WITH waiting AS (
    SELECT t.limit_name, t.limit_key, count(*) AS n
    FROM horsies_tasks AS t
    WHERE t.status = 'PENDING' AND t.limit_name IS NOT NULL{task_filter}
    GROUP BY t.limit_name, t.limit_key
),
in_flight AS (
    SELECT t.limit_name, t.limit_key, count(*) AS n
    FROM horsies_tasks AS t
    WHERE t.status IN ('CLAIMED', 'RUNNING') AND t.limit_name IS NOT NULL{task_filter}
    GROUP BY t.limit_name, t.limit_key
),
started AS (
    SELECT s.limit_name, s.limit_key, count(*) AS n
    FROM horsies_limits AS l
    JOIN horsies_limit_starts AS s
      ON s.limit_name = l.name AND s.started_at > now() - l.per_ms * interval '1 millisecond'
    WHERE l.rate IS NOT NULL{start_filter}
    GROUP BY s.limit_name, s.limit_key
),
per_key AS (
    SELECT limit_name, limit_key, coalesce(w.n, 0) AS waiting, coalesce(f.n, 0) AS in_flight,
           coalesce(s.n, 0) AS starts_in_window
    FROM waiting AS w
    FULL JOIN in_flight AS f USING (limit_name, limit_key)
    FULL JOIN started AS s USING (limit_name, limit_key)
),
keyed AS (
    SELECT k.*, {held} AS held
    FROM per_key AS k
    LEFT JOIN horsies_limits AS l ON l.name = k.limit_name
)"""


LIMITS: Final[LiteralString] = (
    _limit_keys(one_limit=False)
    + """
SELECT coalesce(l.name, k.limit_name) AS name, l.concurrency, l.rate, l.per_ms,
       l.name IS NOT NULL AS registered,
       coalesce(sum(k.waiting), 0)::bigint AS waiting,
       coalesce(sum(k.waiting) FILTER (WHERE k.held), 0)::bigint AS held,
       coalesce(sum(k.in_flight), 0)::bigint AS in_flight,
       coalesce(sum(k.starts_in_window), 0)::bigint AS starts_in_window,
       count(*) FILTER (WHERE k.waiting > 0) AS keys_waiting
FROM horsies_limits AS l
FULL JOIN keyed AS k ON k.limit_name = l.name
GROUP BY coalesce(l.name, k.limit_name), l.name, l.concurrency, l.rate, l.per_ms
ORDER BY 1
LIMIT 500
"""
)
"""Every limit workers registered or live tasks name, with its numbers and its counts: tasks
waiting (``held``: those that wait on the limit), in flight, starts in the rate's window, keys
with waiting tasks."""

LIMIT_KEYS: Final[LiteralString] = (
    _limit_keys(one_limit=True)
    + """
SELECT limit_key AS key, waiting, in_flight, starts_in_window, held
FROM keyed
ORDER BY waiting DESC, in_flight DESC, limit_key
LIMIT 50
"""
)
"""The 50 busiest keys of the limit ``%(name)s`` (by waiting, then in flight)."""

_TASK_HELD: Final[LiteralString] = _HELD.replace("{in_flight}", "f.n").replace("{starts}", "s.n")

TASK_WAITS: Final[LiteralString] = f"""
SELECT t.id, coalesce(t.sent_at > now(), false) AS not_due, t.sent_at,
       t.next_retry_at IS NOT NULL AND t.next_retry_at > now() AS retry_later, t.next_retry_at,
       t.good_until IS NOT NULL AND t.good_until <= now() AS expired,
       t.limit_name, t.limit_key, l.name IS NOT NULL AS registered,
       l.concurrency, l.rate, l.per_ms, f.n AS in_flight, s.n AS starts_in_window,
       t.limit_name IS NOT NULL AND {_TASK_HELD} AS held
FROM horsies_tasks AS t
LEFT JOIN horsies_limits AS l ON l.name = t.limit_name
CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM horsies_tasks AS r
    WHERE r.status IN ('CLAIMED', 'RUNNING') AND r.limit_name IS NOT NULL
      AND r.limit_name = t.limit_name AND r.limit_key = t.limit_key
) AS f
CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM horsies_limit_starts AS st
    WHERE st.limit_name = t.limit_name AND st.limit_key = t.limit_key
      AND st.started_at > now() - l.per_ms * interval '1 millisecond'
) AS s
WHERE t.id = ANY(%(ids)s::text[]) AND t.status = 'PENDING'
LIMIT 200
"""
"""Why each of the PENDING tasks ``%(ids)s`` has not started: not due yet, a retry's delay, past
its ``good_until``, or its limit (``held``: its key is at its concurrency or rate, or no worker
registered the limit); otherwise it waits for a free worker. Other statuses give no row."""
