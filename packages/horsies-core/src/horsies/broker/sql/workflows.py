"""SQL of the workflow engine: start, lock, load, advance, finalize, pause/resume/cancel, reads and
recovery.

Every write to a workflow tree (a root workflow and its child workflows) happens while holding
the root workflow row's lock (``WF_LOCK_ROOTS*``, always taken in id order), so two workers
finishing two dependencies of one node, a pause and a completion, or a cancel and a completion are
serialised and see each other's committed writes. Batches are arrays (JSON for inserts,
``json_to_recordset``; one array per column where a batch is joined to a table, see
``WF_NODES_UPDATE``): one statement per kind of write, however many nodes change.
"""

from __future__ import annotations

from typing import Final

_TERMINAL_NODE: Final = "('COMPLETED', 'FAILED', 'SKIPPED')"

# -- locking ---------------------------------------------------------------------------------------

# Lock the root rows of the trees holding the given workflows, in id order (no deadlock between
# two transactions locking overlapping sets); returns the locked root ids.
WF_LOCK_ROOTS: Final = """
SELECT r.id FROM horsies_workflows AS r
WHERE r.id IN (
    SELECT COALESCE(w.root_workflow_id, w.id) FROM horsies_workflows AS w
    WHERE w.id = ANY(%(ids)s::text[]))
ORDER BY r.id
FOR UPDATE OF r
"""

# Same for the reaper: roots locked by someone else are skipped (retried on the next pass), so
# recovery never waits behind, or deadlocks with, a worker.
WF_LOCK_ROOTS_SKIP_LOCKED: Final = WF_LOCK_ROOTS + "SKIP LOCKED\n"

# -- starting --------------------------------------------------------------------------------------

# Insert a workflow RUNNING (an existing id inserts nothing: idempotent start).
WF_INSERT: Final = """
INSERT INTO horsies_workflows (
    id, name, status, on_error, output_task_index, success_policy, workflow_def_module,
    workflow_def_qualname, build_args, build_kwargs, parent_workflow_id, parent_task_index, depth,
    root_workflow_id, created_at, started_at, updated_at)
VALUES (
    %(id)s, %(name)s, 'RUNNING', %(on_error)s, %(output_task_index)s, %(success_policy)s::jsonb,
    %(module)s, %(qualname)s, %(build_args)s, %(build_kwargs)s, %(parent_workflow_id)s,
    %(parent_task_index)s, %(depth)s, %(root_workflow_id)s, now(), now(), now())
ON CONFLICT (id) DO NOTHING
RETURNING id
"""

# Insert every node of a workflow from one JSON array.
WF_NODES_INSERT: Final = """
INSERT INTO horsies_workflow_tasks (
    id, workflow_id, task_index, node_id, task_name, task_args, task_kwargs, queue_name,
    priority, dependencies, args_from, workflow_ctx_from, allow_failed_deps, join_type,
    min_success, task_options, status, is_subworkflow, sub_workflow_name, sub_workflow_module,
    sub_workflow_qualname, sub_workflow_retry_mode, has_conditions, created_at)
SELECT
    gen_random_uuid()::text, %(workflow_id)s, n.task_index, n.node_id, n.task_name, n.task_args,
    n.task_kwargs, n.queue_name, n.priority,
    ARRAY(SELECT json_array_elements_text(n.dependencies)::int), n.args_from::jsonb,
    CASE WHEN n.workflow_ctx_from IS NULL THEN NULL
         ELSE ARRAY(SELECT json_array_elements_text(n.workflow_ctx_from)) END,
    n.allow_failed_deps, n.join_type, n.min_success, n.task_options, n.status, n.is_subworkflow,
    n.sub_workflow_name, n.sub_workflow_module, n.sub_workflow_qualname,
    n.sub_workflow_retry_mode, n.has_conditions, now()
FROM json_to_recordset(%(nodes)s::json) AS n(
    task_index int, node_id text, task_name text, task_args text, task_kwargs text,
    queue_name text, priority int, dependencies json, args_from json, workflow_ctx_from json,
    allow_failed_deps bool, join_type text, min_success int, task_options text, status text,
    is_subworkflow bool, sub_workflow_name text, sub_workflow_module text,
    sub_workflow_qualname text, sub_workflow_retry_mode text, has_conditions bool)
"""

# Insert the task rows of enqueued nodes (PENDING, sent now, in array order); the INSERT trigger
# wakes the workers of each queue once.
WF_TASKS_INSERT: Final = """
INSERT INTO horsies_tasks (
    id, task_name, queue_name, priority, args, kwargs, status, sent_at, good_until,
    max_retries, retry_count, task_options, claimed, workflow_id, created_at, updated_at)
SELECT
    r.id, r.task_name, r.queue_name, r.priority, r.args, r.kwargs, 'PENDING',
    now() - (count(*) OVER () - r.ord) * interval '1 microsecond', r.good_until,
    r.max_retries, 0, r.task_options, false, r.workflow_id, now(), now()
FROM ROWS FROM (json_to_recordset(%(tasks)s::json) AS (
    id text, task_name text, queue_name text, priority int, args text, kwargs text,
    good_until timestamptz, max_retries int, task_options text, workflow_id text))
    WITH ORDINALITY AS r(
    id, task_name, queue_name, priority, args, kwargs, good_until, max_retries, task_options,
    workflow_id, ord)
"""

# -- loading ---------------------------------------------------------------------------------------

# The workflow rows the engine decides on.
WF_LOAD: Final = """
SELECT id, name, status, on_error, output_task_index, success_policy::text,
       error IS NOT NULL AS has_error, completed_at IS NOT NULL AS finalized,
       parent_workflow_id, parent_task_index, depth, COALESCE(root_workflow_id, id),
       workflow_def_module, workflow_def_qualname, build_args, build_kwargs
FROM horsies_workflows
WHERE id = ANY(%(ids)s::text[])
"""

# The light columns of every node of the given workflows (the engine's snapshot).
WF_LOAD_NODES: Final = """
SELECT workflow_id, task_index, node_id, status, dependencies, join_type, min_success,
       allow_failed_deps, workflow_ctx_from, args_from::text, is_subworkflow
FROM horsies_workflow_tasks
WHERE workflow_id = ANY(%(ids)s::text[])
ORDER BY workflow_id, task_index
"""

# The current node statuses of the given workflows (when their structure is cached).
WF_LOAD_STATUSES: Final = """
SELECT workflow_id, task_index, status
FROM horsies_workflow_tasks
WHERE workflow_id = ANY(%(ids)s::text[])
"""

# The heavy columns of some nodes of one workflow: what enqueuing them, evaluating their conditions,
# or building a result needs (the fields of the store's NodeDetails, in order).
WF_LOAD_NODE_DETAILS: Final = """
SELECT task_index, node_id, task_name, task_args, task_kwargs, queue_name, priority,
       task_options, result, sub_workflow_summary, sub_workflow_module, sub_workflow_qualname,
       has_conditions
FROM horsies_workflow_tasks
WHERE workflow_id = %(workflow_id)s AND task_index = ANY(%(indices)s::int[])
"""

# -- advancing -------------------------------------------------------------------------------------

# Record the end of finished tasks on their nodes (ENQUEUED/RUNNING -> COMPLETED/FAILED with the
# task's stored result); returns what the engine needs: the result of FAILED nodes (their error
# goes to the workflow), NULL there when it must be synthesised (no stored result, or a CANCELLED
# task). A task that never started (cancelled first) gives its node no completion time: the node
# never ran, and WF_GET_NODES reports neither time for it.
WF_NODES_FINISH_FROM_TASKS: Final = """
UPDATE horsies_workflow_tasks AS wt
SET status = CASE WHEN t.status = 'COMPLETED' AND t.result IS NOT NULL THEN 'COMPLETED'
                  ELSE 'FAILED' END,
    result = t.result,
    completed_at = CASE WHEN t.started_at IS NOT NULL THEN now() END
FROM horsies_tasks AS t
WHERE t.id = ANY(%(task_ids)s::text[])
  AND wt.task_id = t.id
  AND t.status IN ('COMPLETED', 'FAILED', 'CANCELLED')
  AND wt.status IN ('ENQUEUED', 'RUNNING')
RETURNING wt.workflow_id, wt.task_index, wt.status, t.id, t.status,
          CASE WHEN wt.status = 'FAILED' THEN t.result END
"""

# Write node changes of one batch: status, and when given, task link, child link, result,
# summary. Only a child-workflow node's times are written here: started_at when its child starts,
# completed_at when it ends after that. A task node's start is its task row's (see WF_GET_NODES) and
# its end is written by WF_NODES_FINISH_FROM_TASKS; a node that never ran gets neither.
# clock_timestamp(), not now(): the dependency that made the node ready may have completed earlier
# in this very transaction, at now(), and the node starts after it. The changes come as arrays, not
# JSON: the planner takes a set-returning function over JSON for 100 rows and then prefers reading
# every node of every workflow (a hash join) to looking a few up by (workflow_id, task_index), so
# each advance of a workflow cost a scan of the whole table until it held thousands of nodes.
WF_NODES_UPDATE: Final = """
UPDATE horsies_workflow_tasks AS wt
SET status = u.status,
    task_id = COALESCE(u.task_id, wt.task_id),
    sub_workflow_id = COALESCE(u.sub_workflow_id, wt.sub_workflow_id),
    result = COALESCE(u.result, wt.result),
    sub_workflow_summary = COALESCE(u.summary, wt.sub_workflow_summary),
    started_at = CASE WHEN wt.is_subworkflow AND u.status = 'RUNNING'
                      THEN COALESCE(wt.started_at, clock_timestamp()) ELSE wt.started_at END,
    completed_at = CASE WHEN wt.is_subworkflow AND wt.started_at IS NOT NULL
                             AND u.status IN ('COMPLETED', 'FAILED')
                        THEN clock_timestamp() ELSE wt.completed_at END
FROM unnest(
    %(workflow_ids)s::text[], %(task_indexes)s::int[], %(statuses)s::text[], %(task_ids)s::text[],
    %(sub_workflow_ids)s::text[], %(results)s::text[], %(summaries)s::text[]
) AS u(workflow_id, task_index, status, task_id, sub_workflow_id, result, summary)
WHERE wt.workflow_id = u.workflow_id AND wt.task_index = u.task_index
"""

# Store a workflow's error (on_error FAIL: the latest failure while RUNNING).
WF_SET_ERROR: Final = """
UPDATE horsies_workflows SET error = %(error)s, updated_at = now()
WHERE id = %(id)s AND status = 'RUNNING'
"""

# RUNNING -> PAUSED with the error that caused it (on_error PAUSE); NOTIFY via trigger.
WF_PAUSE_ON_ERROR: Final = """
UPDATE horsies_workflows SET status = 'PAUSED', error = %(error)s, updated_at = now()
WHERE id = %(id)s AND status = 'RUNNING'
"""

# Final status, result and error of a workflow whose nodes are all terminal (a NULL error keeps
# the stored one).
WF_FINALIZE: Final = """
UPDATE horsies_workflows
SET status = %(status)s, result = %(result)s, error = COALESCE(%(error)s, error),
    completed_at = now(),
    updated_at = now()
WHERE id = %(id)s AND status = 'RUNNING' AND completed_at IS NULL
RETURNING id
"""

# The final figures of one workflow, for its parent node's summary.
WF_SUMMARY: Final = """
SELECT w.status, w.result, w.error,
       count(n.*) AS total,
       count(n.*) FILTER (WHERE n.status = 'COMPLETED') AS completed,
       count(n.*) FILTER (WHERE n.status = 'FAILED') AS failed,
       count(n.*) FILTER (WHERE n.status = 'SKIPPED') AS skipped
FROM horsies_workflows AS w
LEFT JOIN horsies_workflow_tasks AS n ON n.workflow_id = w.id
WHERE w.id = %(id)s
GROUP BY w.id
"""

# Children of a workflow that ended while their parent node still says RUNNING.
WF_ENDED_CHILDREN: Final = """
SELECT c.id
FROM horsies_workflow_tasks AS s
JOIN horsies_workflows AS c ON c.id = s.sub_workflow_id
WHERE s.workflow_id = %(id)s AND s.status = 'RUNNING'
  AND c.status IN ('COMPLETED', 'FAILED', 'CANCELLED')
"""

# -- pause / resume / cancel -----------------------------------------------------------------------

# A workflow and all its descendants, parents before children (breadth first by depth).
WF_TREE: Final = """
WITH RECURSIVE tree AS (
    SELECT id, status, parent_workflow_id, parent_task_index, depth
    FROM horsies_workflows WHERE id = %(id)s
    UNION ALL
    SELECT c.id, c.status, c.parent_workflow_id, c.parent_task_index, c.depth
    FROM horsies_workflows AS c JOIN tree AS t ON c.parent_workflow_id = t.id
)
SELECT id, status, parent_workflow_id, parent_task_index FROM tree ORDER BY depth, id
"""

# Move the given workflows from one status to another (pause, resume); returns the ids changed.
WF_SET_STATUS: Final = """
UPDATE horsies_workflows SET status = %(to_status)s, updated_at = now()
WHERE id = ANY(%(ids)s::text[]) AND status = %(from_status)s
RETURNING id
"""

# Cancel workflows: CANCELLED and final; returns the ids changed.
WF_CANCEL: Final = """
UPDATE horsies_workflows SET status = 'CANCELLED', completed_at = now(), updated_at = now()
WHERE id = ANY(%(ids)s::text[]) AND status IN ('PENDING', 'RUNNING', 'PAUSED')
RETURNING id
"""

# Cancel the task rows of these workflows that no worker has started (running ones are stopped:
# WF_STOP_RUNNING_TASKS).
WF_CANCEL_UNSTARTED_TASKS: Final = """
UPDATE horsies_tasks
SET status = 'CANCELLED', claimed = false, claim_expires_at = NULL, updated_at = now()
WHERE workflow_id = ANY(%(ids)s::text[]) AND status IN ('PENDING', 'CLAIMED')
RETURNING id
"""

# Ask the workers running these workflows' tasks to stop them (as TaskHandle.cancel() does for a
# plain task); returns their ids, to notify.
WF_STOP_RUNNING_TASKS: Final = """
UPDATE horsies_tasks
SET cancel_requested_at = COALESCE(cancel_requested_at, now()), updated_at = now()
WHERE workflow_id = ANY(%(ids)s::text[]) AND status = 'RUNNING'
RETURNING id
"""

# Nodes of cancelled workflows that will never run: SKIPPED (no times: they did not run).
WF_SKIP_UNRUN_NODES: Final = """
UPDATE horsies_workflow_tasks AS wt
SET status = 'SKIPPED'
WHERE wt.workflow_id = ANY(%(ids)s::text[])
  AND (wt.status IN ('PENDING', 'READY')
       OR (wt.status IN ('ENQUEUED', 'RUNNING') AND NOT wt.is_subworkflow
           AND (wt.task_id IS NULL OR wt.task_id = ANY(%(cancelled_task_ids)s::text[]))))
"""

# -- reading (handles) -----------------------------------------------------------------------------

# Status, result and error of one workflow.
WF_GET: Final = """
SELECT status, result, error FROM horsies_workflows WHERE id = %(id)s
"""

# Every node, by index, with its times (WorkflowTaskInfo). A task node started when its task row
# did (the latest attempt's start), which the worker writes on the task row alone; a child-workflow
# node when its child started. A SKIPPED node never ran, and a node that never started has no end
# either: rows written before these rules held (times set at enqueue or skip) read the same way.
WF_GET_NODES: Final = """
SELECT wt.task_index, wt.node_id, wt.task_name, wt.status, wt.result, n.started_at,
       CASE WHEN n.started_at IS NOT NULL THEN wt.completed_at END
FROM horsies_workflow_tasks AS wt
LEFT JOIN horsies_tasks AS t ON t.id = wt.task_id
CROSS JOIN LATERAL (
    SELECT CASE WHEN wt.status = 'SKIPPED' THEN NULL
                WHEN wt.is_subworkflow THEN wt.started_at
                ELSE t.started_at END
) AS n(started_at)
WHERE wt.workflow_id = %(id)s
ORDER BY wt.task_index
"""

# The stored results of every finished node.
WF_GET_RESULTS: Final = """
SELECT node_id, result FROM horsies_workflow_tasks
WHERE workflow_id = %(id)s AND result IS NOT NULL
ORDER BY task_index
"""

# One node's stored result by node id (plus whether the workflow and node exist).
WF_GET_NODE_RESULT: Final = """
SELECT result FROM horsies_workflow_tasks
WHERE workflow_id = %(id)s AND node_id = %(node_id)s
"""

# -- recovery (the reaper's pass; see docs/workflows.md, "Crash recovery") -------------------------

# Nodes still waiting on a task that has ended (e.g. failed by the stale reaper): their task ids
# and workflows.
WF_FIND_UNSYNCED_TASKS: Final = """
SELECT t.id, wt.workflow_id
FROM horsies_workflow_tasks AS wt
JOIN horsies_tasks AS t ON t.id = wt.task_id
WHERE wt.status IN ('ENQUEUED', 'RUNNING')
  AND NOT wt.is_subworkflow
  AND t.status IN ('COMPLETED', 'FAILED', 'CANCELLED')
LIMIT %(limit)s
"""

# RUNNING workflows that cannot move by themselves: a READY node, a PENDING node whose
# dependencies are all terminal, every node terminal, or a sub-workflow node whose child has ended.
WF_FIND_STUCK: Final = (
    """
SELECT w.id
FROM horsies_workflows AS w
WHERE w.status = 'RUNNING'
  AND w.updated_at < now() - %(min_age_ms)s::int * interval '1 millisecond'
  AND (
    EXISTS (SELECT 1 FROM horsies_workflow_tasks AS n
            WHERE n.workflow_id = w.id AND n.status = 'READY')
    OR NOT EXISTS (SELECT 1 FROM horsies_workflow_tasks AS n
                   WHERE n.workflow_id = w.id AND n.status NOT IN """
    + _TERMINAL_NODE
    + """)
    OR EXISTS (
        SELECT 1 FROM horsies_workflow_tasks AS p
        WHERE p.workflow_id = w.id AND p.status = 'PENDING'
          AND NOT EXISTS (
              SELECT 1 FROM horsies_workflow_tasks AS d
              WHERE d.workflow_id = w.id AND d.task_index = ANY(p.dependencies)
                AND d.status NOT IN """
    + _TERMINAL_NODE
    + """))
    OR EXISTS (
        SELECT 1 FROM horsies_workflow_tasks AS s
        JOIN horsies_workflows AS c ON c.id = s.sub_workflow_id
        WHERE s.workflow_id = w.id AND s.status = 'RUNNING'
          AND c.status IN ('COMPLETED', 'FAILED', 'CANCELLED'))
  )
ORDER BY w.updated_at
LIMIT %(limit)s
"""
)

# Touch workflows the reaper examined, so the next pass looks at others first.
WF_TOUCH: Final = """
UPDATE horsies_workflows SET updated_at = now() WHERE id = ANY(%(ids)s::text[])
"""
