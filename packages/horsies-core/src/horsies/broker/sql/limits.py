"""SQL of rate and concurrency limits: the schema they add, the claim that honours them, and the
registry of their numbers (see ``broker/limits.py`` for the protocol and docs/flow-control.md for
the guarantees).

A task subject to a limit carries the limit's name and its key (``limit_name``, ``limit_key``).
Ordinary claims ask for ``limit_name IS NULL``, the claim index's second column, so a backlog
held back by a limit never slows a claim of other tasks. A worker that serves a queue with limited
tasks claims there through ``horsies_claim_and_start_limited``, which decides under the limits'
advisory locks. Its first version is here, in migration 10, as it shipped; migration 14 replaced
it with the one in ``sql/limit_claim.py``, which counts a rate's window from numbered starts.
"""

from __future__ import annotations

from typing import Final

from horsies.broker.sql import fragments

# Migration 10's claim function, as it shipped (migration 14 replaced it: sql/limit_claim.py).
# The claim of a queue whose tasks may be limited, for the child pids in p_pids (one task each;
# with p_pids NULL, up to p_claim_limit tasks are CLAIMED instead, with a lease of p_lease_ms when
# it is not NULL, for a worker whose cluster-wide caps make it claim first and start after):
# the same candidates as TASK_CLAIM_AND_START_AVAILABLE for tasks without a limit, plus, per limit
# of p_limit_names, the tasks each key may start now. It runs as one statement but takes a fresh
# snapshot per inner statement (PL/pgSQL, READ COMMITTED), so what it counts after taking the
# limits' locks includes every start committed by the previous holder: the counts are exact
# across workers. Keys are visited round-robin from the limit's cursor until p_pids' count of
# keys have something to start, so one busy key never hides the others; candidates are then
# ordered by priority, their rank within their key (the n-th task of a key has rank n; a task
# without a limit has rank 1), then age. Rate-limited starts are logged (and the key's expired
# log rows deleted). When a rate-limited key had to wait, one more row with a NULL id carries, in
# wake_in_ms, how long until the first of them may start.
#
# enable_seqscan is off inside the function: otherwise the planner picks plans that read a whole
# table on every claim. When almost every claimable row of a queue is under a limit, the candidates
# without a limit look like one row by the column's statistics, while the claim index's
# `limit_name IS NULL` column gets a guess (the planner ignores a partial index's expression
# statistics) that makes the index look dearer: it scanned and sorted the table instead (~0.3 ms
# per claim at 2,000 queued rows, growing with them). The prune of horsies_limit_starts, a small
# table that churns, was a hash join over a scan of all of it. Every statement here has an index
# made for it.
_CLAIM_FUNCTION: Final = (
    fragments.CLAIM_FUNCTION_SIGNATURE
    + """LANGUAGE plpgsql SET enable_seqscan = off AS $fn$
#variable_conflict use_column
DECLARE
    v_slots INTEGER := CASE WHEN p_pids IS NULL THEN coalesce(p_claim_limit, 0)
                            ELSE coalesce(cardinality(p_pids), 0) END;
    v_now TIMESTAMPTZ;
    v_started TIMESTAMPTZ;
    v_ids TEXT[] := '{}';
    v_ranks INTEGER[] := '{}';
    v_got TEXT[];
    v_chosen TEXT[];
    v_limit RECORD;
    v_key TEXT;
    v_next TEXT;
    v_last TEXT;
    v_wrapped BOOLEAN;
    v_exhausted BOOLEAN;
    v_found INTEGER;
    v_visits INTEGER;
    v_allow INTEGER;
    v_count INTEGER;
    v_oldest TIMESTAMPTZ;
    v_wake TIMESTAMPTZ;
    v_rank INTEGER;
    v_rated BOOLEAN := false;
BEGIN
    IF v_slots = 0 THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(k) FROM unnest(p_lock_keys) AS k ORDER BY k;
    v_now := clock_timestamp();

"""
    + fragments.unlimited_candidates_by_claim_index("v_got")
    + """    v_ids := v_got;
    v_ranks := array_fill(1, ARRAY[cardinality(v_got)]);

    FOR v_limit IN
        SELECT l.name, l.concurrency, l.rate, l.per_ms, l.cursor_key
        FROM horsies_limits AS l WHERE l.name = ANY(p_limit_names) ORDER BY l.name
    LOOP
        v_key := v_limit.cursor_key;
        v_wrapped := v_key IS NULL;
        v_exhausted := false;
        v_found := 0;
        v_visits := 0;
        v_last := NULL;
        LOOP
            -- Two statements, not one with "v_key IS NULL OR ...": each keeps its index range.
            IF v_key IS NULL THEN
                SELECT t.limit_key INTO v_next FROM horsies_tasks AS t
                WHERE t.queue_name = p_queue_name AND t.limit_name = v_limit.name
                  AND t.status = 'PENDING'
                ORDER BY t.limit_key LIMIT 1;
            ELSE
                SELECT t.limit_key INTO v_next FROM horsies_tasks AS t
                WHERE t.queue_name = p_queue_name AND t.limit_name = v_limit.name
                  AND t.status = 'PENDING' AND t.limit_key > v_key
                ORDER BY t.limit_key LIMIT 1;
            END IF;
            IF NOT FOUND THEN
                IF v_wrapped THEN
                    v_exhausted := true;
                    EXIT;
                END IF;
                v_wrapped := true;
                v_key := NULL;
                CONTINUE;
            END IF;
            IF v_wrapped AND v_limit.cursor_key IS NOT NULL AND v_next > v_limit.cursor_key THEN
                v_exhausted := true;
                EXIT;
            END IF;
            v_key := v_next;
            v_visits := v_visits + 1;
            v_allow := v_slots;
            IF v_limit.concurrency IS NOT NULL THEN
                SELECT count(*) INTO v_count FROM horsies_tasks AS t
                WHERE t.limit_name = v_limit.name AND t.limit_key = v_key
                  AND t.status IN ('CLAIMED', 'RUNNING');
                v_allow := least(v_allow, v_limit.concurrency - v_count);
            END IF;
            IF v_allow > 0 AND v_limit.rate IS NOT NULL THEN
                SELECT count(*), min(s.started_at) INTO v_count, v_oldest
                FROM horsies_limit_starts AS s
                WHERE s.limit_name = v_limit.name AND s.limit_key = v_key
                  AND s.started_at > v_now - v_limit.per_ms * interval '1 millisecond';
                IF v_count >= v_limit.rate THEN
                    v_wake := least(v_wake, v_oldest + v_limit.per_ms * interval '1 millisecond');
                END IF;
                v_allow := least(v_allow, v_limit.rate - v_count);
            END IF;
            IF v_allow > 0 THEN
                v_got := ARRAY(
                    SELECT t.id FROM horsies_tasks AS t
                    WHERE t.queue_name = p_queue_name AND t.limit_name = v_limit.name
                      AND t.limit_key = v_key AND t.status = 'PENDING'
                      AND t.sent_at <= now()
                      AND (t.next_retry_at IS NULL OR t.next_retry_at <= now())
                      AND (t.good_until IS NULL OR t.good_until > now())
                      AND (p_task_names IS NULL OR t.task_name = ANY(p_task_names))
                    ORDER BY t.priority, t.sent_at, t.id
                    LIMIT v_allow
                    FOR UPDATE SKIP LOCKED);
                IF cardinality(v_got) > 0 THEN
                    v_ids := v_ids || v_got;
                    -- Simple expressions: a sub-select would be one more executor run per key.
                    FOR v_rank IN 1..cardinality(v_got) LOOP
                        v_ranks := v_ranks || v_rank;
                    END LOOP;
                    v_rated := v_rated OR v_limit.rate IS NOT NULL;
                    v_found := v_found + 1;
                    v_last := v_key;
                END IF;
            END IF;
            EXIT WHEN v_found >= v_slots OR v_visits >= 1000;
        END LOOP;
        -- Next pass starts after the last key served (or visited, when the visits ran out).
        v_next := CASE WHEN v_exhausted THEN coalesce(v_last, v_limit.cursor_key) ELSE v_key END;
        IF v_next IS DISTINCT FROM v_limit.cursor_key THEN
            UPDATE horsies_limits SET cursor_key = v_next WHERE name = v_limit.name;
        END IF;
    END LOOP;

    -- Read after every count: a start is later than every finish those counts saw committed.
    v_started := clock_timestamp();
    v_chosen := ARRAY(
        SELECT c.id
        FROM unnest(v_ids, v_ranks) AS c(id, rank) JOIN horsies_tasks AS t ON t.id = c.id
        ORDER BY t.priority, c.rank, t.sent_at, c.id
        LIMIT v_slots);
    -- Every start of a rate-limited key is logged; the key's entries out of its window go. Skipped
    -- when no candidate is under a rate limit (the common case of concurrency-only limits).
    IF v_rated THEN
    WITH rated AS (
        SELECT t.limit_name, t.limit_key, l.per_ms
        FROM horsies_tasks AS t JOIN horsies_limits AS l ON l.name = t.limit_name
        WHERE t.id = ANY(v_chosen) AND l.rate IS NOT NULL
    ),
    pruned AS (
        DELETE FROM horsies_limit_starts AS d
        USING (SELECT DISTINCT limit_name, limit_key, per_ms FROM rated) AS r
        WHERE d.limit_name = r.limit_name AND d.limit_key = r.limit_key
          AND d.started_at <= v_now - r.per_ms * interval '1 millisecond'
    )
    INSERT INTO horsies_limit_starts (limit_name, limit_key, started_at)
    SELECT limit_name, limit_key, v_started FROM rated;
    END IF;

"""
    + fragments.CLAIM_ONLY_BRANCH
    + """    ELSE
        RETURN QUERY
        WITH assigned AS (
            SELECT c.id, p.pid
            FROM unnest(v_chosen) WITH ORDINALITY AS c(id, n)
            JOIN unnest(p_pids) WITH ORDINALITY AS p(pid, n) ON p.n = c.n
        ),
        started AS (
            UPDATE horsies_tasks AS t
            SET status = 'RUNNING',
                claimed = false,
                claim_expires_at = NULL,
                started_at = v_started,
                worker_pid = s.pid,
                worker_hostname = p_hostname,
                worker_process_name = 'worker-' || s.pid,
                updated_at = now(),
                claimed_at = now(),
                claimed_by_worker_id = p_worker_id,
                attempt = t.attempt + 1
            FROM assigned AS s
            WHERE t.id = s.id
            RETURNING t.id, t.task_name, t.queue_name, t.priority, t.args, t.kwargs,
                      t.retry_count, t.max_retries, t.task_options, t.sent_at, t.workflow_id,
                      t.attempt, s.pid
        ),
        started_nodes AS (
            UPDATE horsies_workflow_tasks AS wt
            SET status = 'RUNNING'
            FROM started AS s
            WHERE s.workflow_id IS NOT NULL AND wt.task_id = s.id AND wt.status = 'ENQUEUED'
        )
        SELECT s.id, s.task_name, s.queue_name, s.priority, s.args, s.kwargs, s.retry_count,
               s.max_retries, s.task_options, s.sent_at, s.workflow_id, s.attempt, s.pid,
               NULL::INTEGER
        FROM started AS s;
    END IF;
"""
    + fragments.WAKE_ROW_AND_END
)

# Migration 10. The claim index gets `limit_name IS NULL` as its second column: ordinary claims
# ask for it and scan only tasks without a limit, in order, while every query that counts
# PENDING or CLAIMED rows keeps its index. Limited PENDING rows get their own index, ordered by key
# for the claim's key-by-key visit; limited in-flight rows one for the per-key counts.
# `horsies_limits` holds each limit's numbers (written by the workers that know it) and the key its
# next claim starts after; `horsies_limit_starts` the recent starts of rate-limited keys.
V10_LIMITS: Final = (
    """
ALTER TABLE horsies_tasks ADD COLUMN IF NOT EXISTS limit_name TEXT;
ALTER TABLE horsies_tasks ADD COLUMN IF NOT EXISTS limit_key TEXT;
ALTER TABLE horsies_tasks ADD CONSTRAINT horsies_tasks_limit_key_check
    CHECK ((limit_name IS NULL) = (limit_key IS NULL));
DROP INDEX IF EXISTS ix_horsies_tasks_claim;
CREATE INDEX ix_horsies_tasks_claim
    ON horsies_tasks (queue_name, (limit_name IS NULL), priority, sent_at, id)
    WHERE status IN ('PENDING', 'CLAIMED');
CREATE INDEX IF NOT EXISTS ix_horsies_tasks_limit_pending
    ON horsies_tasks (queue_name, limit_name, limit_key, priority, sent_at, id)
    WHERE status = 'PENDING' AND limit_name IS NOT NULL;
CREATE INDEX IF NOT EXISTS ix_horsies_tasks_limit_in_flight
    ON horsies_tasks (limit_name, limit_key)
    WHERE status IN ('CLAIMED', 'RUNNING') AND limit_name IS NOT NULL;
CREATE TABLE IF NOT EXISTS horsies_limits (
    name        TEXT        PRIMARY KEY,
    concurrency INTEGER     CHECK (concurrency > 0),
    rate        INTEGER     CHECK (rate > 0),
    per_ms      INTEGER     CHECK (per_ms > 0),
    cursor_key  TEXT,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (concurrency IS NOT NULL OR rate IS NOT NULL),
    CHECK ((rate IS NULL) = (per_ms IS NULL))
);
CREATE TABLE IF NOT EXISTS horsies_limit_starts (
    limit_name TEXT        NOT NULL,
    limit_key  TEXT        NOT NULL,
    started_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_horsies_limit_starts_key
    ON horsies_limit_starts (limit_name, limit_key, started_at);
"""
    + _CLAIM_FUNCTION
)

# Write the numbers of the limits a worker knows (arrays, one entry per limit; NULL for a number
# the limit has not). Returns the limits whose stored numbers were different (another version of
# the app wrote them), with the old numbers, so the worker can say so.
LIMITS_REGISTER: Final = """
WITH given AS (
    SELECT * FROM unnest(%(names)s::text[], %(concurrency)s::int[], %(rate)s::int[],
                         %(per_ms)s::int[]) AS g(name, concurrency, rate, per_ms)
),
previous AS (
    SELECT l.name, l.concurrency, l.rate, l.per_ms FROM horsies_limits AS l
    JOIN given AS g USING (name)
    WHERE (l.concurrency, l.rate, l.per_ms) IS DISTINCT FROM (g.concurrency, g.rate, g.per_ms)
),
written AS (
    INSERT INTO horsies_limits AS l (name, concurrency, rate, per_ms)
    SELECT name, concurrency, rate, per_ms FROM given
    ON CONFLICT (name) DO UPDATE
    SET concurrency = excluded.concurrency, rate = excluded.rate, per_ms = excluded.per_ms,
        updated_at = now()
    WHERE (l.concurrency, l.rate, l.per_ms)
          IS DISTINCT FROM (excluded.concurrency, excluded.rate, excluded.per_ms)
)
SELECT name, concurrency, rate, per_ms FROM previous
"""

# The claim-and-start of a queue with limited tasks (see _CLAIM_FUNCTION); same columns as
# TASK_CLAIM_AND_START_AVAILABLE, then wake_in_ms.
TASK_CLAIM_AND_START_LIMITED: Final = """
SELECT * FROM horsies_claim_and_start_limited(
    %(queue_name)s, %(pids)s::int[], %(worker_id)s, %(hostname)s, %(task_names)s::text[],
    %(limit_names)s::text[], %(lock_keys)s::bigint[], %(claim_limit)s::int, %(lease_ms)s::int)
"""

# Insert PENDING tasks subject to a limit (TASK_INSERT_MANY's arrays, each row's delay in seconds
# when it has no sent_at, and its limit name and key): sends of limited tasks take this one path,
# so the others are untouched.
TASK_INSERT_LIMITED_MANY: Final = """
INSERT INTO horsies_tasks (
    id, task_name, queue_name, priority, args, kwargs, status, sent_at, good_until,
    max_retries, retry_count, task_options, claimed, created_at, updated_at,
    limit_name, limit_key)
SELECT
    r.id, r.task_name, r.queue_name, r.priority, r.args, r.kwargs, 'PENDING',
    COALESCE(r.sent_at, now() + COALESCE(r.delay_s, 0) * interval '1 second'
                        - (count(*) OVER () - r.ord) * interval '1 microsecond'),
    r.good_until, r.max_retries, 0, r.task_options, false, now(), now(),
    r.limit_name, r.limit_key
FROM unnest(
    %(ids)s::text[], %(task_names)s::text[], %(queue_names)s::text[], %(priorities)s::int[],
    %(args)s::text[], %(kwargs)s::text[], %(sent_ats)s::timestamptz[],
    %(good_untils)s::timestamptz[],
    %(max_retries)s::int[], %(task_options)s::text[], %(delays_s)s::float8[],
    %(limit_names)s::text[], %(limit_keys)s::text[]
) WITH ORDINALITY AS r(
    id, task_name, queue_name, priority, args, kwargs, sent_at, good_until, max_retries,
    task_options, delay_s, limit_name, limit_key, ord)
"""
