"""The claim of a queue with limited tasks, ``horsies_claim_and_start_limited``, as migration 14
replaced it, and that migration; migration 17 replaced it again with the same function taking its
tasks without a limit from ``horsies_ready``. Migration 10's first version stays in
``sql/limits.py`` as it shipped.

Migration 14 numbers the starts of each rate-limited key (``horsies_limit_starts.n``): a key's
logged starts form one run whose numbers go up by one and whose times never go down, so the starts
inside a window are a tail of that run, and their count is the newest number minus the number of
the first start inside the window, plus one. Two index probes replace reading every start in the
window, so a claim costs the same whatever the rate and the window (0.3 ms with 10,000 starts in
the window, where reading them took 3 ms). A key's expired starts are deleted by the claim that
takes its numbers past a multiple of 64 rather than by every claim: a prune on every claim reads
the dead entries of the prunes before it again each time (until a VACUUM), and the count never
reads expired starts anyway.
"""

from __future__ import annotations

from typing import Final, LiteralString

from horsies.broker.sql import fragments

# A key visit: the next key after v_key, else the first (wrapping round: the second branch of the
# UNION runs only when the first finds nothing; each keeps its index range), what the key may
# start (its tasks in flight; its rate's newest start and first start inside the window, two
# probes of the run's index), then as many of its candidates as those allow, none when the pass
# has come round to where it began. Into v_next, v_back (wrapped round), v_in_flight, v_newest,
# v_newest_at, v_first, v_first_at, v_got.
_IN_FLIGHT_JOIN: Final = """
            CROSS JOIN LATERAL (
                SELECT count(*) AS n FROM horsies_tasks AS t
                WHERE t.limit_name = v_limit.name AND t.limit_key = k.limit_key
                  AND t.status IN ('CLAIMED', 'RUNNING')) AS f"""
_IN_FLIGHT_ALLOWS: Final = "v_limit.concurrency - f.n"
# Without a rate nothing after the statement needs the count: it only bounds the candidates.
_IN_FLIGHT_SUBSELECT_ALLOWS: Final = """v_limit.concurrency - (
                               SELECT count(*) FROM horsies_tasks AS f
                               WHERE f.limit_name = v_limit.name AND f.limit_key = k.limit_key
                                 AND f.status IN ('CLAIMED', 'RUNNING'))"""
_RATE_JOINS: Final = """
            LEFT JOIN LATERAL (
                SELECT s.n, s.started_at FROM horsies_limit_starts AS s
                WHERE s.limit_name = v_limit.name AND s.limit_key = k.limit_key
                ORDER BY s.started_at DESC, s.n DESC LIMIT 1) AS r ON true
            LEFT JOIN LATERAL (
                SELECT s.n, s.started_at FROM horsies_limit_starts AS s
                WHERE s.limit_name = v_limit.name AND s.limit_key = k.limit_key
                  AND s.started_at > v_now - v_limit.per_ms * interval '1 millisecond'
                ORDER BY s.started_at, s.n LIMIT 1) AS w ON true"""
_RATE_ALLOWS: Final = "v_limit.rate - coalesce(r.n - w.n + 1, 0)"
_RATE_COUNTS: Final = "r.n, r.started_at, w.n, w.started_at"
_NO_RUN: Final = "NULL::BIGINT, NULL::TIMESTAMPTZ, NULL::BIGINT, NULL::TIMESTAMPTZ"


def _visit(
    counts: LiteralString, in_flight: LiteralString, allows: LiteralString, joins: LiteralString
) -> LiteralString:
    return (
        """
            SELECT k.limit_key, k.limit_key <= v_key, """
        + in_flight
        + ", "
        + counts
        + """,
                   ARRAY(
                       SELECT t.id FROM horsies_tasks AS t
                       WHERE t.queue_name = p_queue_name AND t.limit_name = v_limit.name
                         AND t.limit_key = k.limit_key AND t.status = 'PENDING'
                         AND t.sent_at <= now()
                         AND (t.next_retry_at IS NULL OR t.next_retry_at <= now())
                         AND (t.good_until IS NULL OR t.good_until > now())
                         AND (p_task_names IS NULL OR t.task_name = ANY(p_task_names))
                       ORDER BY t.priority, t.sent_at, t.id
                       LIMIT CASE
                           WHEN k.limit_key <= v_key AND v_wrapped THEN 0
                           WHEN (v_wrapped OR k.limit_key <= v_key)
                                AND k.limit_key > v_limit.cursor_key THEN 0
                           ELSE greatest(0, least(v_slots, """
        + allows
        + """))
                       END
                       FOR UPDATE SKIP LOCKED)
            INTO v_next, v_back, v_in_flight, v_newest, v_newest_at, v_first, v_first_at, v_got
            FROM (
                (SELECT t.limit_key FROM horsies_tasks AS t
                 WHERE t.queue_name = p_queue_name AND t.limit_name = v_limit.name
                   AND t.status = 'PENDING' AND t.limit_key > v_key
                 ORDER BY t.limit_key LIMIT 1)
                UNION ALL
                (SELECT t.limit_key FROM horsies_tasks AS t
                 WHERE t.queue_name = p_queue_name AND t.limit_name = v_limit.name
                   AND t.status = 'PENDING'
                 ORDER BY t.limit_key LIMIT 1)
                LIMIT 1) AS k"""
        + joins
        + ";"
    )


# The chosen tasks move to RUNNING, the n-th in the child of the n-th pid.
_STARTED: Final = """
        WITH started AS (
            UPDATE horsies_tasks AS t
            SET status = 'RUNNING',
                claimed = false,
                claim_expires_at = NULL,
                started_at = v_started,
                worker_pid = p_pids[array_position(v_chosen, t.id::text)],
                worker_hostname = p_hostname,
                worker_process_name = 'worker-' || p_pids[array_position(v_chosen, t.id::text)],
                updated_at = now(),
                claimed_at = now(),
                claimed_by_worker_id = p_worker_id,
                attempt = t.attempt + 1
            WHERE t.id = ANY(v_chosen)
            RETURNING t.id, t.task_name, t.queue_name, t.priority, t.args, t.kwargs,
                      t.retry_count, t.max_retries, t.task_options, t.sent_at, t.workflow_id,
                      t.attempt, t.worker_pid
        )"""

# The claimable tasks without a limit, into v_free, as migration 17 takes them: through
# horsies_ready in order, each checked and locked on its
# task row as it comes (as the ordinary claims take them, sql/tasks.py).
_FREE_CANDIDATES_READY: Final = """    v_free := ARRAY(
        SELECT c.id FROM horsies_ready AS r
        CROSS JOIN LATERAL (
            SELECT t.id FROM horsies_tasks AS t
            WHERE t.id = r.id
              AND t.status IN ('PENDING', 'CLAIMED') AND t.limit_name IS NULL
              AND (t.status = 'PENDING' OR (t.claim_expires_at IS NOT NULL
                                            AND t.claim_expires_at < now()))
              AND t.sent_at <= now() AND (t.next_retry_at IS NULL OR t.next_retry_at <= now())
              AND (t.good_until IS NULL OR t.good_until > now())
              AND (p_task_names IS NULL OR t.task_name = ANY(p_task_names))
            FOR UPDATE SKIP LOCKED) AS c
        WHERE r.queue_name = p_queue_name AND r.sent_at <= now()
        ORDER BY r.priority, r.sent_at, r.id
        LIMIT v_slots);
"""


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
# without a limit has rank 1), then age. When a rate-limited key had to wait, one more row with a
# NULL id carries, in wake_in_ms, how long until the first of them may start.
#
# A start of a rate-limited key is logged with the next number of the key's run, at the start's
# time or, should the database clock have stepped back, at the key's newest logged time: the run's
# times never go down, so the starts inside the window are always its tail. Numbers go back only
# when a key's newest starts were pruned, and pruning takes expired starts only: no gap or repeat
# ever opens inside a window.
#
# Each key visited is one statement (next key, counts, candidates), in a variant per kind of limit
# so that none starts a scan its limit has no use for; one source of candidates (one key, or only
# tasks without a limit) is in order already and needs no statement to choose.
#
# enable_seqscan is off inside the function: otherwise the planner picks plans that read a whole
# table on every claim. When almost every claimable row of a queue is under a limit, the candidates
# without a limit look like one row by the column's statistics, while the claim index's
# `limit_name IS NULL` column gets a guess (the planner ignores a partial index's expression
# statistics) that makes the index look dearer: it scanned and sorted the table instead (~0.3 ms
# per claim at 2,000 queued rows, growing with them). enable_bitmapscan is off for the same
# candidates: with the generic plans a worker's exchange asks for, that guess made them a bitmap
# scan of every claimable row without a limit, then a sort, rather than the claim index in order.
# Every statement here has an index made for it.
def _claim_function(free_candidates: LiteralString) -> LiteralString:
    """The function's CREATE OR REPLACE with ``free_candidates`` (into v_free)."""
    return (
        fragments.CLAIM_FUNCTION_SIGNATURE
        + """LANGUAGE plpgsql SET enable_seqscan = off SET enable_bitmapscan = off AS $fn$
#variable_conflict use_column
DECLARE
    v_slots INTEGER := CASE WHEN p_pids IS NULL THEN coalesce(p_claim_limit, 0)
                            ELSE coalesce(cardinality(p_pids), 0) END;
    v_now TIMESTAMPTZ;
    v_started TIMESTAMPTZ;
    -- The candidates, in the order each source gave them, and their source: 0 for the tasks
    -- without a limit, else the key's entry in the run_* arrays.
    v_ids TEXT[] := '{}';
    v_srcs INTEGER[] := '{}';
    -- Per key with candidates: the limit and key, and for a rate its newest start number and
    -- time (NULL otherwise) and how many of its candidates start.
    v_run_names TEXT[] := '{}';
    v_run_keys TEXT[] := '{}';
    v_run_newest BIGINT[] := '{}';
    v_run_newest_at TIMESTAMPTZ[] := '{}';
    v_run_taken INTEGER[];
    v_free TEXT[];
    v_got TEXT[];
    v_ranks INTEGER[];
    v_chosen TEXT[];
    v_id TEXT;
    v_i INTEGER;
    v_limit RECORD;
    v_key TEXT;
    v_next TEXT;
    v_last TEXT;
    v_back BOOLEAN;
    v_wrapped BOOLEAN;
    v_exhausted BOOLEAN;
    v_found INTEGER;
    v_visits INTEGER;
    v_in_flight BIGINT;
    v_newest BIGINT;
    v_newest_at TIMESTAMPTZ;
    v_first BIGINT;
    v_first_at TIMESTAMPTZ;
    v_wake TIMESTAMPTZ;
    v_src INTEGER;
    v_rated BOOLEAN := false;
BEGIN
    IF v_slots = 0 THEN
        RETURN;
    END IF;
    IF cardinality(p_lock_keys) = 1 THEN
        -- A simple expression: no executor run.
        PERFORM pg_advisory_xact_lock(p_lock_keys[1]);
    ELSE
        PERFORM pg_advisory_xact_lock(k) FROM unnest(p_lock_keys) AS k ORDER BY k;
    END IF;
    v_now := clock_timestamp();

"""
        + free_candidates
        + """    v_ids := v_free;
    v_srcs := array_fill(0, ARRAY[cardinality(v_free)]);

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
            -- One statement per key visited, in the variant of the limit's numbers: each
            -- leaves out the counts its limit has no use for.
            IF v_limit.concurrency IS NULL THEN"""
        + _visit(_RATE_COUNTS, "NULL::BIGINT", _RATE_ALLOWS, _RATE_JOINS)
        + """
            ELSIF v_limit.rate IS NULL THEN"""
        + _visit(_NO_RUN, "NULL::BIGINT", _IN_FLIGHT_SUBSELECT_ALLOWS, "")
        + """
            ELSE"""
        + _visit(
            _RATE_COUNTS,
            "f.n",
            _IN_FLIGHT_ALLOWS + ", " + _RATE_ALLOWS,
            _IN_FLIGHT_JOIN + _RATE_JOINS,
        )
        + """
            END IF;
            IF NOT FOUND THEN
                v_exhausted := true;
                EXIT;
            END IF;
            IF v_back THEN
                IF v_wrapped THEN
                    v_exhausted := true;
                    EXIT;
                END IF;
                v_wrapped := true;
            END IF;
            IF v_wrapped AND v_next > v_limit.cursor_key THEN
                v_exhausted := true;
                EXIT;
            END IF;
            v_key := v_next;
            v_visits := v_visits + 1;
            IF v_limit.rate IS NOT NULL AND coalesce(v_newest - v_first + 1, 0) >= v_limit.rate
               AND (v_limit.concurrency IS NULL OR v_in_flight < v_limit.concurrency) THEN
                v_wake := least(v_wake, v_first_at + v_limit.per_ms * interval '1 millisecond');
            END IF;
            IF cardinality(v_got) > 0 THEN
                IF v_limit.rate IS NOT NULL THEN
                    v_newest := coalesce(v_newest, 0);
                    v_rated := true;
                    -- The key's expired starts go when its numbers pass a multiple of 64 (the
                    -- reaper's retention takes those of keys no claim starts any more). Not on
                    -- every claim: each prune would read the dead entries of the ones before it
                    -- again until a VACUUM. Decided on the candidates, a few more than may start.
                    IF (v_newest + cardinality(v_got)) / 64 > v_newest / 64 THEN
                        DELETE FROM horsies_limit_starts AS d
                        WHERE d.limit_name = v_limit.name AND d.limit_key = v_key
                          AND d.started_at <= v_now - v_limit.per_ms * interval '1 millisecond';
                    END IF;
                END IF;
                v_run_names := array_append(v_run_names, v_limit.name);
                v_run_keys := array_append(v_run_keys, v_key);
                v_run_newest := array_append(v_run_newest, v_newest);
                v_run_newest_at := array_append(v_run_newest_at, v_newest_at);
                v_ids := v_ids || v_got;
                v_srcs := v_srcs || array_fill(cardinality(v_run_names), ARRAY[cardinality(v_got)]);
                v_found := v_found + 1;
                v_last := v_key;
            END IF;
            EXIT WHEN v_found >= v_slots OR v_visits >= 1000;
            -- Back at the key the pass started after: every key has been seen.
            IF v_wrapped AND v_key = v_limit.cursor_key THEN
                v_exhausted := true;
                EXIT;
            END IF;
        END LOOP;
        -- Next pass starts after the last key served (or visited, when the visits ran out).
        v_next := CASE WHEN v_exhausted THEN coalesce(v_last, v_limit.cursor_key) ELSE v_key END;
        IF v_next IS DISTINCT FROM v_limit.cursor_key THEN
            UPDATE horsies_limits SET cursor_key = v_next WHERE name = v_limit.name;
        END IF;
    END LOOP;

    -- Read after every count: a start is later than every finish those counts saw committed.
    v_started := clock_timestamp();
    IF coalesce(v_srcs[1] = v_srcs[cardinality(v_srcs)], true) THEN
        -- One source's candidates (one key's, or only tasks without a limit) are in order.
        v_chosen := v_ids[1:v_slots];
    ELSE
        -- By priority, then rank within the key (a key's n-th candidate has rank n; tasks
        -- without a limit have rank 1), then age.
        v_ranks := array_fill(1, ARRAY[cardinality(v_ids)]);
        FOR v_i IN 2..cardinality(v_ids) LOOP
            IF v_srcs[v_i] > 0 AND v_srcs[v_i] = v_srcs[v_i - 1] THEN
                v_ranks[v_i] := v_ranks[v_i - 1] + 1;
            END IF;
        END LOOP;
        v_chosen := ARRAY(
            SELECT c.id
            FROM unnest(v_ids, v_ranks) AS c(id, rank) JOIN horsies_tasks AS t ON t.id = c.id
            ORDER BY t.priority, c.rank, t.sent_at, c.id
            LIMIT v_slots);
    END IF;

    -- Log the starts of rate-limited keys: each takes the next number of its key's run.
    IF v_rated THEN
        v_run_taken := array_fill(0, ARRAY[cardinality(v_run_names)]);
        FOREACH v_id IN ARRAY v_chosen LOOP
            v_src := v_srcs[array_position(v_ids, v_id)];
            IF v_src > 0 THEN
                v_run_taken[v_src] := v_run_taken[v_src] + 1;
            END IF;
        END LOOP;
        INSERT INTO horsies_limit_starts (limit_name, limit_key, started_at, n)
        SELECT r.name, r.key, greatest(v_started, r.newest_at), r.newest + i
        FROM unnest(v_run_names, v_run_keys, v_run_newest, v_run_newest_at, v_run_taken)
             AS r(name, key, newest, newest_at, taken)
        CROSS JOIN generate_series(1, r.taken) AS i
        WHERE r.newest IS NOT NULL;
    END IF;

"""
        + fragments.CLAIM_ONLY_BRANCH
        + """    ELSIF cardinality(v_free) = 0 THEN
        -- Limited tasks are never workflow nodes: only a task without a limit may have one.
        RETURN QUERY"""
        + _STARTED
        + """
        SELECT s.id, s.task_name, s.queue_name, s.priority, s.args, s.kwargs, s.retry_count,
               s.max_retries, s.task_options, s.sent_at, s.workflow_id, s.attempt, s.worker_pid,
               NULL::INTEGER
        FROM started AS s;
    ELSE
        RETURN QUERY"""
        + _STARTED
        + """,
        started_nodes AS (
            UPDATE horsies_workflow_tasks AS wt
            SET status = 'RUNNING'
            FROM started AS s
            WHERE s.workflow_id IS NOT NULL AND wt.task_id = s.id AND wt.status = 'ENQUEUED'
        )
        SELECT s.id, s.task_name, s.queue_name, s.priority, s.args, s.kwargs, s.retry_count,
               s.max_retries, s.task_options, s.sent_at, s.workflow_id, s.attempt, s.worker_pid,
               NULL::INTEGER
        FROM started AS s;
    END IF;
"""
        + fragments.WAKE_ROW_AND_END
    )


# Migration 14. The starts already logged are numbered per key in the order of their times (starts
# of one claim share a time; their order among themselves does not matter). The run's index
# replaces the key's index on (limit_name, limit_key, started_at): both probes of a claim and the
# prune read it. ALTER TABLE waits for the claims that already touched the log and holds back the
# others until the new function is in place; a claim that was already running the old function
# when this commits fails its insert (no number) and its worker tries again: nothing started.
V14_LIMIT_START_NUMBERS: Final = """
ALTER TABLE horsies_limit_starts ADD COLUMN IF NOT EXISTS n BIGINT;
UPDATE horsies_limit_starts AS s SET n = r.n
FROM (SELECT ctid, row_number() OVER (PARTITION BY limit_name, limit_key
                                      ORDER BY started_at) AS n
      FROM horsies_limit_starts) AS r
WHERE s.ctid = r.ctid;
ALTER TABLE horsies_limit_starts ALTER COLUMN n SET NOT NULL;
DROP INDEX IF EXISTS ix_horsies_limit_starts_key;
CREATE INDEX ix_horsies_limit_starts_key
    ON horsies_limit_starts (limit_name, limit_key, started_at, n);
""" + _claim_function(fragments.unlimited_candidates_by_claim_index("v_free"))

# Migration 17. The claim of a queue with limited tasks takes its tasks without a limit from
# horsies_ready as the ordinary claims do (migration 16), so what it reads for them does not grow
# with the task table's history either; the rest of the function is migration 14's.
V17_LIMIT_CLAIM_READY: Final = _claim_function(_FREE_CANDIDATES_READY)
